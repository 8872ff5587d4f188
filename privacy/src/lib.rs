//! Personal data at rest. The guest's contact is sealed at the edge (AES-256-GCM under a data
//! key, bound to its saga), kept and carried sealed, and opened only where it is needed: by
//! the SevenRooms worker to book, and by the API for a caller allowed to see it.
//!
//! - [`keyring`]: the data keys and which one seals; sealing and opening.
//! - [`keys`]: the keys of a process, read from where the deployment keeps them (a key file,
//!   an environment variable, a Secrets Manager secret), read again on a schedule and when a
//!   new key id is met, and rotated.
//! - [`mask`]: the guest's own fields masked out of a downstream's words.

pub mod keyring;
pub mod keys;
pub mod mask;

pub use keyring::{KEY_LEN, Keyring, KeyringError, OpenError};
pub use keys::{KeyError, KeySource, Keys, RELOAD_EVERY};
pub use mask::mask_guest;
