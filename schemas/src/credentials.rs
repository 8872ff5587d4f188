//! The downstreams' long-lived credentials: one type per downstream, which the workers' clients
//! sign in with and the simulators check. The secret parts are [`SecretString`]s: `Debug`
//! prints them as `[REDACTED]` (so also in logged settings and errors), their memory is wiped
//! on drop, and only the code that sends or compares them reads them, with
//! [`ExposeSecret::expose_secret`].

pub use secrecy::{ExposeSecret, SecretString};

/// Memberson's: the `SvcAuth` header value (`<encoded user>,<encoded password>`, sent and
/// compared as it is) and the user that authenticates for a service token.
#[derive(Clone, Debug)]
pub struct MembersonCredentials {
    pub svc_auth: SecretString,
    pub username: String,
    pub password: SecretString,
}

/// SevenRooms': the API client's id and secret.
#[derive(Clone, Debug)]
pub struct SevenRoomsCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_secret() {
        let m = MembersonCredentials {
            svc_auth: "c3Zj,YXV0aA==".into(),
            username: "como-saga".into(),
            password: "hunter2".into(),
        };
        let s = SevenRoomsCredentials {
            client_id: "como-saga".into(),
            client_secret: "client-secret-value".into(),
        };
        let printed = format!("{m:?} {s:?}");
        for secret in ["c3Zj,YXV0aA==", "hunter2", "client-secret-value"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("como-saga"), "{printed}");
    }
}
