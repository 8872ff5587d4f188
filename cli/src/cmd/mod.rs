//! One module per subcommand.

pub mod api;
pub mod bench;
pub mod bench_reads;
pub mod bench_views;
pub mod chaos;
pub mod health;
pub mod infra;
pub mod keys;
pub mod members;
pub mod operate;
pub mod orchestrator;
pub mod rotate_tokens;
pub mod schemas;
pub mod simulators;
pub mod store_faults;
pub mod submit;
pub mod token;
pub mod up;
pub mod venues;
pub mod worker;
