//! The ports: the small set of traits the saga runtime needs from the outside world.
//!
//! A queue (at-least-once, out of order, visibility timeouts, dead letters), a saga store
//! (create if absent, conditional update on a version), an event bus, a secret store and a
//! clock. The embedded (SQLite) and AWS backends implement them; the orchestrator and the
//! workers only ever see these traits. The traits arrive with the runtime (issue 4); this
//! crate must never depend on a concrete backend.
