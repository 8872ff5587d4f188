//! Workers, one kind per downstream, and the typed clients they call the downstreams with.
//!
//! Only this crate talks to Memberson and SevenRooms.
