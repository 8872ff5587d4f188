//! The request log: every API request a simulator received (not its `/_sim/...` admin routes),
//! in arrival order, with what it was answered; and the peak number of arrivals within a sliding
//! window, so that a test can check the rate a downstream saw (say, that a backlog drained after
//! an outage never went past the worker's rate limit).
//!
//! Served at `GET /_sim/requests` and `GET /_sim/requests/rate` (see the crate's README). The log
//! keeps the last [`REQUEST_LOG_CAPACITY`] requests and counts those it dropped to make room.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// How many requests the log keeps; older ones are dropped (and counted) to keep memory bounded.
pub const REQUEST_LOG_CAPACITY: usize = 200_000;

/// The sliding window of `GET /_sim/requests/rate` when the query names none.
pub const DEFAULT_WINDOW_MS: u64 = 1000;

/// One request as the log serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// The request's number since the simulator started, from 0; a gap at the front of a page is
    /// what was dropped.
    pub seq: u64,
    /// When the request arrived, in milliseconds since the Unix epoch, on the real wall clock
    /// (not the simulated clock, which `POST /_sim/clock/advance` moves).
    pub at_ms: u64,
    pub method: String,
    /// The path relative to the simulator's base URL, e.g. `/api/profile/CM100001/summary`.
    pub path: String,
    /// The route it matched, e.g. `/api/profile/{member_no}/summary`; `None` when no route did.
    pub route: Option<String>,
    /// The operation, as fault rules name it (`redeem`, `book`, ...); `None` when the request
    /// never got that far (no such route, a body or path the framework refused).
    pub op: Option<String>,
    /// `write` for the operations that change the ledger (the simulator's `WRITE_OPS`), `read`
    /// for the others; `None` with `op`.
    pub class: Option<String>,
    /// The status the simulator answered with (the first answer: a `late` fault's early 504, not
    /// what the work behind it came to); `None` while the request is still running.
    pub status: Option<u16>,
    /// The kinds of the fault rules that fired for it (`latency`, `outage`, ...), in rule order.
    pub faults: Vec<String>,
}

/// A page of the log, as `GET /_sim/requests` serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestsPage {
    /// The matching requests, oldest first.
    pub requests: Vec<LoggedRequest>,
    /// How many requests the log has dropped since start-up to stay within its capacity.
    pub dropped: u64,
}

/// The peak rate, as `GET /_sim/requests/rate` serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRate {
    /// The most requests that arrived within any `window_ms` (a window `[t, t + window_ms)`
    /// sliding over arrival times).
    pub peak: u64,
    /// Where the first window with `peak` requests starts (an arrival time); `None` when no
    /// request matched.
    pub peak_at_ms: Option<u64>,
    pub window_ms: u64,
    /// How many requests matched the filter.
    pub total: u64,
    /// How many requests the log has dropped since start-up (when not 0, the oldest matching
    /// requests may be missing).
    pub dropped: u64,
}

/// Which requests to look at. Every field narrows; the default takes every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFilter {
    /// Requests that arrived at or after this time (epoch ms).
    pub since_ms: Option<u64>,
    /// Requests that arrived at or before this time (epoch ms).
    pub until_ms: Option<u64>,
    /// Requests whose path (relative to the base URL) starts with this.
    pub path_prefix: Option<String>,
    /// Leave out requests answered with these statuses (a request still running is kept).
    pub exclude_status: Vec<u16>,
}

impl RequestFilter {
    fn matches(&self, e: &Entry) -> bool {
        self.since_ms.is_none_or(|t| e.at_ms >= t)
            && self.until_ms.is_none_or(|t| e.at_ms <= t)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| e.path.starts_with(p))
            && e.status.is_none_or(|s| !self.exclude_status.contains(&s))
    }

    /// Reads the filter (and, with `window`, `window_ms`) from a query string's pairs.
    /// `exclude_status` may repeat and may hold a comma-separated list; an unknown parameter is
    /// refused, so that a misspelt one does not silently widen what a test checks.
    pub(crate) fn from_query(
        pairs: &[(String, String)],
        window: bool,
    ) -> Result<(Self, u64), String> {
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        }
        let mut filter = Self::default();
        let mut window_ms = DEFAULT_WINDOW_MS;
        for (key, value) in pairs {
            match key.as_str() {
                "since_ms" => filter.since_ms = Some(number(key, value)?),
                "until_ms" => filter.until_ms = Some(number(key, value)?),
                "path_prefix" => filter.path_prefix = Some(value.clone()),
                "exclude_status" => {
                    for status in value.split(',').filter(|s| !s.trim().is_empty()) {
                        filter.exclude_status.push(number(key, status)?);
                    }
                }
                "window_ms" if window => {
                    window_ms = number(key, value)?;
                    if window_ms == 0 {
                        return Err("window_ms must be at least 1".to_owned());
                    }
                }
                _ => return Err(format!("unknown query parameter {key:?}")),
            }
        }
        Ok((filter, window_ms))
    }
}

