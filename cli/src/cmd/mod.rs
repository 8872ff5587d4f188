//! One module per subcommand.

pub mod bench;
pub mod chaos;
pub mod infra;
pub mod orchestrator;
pub mod rotate_tokens;
pub mod schemas;
pub mod simulators;
pub mod submit;
pub mod up;
pub mod worker;
