//! Points in time as messages carry them: milliseconds since the Unix epoch in memory (cheap
//! to compare, what the engine computes with), RFC 3339 in UTC on the wire (what people read).

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, utoipa::ToSchema)]
#[schema(
    value_type = String,
    format = DateTime,
    description = "A point in time, RFC 3339 in UTC with milliseconds.",
    example = "2026-09-21T14:13:20.000Z"
)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest point RFC 3339 can write: 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000);
    /// The latest point RFC 3339 can write: 9999-12-31T23:59:59.999Z. Messages carry nothing
    /// later and arithmetic stops here, so that every timestamp this type writes reads back (a
    /// `Retry-After` of `u64::MAX` ms once made a saga state that could not be read again).
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(&self) -> i64 {
        self.0
    }

    /// This point plus `ms` milliseconds, saturating at [`Timestamp::MAX`] (never wrapping,
    /// never going back).
    pub const fn plus_ms(&self, ms: u64) -> Self {
        let ms = if ms > i64::MAX as u64 {
            i64::MAX
        } else {
            ms as i64
        };
        let sum = self.0.saturating_add(ms);
        if sum > Self::MAX.0 && self.0 <= Self::MAX.0 {
            Self::MAX
        } else {
            Self(sum)
        }
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(&self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    pub fn to_datetime(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_millis())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Timestamp {
    /// An RFC 3339 date and time, in the years 0000 to 9999 in UTC; the error says why not.
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        let at = DateTime::parse_from_rfc3339(s)
            .map(|dt| Self::from_datetime(dt.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is not an RFC 3339 date and time"))?;
        // An offset can carry a time written in the years 0000 to 9999 just outside them in
        // UTC, where it could be read but never written back.
        if !(Self::MIN..=Self::MAX).contains(&at) {
            return Err(format!("{s:?} is outside the years 0000 to 9999 in UTC"));
        }
        Ok(at)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "A point in time, RFC 3339.",
        })
    }
}

/// Reads a duration such as `500ms`, `30s`, `10m`, `2h` or `1d` (a bare number is seconds), as
/// settings, the command line and the API take them. Too large a number saturates.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m or 2h"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Writes a duration as [`parse_duration`] reads it, in its largest whole unit: `12h`, `90s`,
/// `1500ms`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Timestamp, serde_json::Error> {
        serde_json::from_str(&format!("{text:?}"))
    }

    fn round_trip(t: Timestamp) -> Timestamp {
        serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap()
    }

    /// Caught by the state round trip of the `worker_reply` fuzz target: a reply "downstream
    /// unavailable, retry after u64::MAX ms" scheduled the next attempt at `i64::MAX` ms, which
    /// serialised as year -262143 and made the saga's stored state unreadable.
    #[test]
    fn far_future_arithmetic_still_writes_a_readable_time() {
        let now = Timestamp::from_millis(1_790_000_000_000);
        assert_eq!(now.plus_ms(u64::MAX), Timestamp::MAX);
        assert_eq!(now.plus_ms(i64::MAX as u64 + 1), Timestamp::MAX);
        assert_eq!(round_trip(now.plus_ms(u64::MAX)), Timestamp::MAX);
        assert_eq!(Timestamp::MAX.plus_ms(1), Timestamp::MAX);
        assert_eq!(
            now.plus_ms(1_500),
            Timestamp::from_millis(1_790_000_001_500)
        );
        assert_eq!(round_trip(Timestamp::MIN), Timestamp::MIN);
    }

    /// The same round trip for messages: a time that an offset moves out of the years 0000 to
    /// 9999 in UTC was accepted but written back as text no one reads.
    #[test]
    fn an_offset_out_of_the_writable_years_is_refused() {
        for text in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"] {
            let err = read(text).unwrap_err().to_string();
            assert!(
                err.contains("outside the years 0000 to 9999"),
                "{text}: {err}"
            );
        }
        assert_eq!(read("0000-01-01T00:00:00Z").unwrap(), Timestamp::MIN);
        assert_eq!(read("9999-12-31T23:59:59.999Z").unwrap(), Timestamp::MAX);
        assert_eq!(
            read("2026-11-24T10:00:00+08:00").unwrap(),
            round_trip(read("2026-11-24T02:00:00Z").unwrap())
        );
    }

    #[test]
    fn durations_read_as_settings_and_the_api_take_them() {
        use std::time::Duration;
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("2h", Duration::from_secs(7_200)),
            ("1d", Duration::from_secs(86_400)),
        ] {
            assert_eq!(super::parse_duration(text), Ok(want), "{text}");
        }
        assert!(
            super::parse_duration("18446744073709551615d").is_ok(),
            "saturates"
        );
        for bad in ["", "soon", "10 minutes", "-5s", "5w"] {
            assert!(super::parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_written_duration_reads_back_as_itself() {
        for (d, text) in [
            (std::time::Duration::from_secs(12 * 3600), "12h"),
            (std::time::Duration::from_secs(90), "90s"),
            (std::time::Duration::from_secs(120), "2m"),
            (std::time::Duration::from_millis(1500), "1500ms"),
            (std::time::Duration::ZERO, "0ms"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
