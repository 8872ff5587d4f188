//! Whether this process can write to its store, as the store itself finds out (a full disk, a
//! write lock another process holds past the busy timeout, a read-only or removed file, a
//! throttled or unreachable AWS), for the three who must hear of it:
//!
//! - **the operator**, in the log: one line at warn when writes start failing, with the cause,
//!   then at most one line a [`WARN_EVERY`] while they go on failing (with how many failed
//!   meanwhile), not one per message; one line at info when writes go through again;
//! - **readiness**: a process whose writes failed within the last [`RECENT`] and have not gone
//!   through since is not ready (`/readyz` answers 503 with the cause), so that a load balancer
//!   sends new requests elsewhere; it is ready again when a write goes through, or when no
//!   write has failed for [`RECENT`] (an idle process has nothing to prove it with);
//! - **the edge**: a booking that cannot be written is refused with the cause (503), never
//!   accepted half-way.
//!
//! Backends report every write's outcome ([`write_failed`], [`write_succeeded`]); the roles'
//! loops report what they could not do through [`not_done`], which says it at warn only when
//! the cause is not a store that is known to be failing.
//!
//! One state per process: what matters is whether this process's writes go through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::PortError;

/// At most one warning this often while writes keep failing.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// How long a failed write keeps this process not ready when no write goes through after it.
pub const RECENT: Duration = Duration::from_secs(10);

/// A write that goes through this soon after a failure does not yet end the episode: on a
/// nearly full disk some writes fit and most do not, and the log should not flap.
const SETTLE: Duration = Duration::from_secs(1);

struct Failing {
    since: Instant,
    cause: String,
    /// Failed writes since the last line said so.
    unsaid: u64,
    total: u64,
    warned_at: Instant,
    last: Instant,
}

static STATE: Mutex<Option<Failing>> = Mutex::new(None);

fn state() -> std::sync::MutexGuard<'static, Option<Failing>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A write to the store failed for `cause` (the store's own words, naming the file or the
/// service). Says so at warn the first time and then once a [`WARN_EVERY`].
pub fn write_failed(cause: &str) {
    let mut s = state();
    match failed_at(&mut s, cause, Instant::now()) {
        Some(Said::Started) => tracing::warn!(
            cause,
            "the store refuses writes; every role keeps running and retries, and this process reports not ready until a write goes through"
        ),
        Some(Said::Still {
            failing_for,
            failed_writes,
        }) => tracing::warn!(
            cause,
            failing_for_s = failing_for.as_secs(),
            failed_writes,
            "the store still refuses writes"
        ),
        None => {}
    }
}

/// What a failed write makes this process say.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    /// The first failure of an episode.
    Started,
    /// A period has passed since the last line: `failed_writes` more failed meanwhile.
    Still {
        failing_for: Duration,
        failed_writes: u64,
    },
}

/// Records a write failed at `now` for `cause` in `state`; what to say, if anything. The
/// cause kept is the latest, but a new cause is no reason for a line of its own: under a
/// throttled or failing AWS nearly every error's text differs (it names a saga, a version, a
/// count of entries), and a line per message is what this module is for avoiding. A failure
/// more than [`RECENT`] after the last one starts a new episode: the old one ended unseen (a
/// process that wrote nothing since).
fn failed_at(state: &mut Option<Failing>, cause: &str, now: Instant) -> Option<Said> {
    if state
        .as_ref()
        .is_some_and(|f| now.saturating_duration_since(f.last) >= RECENT)
    {
        *state = None;
    }
    match state.as_mut() {
        None => {
            *state = Some(Failing {
                since: now,
                cause: cause.to_owned(),
                unsaid: 0,
                total: 1,
                warned_at: now,
                last: now,
            });
            Some(Said::Started)
        }
        Some(f) => {
            f.unsaid += 1;
            f.total += 1;
            f.last = now;
            f.cause = cause.to_owned();
            if now.saturating_duration_since(f.warned_at) < WARN_EVERY {
                return None;
            }
            let said = Said::Still {
                failing_for: now.saturating_duration_since(f.since),
                failed_writes: f.unsaid,
            };
            f.unsaid = 0;
            f.warned_at = now;
            Some(said)
        }
    }
}

/// A write went through: if writes were failing, say once that they no longer are.
pub fn write_succeeded() {
    let mut s = state();
    if s.as_ref().is_some_and(|f| f.last.elapsed() >= SETTLE)
        && let Some(f) = s.take()
    {
        tracing::info!(
            after_s = f.since.elapsed().as_secs(),
            failed_writes = f.total,
            last_cause = %f.cause,
            "the store takes writes again"
        );
    }
}

/// Since when, and why, this process's writes fail; `None` while they go through (or none
/// has failed for [`RECENT`]).
pub fn failing() -> Option<(Duration, String)> {
    state()
        .as_ref()
        .filter(|f| f.last.elapsed() < RECENT)
        .map(|f| (f.since.elapsed(), f.cause.clone()))
}

/// Why this process is not ready, while its writes fail.
pub fn not_ready() -> Option<String> {
    failing().map(|(for_, cause)| {
        format!(
            "the store has refused writes for {} s: {cause}",
            for_.as_secs()
        )
    })
}

/// A role could not carry out `what` (a message, which comes again; a sweep, which runs
/// again) because of `e`: said at warn, unless the store is known to be failing, which
/// [`write_failed`] says once a period.
pub fn not_done(what: &str, e: &dyn std::fmt::Display, port: Option<&PortError>) {
    if matches!(port, Some(PortError::Unavailable(_))) && failing().is_some() {
        tracing::debug!(error = %e, "{what} failed; it is tried again");
    } else {
        tracing::warn!(error = %e, "{what} failed; it is tried again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_period_whatever_the_causes_and_a_new_episode_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut s = None;
        assert_eq!(
            failed_at(&mut s, "throttled: saga a", t0),
            Some(Said::Started)
        );
        // Every cause differs (a saga, a version): still no line before the period is over.
        for i in 1..300u64 {
            let at = t0 + Duration::from_millis(i * 100);
            assert_eq!(failed_at(&mut s, &format!("throttled: saga {i}"), at), None);
        }
        assert_eq!(s.as_ref().unwrap().cause, "throttled: saga 299");
        assert_eq!(
            failed_at(&mut s, "throttled: saga z", t0 + WARN_EVERY),
            Some(Said::Still {
                failing_for: WARN_EVERY,
                failed_writes: 300
            })
        );
        // Quiet for longer than RECENT (an idle process): the next failure is a new episode,
        // not one that has lasted all along.
        let later = t0 + WARN_EVERY + RECENT;
        assert_eq!(failed_at(&mut s, "disk full", later), Some(Said::Started));
        assert_eq!(s.as_ref().unwrap().since, later);
        assert_eq!(s.as_ref().unwrap().total, 1);
    }

    #[test]
    fn failing_then_recovered() {
        write_succeeded();
        assert!(failing().is_none());
        write_failed("database or disk is full");
        write_failed("database or disk is full");
        let (_, cause) = failing().unwrap();
        assert_eq!(cause, "database or disk is full");
        assert!(not_ready().unwrap().contains("database or disk is full"));
        // Too soon after the failure: still failing (a nearly full disk fits some writes).
        write_succeeded();
        assert!(failing().is_some());
        std::thread::sleep(SETTLE);
        write_succeeded();
        assert!(failing().is_none() && not_ready().is_none());
    }
}