/// The most of `times` within any window `[t, t + window_ms)`, and where the first such window
/// starts. Sorts `times`.
fn peak(times: &mut [u64], window_ms: u64) -> (u64, Option<u64>) {
    times.sort_unstable();
    let mut best = (0, None);
    let mut end = 0;
    // A window holding the most arrivals can always be slid right until it starts at one.
    for (start, &t) in times.iter().enumerate() {
        end = end.max(start);
        // Sorted, so `times[end] >= t`: no overflow near `u64::MAX`.
        while end < times.len() && times[end] - t < window_ms {
            end += 1;
        }
        let n = (end - start) as u64;
        if n > best.0 {
            best = (n, Some(t));
        }
    }
    best
}

struct Entry {
    seq: u64,
    at_ms: u64,
    method: Method,
    path: String,
    route: Option<String>,
    op: Option<&'static str>,
    write: bool,
    status: Option<u16>,
    faults: Vec<&'static str>,
}

impl Entry {
    fn view(&self) -> LoggedRequest {
        LoggedRequest {
            seq: self.seq,
            at_ms: self.at_ms,
            method: self.method.as_str().to_owned(),
            path: self.path.clone(),
            route: self.route.clone(),
            op: self.op.map(str::to_owned),
            class: self
                .op
                .map(|_| if self.write { "write" } else { "read" }.to_owned()),
            status: self.status,
            faults: self.faults.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

struct Ring {
    entries: VecDeque<Entry>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl Ring {
    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get_mut(i)
    }
}

/// The log of one simulator's API requests: a bounded ring in arrival order.
pub(crate) struct RequestLog {
    ring: Mutex<Ring>,
}

/// Now on the wall clock, in milliseconds since the Unix epoch.
///
/// Arrivals are stamped with the real wall clock, not the simulator's [`crate::SimClock`]: that
/// clock jumps forward when a test advances it (to expire holds or tokens), which would stretch
/// or squeeze the spacing between requests, while the rate a downstream sees, and the rate limit
/// a worker keeps, are in real time. Epoch milliseconds (rather than an `Instant`) let a test
/// name a moment from its own clock (`since_ms`, `until_ms`) and read the log from another
/// process.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                capacity: capacity.max(1),
                next_seq: 0,
                dropped: 0,
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a request as it arrives; returns its number, to complete the entry with.
    pub fn arrive(&self, method: &Method, path: &str, route: Option<String>) -> u64 {
        let mut ring = self.ring();
        // Read under the lock, so that arrival order and times agree.
        let at_ms = wall_ms();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.entries.len() >= ring.capacity {
            ring.entries.pop_front();
            ring.dropped += 1;
        }
        ring.entries.push_back(Entry {
            seq,
            at_ms,
            method: method.clone(),
            path: path.to_owned(),
            route,
            op: None,
            write: false,
            status: None,
            faults: Vec::new(),
        });
        seq
    }

    /// Records the operation a request turned out to be and the faults it drew.
    pub fn admitted(&self, seq: u64, op: &'static str, write: bool, faults: &[&'static str]) {
        if let Some(e) = self.ring().get_mut(seq) {
            e.op = Some(op);
            e.write = write;
            e.faults = faults.to_vec();
        }
    }

    /// Records the status a request was answered with; only the first answer counts.
    pub fn answered(&self, seq: u64, status: u16) {
        if let Some(e) = self.ring().get_mut(seq) {
            e.status.get_or_insert(status);
        }
    }

    pub fn page(&self, filter: &RequestFilter) -> RequestsPage {
        let ring = self.ring();
        RequestsPage {
            requests: ring
                .entries
                .iter()
                .filter(|e| filter.matches(e))
                .map(Entry::view)
                .collect(),
            dropped: ring.dropped,
        }
    }

    pub fn rate(&self, filter: &RequestFilter, window_ms: u64) -> RequestRate {
        let (mut times, dropped) = {
            let ring = self.ring();
            let times: Vec<u64> = ring
                .entries
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.at_ms)
                .collect();
            (times, ring.dropped)
        };
        let window_ms = window_ms.max(1);
        let (peak, peak_at_ms) = peak(&mut times, window_ms);
        RequestRate {
            peak,
            peak_at_ms,
            window_ms,
            total: times.len() as u64,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_slides_over_arrivals_instead_of_counting_fixed_buckets() {
        // Fixed one-second buckets would see 4 and 4; a window sliding from 600 sees 8.
        let mut times = vec![600, 700, 800, 900, 1000, 1100, 1200, 1300, 2500];
        assert_eq!(peak(&mut times, 1000), (8, Some(600)));
        // The window is half-open: two arrivals exactly a window apart are not in one window.
        assert_eq!(peak(&mut [0, 1000, 2000], 1000), (1, Some(0)));
        assert_eq!(peak(&mut [0, 999, 2000], 1000), (2, Some(0)));
        // Out of order in, the same answer; the first of equal peaks is the one named.
        assert_eq!(peak(&mut [5000, 10, 20, 5010], 100), (2, Some(10)));
        assert_eq!(peak(&mut [], 1000), (0, None));
        assert_eq!(peak(&mut [u64::MAX, u64::MAX], 1000), (2, Some(u64::MAX)));
    }

    #[test]
    fn the_ring_drops_the_oldest_counts_them_and_still_completes_the_others() {
        let log = RequestLog::new(3);
        let seqs: Vec<u64> = (0..5)
            .map(|i| log.arrive(&Method::GET, &format!("/p/{i}"), None))
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        log.answered(0, 200); // dropped: ignored
        log.admitted(3, "redeem", true, &["outage"]);
        log.answered(3, 503);
        log.answered(3, 200); // a second answer does not replace the first
        let page = log.page(&RequestFilter::default());
        assert_eq!(page.dropped, 2);
        let paths: Vec<&str> = page.requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/p/2", "/p/3", "/p/4"]);
        let third = &page.requests[1];
        assert_eq!(third.op.as_deref(), Some("redeem"));
        assert_eq!(third.class.as_deref(), Some("write"));
        assert_eq!(third.status, Some(503));
        assert_eq!(third.faults, ["outage"]);
        assert_eq!(page.requests[0].status, None);
        assert_eq!(page.requests[0].class, None);

        let excluded = RequestFilter {
            exclude_status: vec![503],
            path_prefix: Some("/p/".to_owned()),
            ..RequestFilter::default()
        };
        let rate = log.rate(&excluded, 1000);
        assert_eq!((rate.total, rate.peak, rate.dropped), (2, 2, 2));
    }

    #[test]
    fn the_query_takes_repeated_and_comma_separated_statuses_and_refuses_unknown_keys() {
        let pairs = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let (filter, window) = RequestFilter::from_query(
            &pairs(&[
                ("since_ms", "10"),
                ("until_ms", "20"),
                ("exclude_status", "503,429"),
                ("exclude_status", "500"),
                ("path_prefix", "/api/"),
                ("window_ms", "250"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            filter,
            RequestFilter {
                since_ms: Some(10),
                until_ms: Some(20),
                path_prefix: Some("/api/".to_owned()),
                exclude_status: vec![503, 429, 500],
            }
        );
        assert_eq!(window, 250);
        assert_eq!(
            RequestFilter::from_query(&[], true).unwrap().1,
            DEFAULT_WINDOW_MS
        );
        assert!(RequestFilter::from_query(&pairs(&[("since", "1")]), true).is_err());
        assert!(RequestFilter::from_query(&pairs(&[("window_ms", "1")]), false).is_err());
        assert!(RequestFilter::from_query(&pairs(&[("window_ms", "0")]), true).is_err());
        assert!(RequestFilter::from_query(&pairs(&[("since_ms", "soon")]), true).is_err());
    }
}
