//! The built-in pack compiles without diagnostics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rules::Compiler;

#[test]
fn the_builtin_pack_compiles_cleanly() {
    let mut compiler = Compiler::new();
    compiler.add_path(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packs")));
    let (set, warnings) =
        compiler.finish().unwrap_or_else(|d| panic!("{}", d.iter().map(|d| d.to_string() + "\n").collect::<String>()));
    assert!(warnings.is_empty(), "{warnings:?}");
    let ids: Vec<String> = set.rules().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert_eq!(rules::builtin().len(), 7);
}
