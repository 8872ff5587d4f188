//! End-to-end test helpers: start the whole stack in-process on free loopback ports and hand
//! back the simulators' ledgers (see `tests/tests/`). The full-stack helper arrives with the
//! runtime (issue 4).
