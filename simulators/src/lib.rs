//! Local simulators of the Memberson CRM and SevenRooms APIs, with seeded fault injection and
//! ledgers readable over HTTP.
