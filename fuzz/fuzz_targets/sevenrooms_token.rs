//! SevenRooms' `POST /auth` answer and the token's expiry text: a token only from a 2xx whose
//! envelope's `data.token` is a string (that string); 400, 401 and 403 refuse the credentials;
//! any expiry text, however odd, is read or ignored, never a panic.
#![no_main]

use como_saga_fuzz::{answer, envelope_data, field, is_http};
use como_workers::clients::fuzzing::{sevenrooms_token, sevenrooms_token_expiry};
use como_workers::clients::token::TokenError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sevenrooms_token_expiry(text);
    }
    let Some(a) = answer(data) else { return };
    let Some(result) = sevenrooms_token(a.raw) else {
        assert!(!is_http(&a.raw));
        return;
    };
    match result {
        Ok(token) => {
            assert!((200..300).contains(&a.raw.status));
            if let Some(data) = envelope_data(a.raw.body) {
                assert_eq!(
                    field(&data, "token", 0).and_then(|v| v.as_str()),
                    Some(&*token.value)
                );
            }
        }
        Err(TokenError::Refused(_)) => assert!(matches!(a.raw.status, 400 | 401 | 403)),
        Err(TokenError::Unavailable { .. }) => {
            assert!(!matches!(a.raw.status, 400 | 401 | 403));
        }
    }
});
