//! Workers, one kind per downstream, and the typed clients they call the downstreams with.
//!
//! Only this crate talks to Memberson and SevenRooms.
//!
//! Layout:
//! - [`clients`]: the Memberson and SevenRooms clients, the outcome classification
//!   ([`clients::Outcome`]), deadlines, retry policy, and token sources;
//! - [`breaker`]: the circuit breaker per downstream;
//! - [`health`]: the probes that close an open breaker, and the health record that worker
//!   processes share (one probe at a time per downstream);
//! - [`rate_limit`]: the rate limit per downstream;
//! - [`handlers`]: what each command does downstream, one file per saga step;
//! - [`runtime`]: the worker loop: receive commands, answer each exactly once, park them
//!   while the downstream is down, reply.

pub mod breaker;
pub mod clients;
pub mod handlers;
pub mod health;
pub mod rate_limit;
pub mod runtime;
