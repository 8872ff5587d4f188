//! One module per subcommand.

pub mod schemas;
pub mod simulators;
