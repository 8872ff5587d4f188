//! Memberson's authenticate answer: a token only from a 2xx whose body is a JSON string (that
//! string); 401 and 403 refuse the credentials; anything else leaves the token unavailable.
#![no_main]

use std::time::Duration;

use como_saga_fuzz::{answer, is_http};
use como_workers::clients::fuzzing::memberson_token;
use como_workers::clients::token::TokenError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let Some(result) = memberson_token(a.raw, Duration::from_secs(3600)) else {
        assert!(!is_http(&a.raw));
        return;
    };
    assert!(is_http(&a.raw));
    match result {
        Ok(token) => {
            assert!((200..300).contains(&a.raw.status));
            if let Some(value) = como_saga_fuzz::json(a.raw.body) {
                assert_eq!(Some(&*token.value), value.as_str());
            }
            assert!(token.expires_at.is_some());
        }
        Err(TokenError::Refused(_)) => assert!(matches!(a.raw.status, 401 | 403)),
        Err(TokenError::Unavailable { .. }) => {
            assert!(!matches!(a.raw.status, 401 | 403));
        }
    }
});
