//! One module per subcommand.

pub mod license;
pub mod parse;
pub mod rules;
