//! A downstream's words may quote the request back ("invalid guest Mei Ling Tan"): what leaves
//! the worker that holds the contact (a reply's reason, and so a history entry, an event on the
//! bus, a dead letter's reason, a log line) has the guest's own fields masked first.

use como_schemas::GuestContact;

/// `text` with the guest's name, phone (with and without its `+`) and e-mail replaced by
/// `[guest]`.
pub fn mask_guest(text: &str, guest: &GuestContact) -> String {
    let mut text = text.to_owned();
    let phone = guest.phone.as_str();
    let personal = [
        Some(guest.first_name.as_str()),
        Some(guest.last_name.as_str()),
        Some(phone),
        Some(phone.trim_start_matches('+')),
        guest.email.as_ref().map(|e| e.as_str()),
    ];
    for value in personal.into_iter().flatten() {
        if value.chars().count() >= 2 {
            text = text.replace(value, "[guest]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::mask_guest;

    #[test]
    fn a_downstream_message_quoting_the_guest_is_masked() {
        let request = como_schemas::examples::booking_request(
            "r-1",
            chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        );
        let g = request.guest.contact().unwrap();
        let echoed = format!(
            "invalid guest {} {} ({}, {}) phone {}",
            g.first_name.as_str(),
            g.last_name.as_str(),
            g.phone.as_str().trim_start_matches('+'),
            g.email.as_ref().map_or("", |e| e.as_str()),
            g.phone.as_str(),
        );
        let masked = mask_guest(&echoed, g);
        for value in [
            g.first_name.as_str(),
            g.last_name.as_str(),
            g.phone.as_str(),
        ] {
            assert!(!masked.contains(value), "{masked}");
        }
        assert!(
            !masked.contains(g.phone.as_str().trim_start_matches('+')),
            "{masked}"
        );
        assert!(
            masked.starts_with("invalid guest [guest] [guest]"),
            "{masked}"
        );
    }
}
