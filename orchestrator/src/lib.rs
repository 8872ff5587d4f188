//! The orchestrator runtime: receives booking requests, worker replies and timers through the
//! ports, runs the pure saga engine (`como-engine`), then persists the new state and emits its
//! commands and events together. It never calls a downstream API itself.
//!
//! Arrives with the runtime (issue 4).
