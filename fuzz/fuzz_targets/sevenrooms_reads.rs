//! SevenRooms' read answers as the client reads them: venues, availability, one reservation, a
//! search page (the reconciliation of a booking). The shape is named on the input's first line
//! (`200 search`); without one, the input's length picks it. A success comes only from a 2xx
//! whose envelope has `data`; a search finds exactly the reservations the page lists.
#![no_main]

use como_saga_fuzz::{answer, check_common, envelope_data, field, is_2xx, success};
use como_workers::clients::fuzzing::{
    RawAnswer, Read, sevenrooms_availability, sevenrooms_reservation, sevenrooms_search,
    sevenrooms_venues,
};
use libfuzzer_sys::fuzz_target;

fn check<T: std::fmt::Debug>(raw: &RawAnswer<'_>, read: &Read<T>) -> Option<serde_json::Value> {
    check_common(raw, read, |_| false, false);
    if is_2xx(raw) && success(read).is_none() {
        assert!(
            matches!(
                read,
                Read::Transient {
                    maybe_applied: true,
                    ..
                }
            ),
            "{read:?}"
        );
    }
    success(read)?;
    let data = envelope_data(raw.body)?;
    assert!(!data.is_null());
    Some(data)
}

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let shape = match a.shape {
        "" => ["venues", "availability", "reservation", "search"][data.len() % 4],
        s => s,
    };
    match shape {
        "venues" => {
            check(&a.raw, &sevenrooms_venues(a.raw));
        }
        "availability" => {
            let read = sevenrooms_availability(a.raw);
            if let Some(data) = check(&a.raw, &read) {
                let shifts = success(&read).unwrap();
                let listed = field(&data, "availability", 0)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len);
                assert_eq!(shifts.len(), listed);
                // What hold_slot looks for in a shift never panics.
                for shift in shifts {
                    for t in &shift.times {
                        let _ = t.is_bookable();
                        let _ = t.time.get(..5);
                    }
                }
            }
        }
        "reservation" => {
            let read = sevenrooms_reservation(a.raw);
            if let Some(data) = check(&a.raw, &read) {
                let r = success(&read).unwrap();
                assert_eq!(
                    field(&data, "id", 0).and_then(|v| v.as_str()),
                    Some(r.id.as_str())
                );
                let _ = r.is_cancelled();
            }
        }
        "search" => {
            let read = sevenrooms_search(a.raw);
            if let Some(data) = check(&a.raw, &read) {
                let page = success(&read).unwrap();
                let listed = field(&data, "results", 0)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len);
                assert_eq!(page.results.len(), listed);
                for (r, v) in page.results.iter().zip(
                    field(&data, "results", 0)
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten(),
                ) {
                    assert_eq!(
                        field(v, "id", 0).and_then(|v| v.as_str()),
                        Some(r.id.as_str())
                    );
                    assert_eq!(
                        field(v, "external_id", 2).and_then(|v| v.as_str()),
                        r.external_id.as_deref()
                    );
                }
            }
        }
        _ => {}
    }
});
