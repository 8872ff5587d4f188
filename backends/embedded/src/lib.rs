//! The embedded backend: every port on one SQLite file in WAL mode, so that a saga's state
//! change and the commands and events it emits commit in one transaction.
//!
//! Arrives with the runtime (issue 4). Must not be depended on by the engine or the workers'
//! downstream clients.
