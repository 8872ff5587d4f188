//! One module per subcommand.

pub mod bench;
pub mod chaos;
pub mod orchestrator;
pub mod schemas;
pub mod simulators;
pub mod submit;
pub mod up;
pub mod worker;
