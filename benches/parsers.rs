//! Criterion benchmarks of the parsers (filled in with the benchmark suite).
fn main() {}
