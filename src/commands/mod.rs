//! One module per subcommand.

pub mod admin;
pub mod bench;
pub mod bench_cluster;
pub mod bench_notify;
pub mod bench_report;
pub mod bench_search;
pub mod bench_sigma;
pub mod cluster;
pub mod cluster_init;
pub mod connector;
pub mod license;
pub mod parse;
pub mod rules;
pub mod run;
pub mod search;
pub mod send;
pub mod supervisor;
pub mod tls;
