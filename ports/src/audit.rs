//! The audit list: every operator action (one saga's, a bulk action's on each saga, a redrive
//! of dead letters) with who asked, why, when, and how it ended, in a list of its own that can
//! be read by actor, action and period.
//!
//! A saga's history records the actions on that saga in the transaction that applies them; the
//! audit list also records what changes no saga (a redrive, an action refused or failed) and
//! answers "what did this person do last night" without reading every saga.
//!
//! An action is recorded twice under one id: as `pending` before it is carried out, and with
//! its outcome after. A process that dies in between leaves the `pending` entry, so an action
//! is never carried out unrecorded (the saga's history says whether it took effect).
//!
//! Contract for every backend:
//! - `record` writes the entry under its id, replacing an entry with that id (keeping its `at`:
//!   an entry is listed at the time it was asked for, not when it finished).
//! - `list` returns entries newest first (by `at`, then by the order they were first written),
//!   filtered by `actor`, `action` and `from <= at < until`, in pages.

use async_trait::async_trait;
use como_schemas::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::PortResult;

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unique per request (a repeated action id is a new request, recorded again).
    pub id: String,
    /// When it was asked for.
    pub at: Timestamp,
    /// Who asked: the token's user.
    pub actor: String,
    /// `retry_now`, `force_compensation`, `cancel`, `resolve_confirmed`, `resolve_compensated`
    /// or `redrive`.
    pub action: String,
    /// What it acted on: `saga/<id>` or `dead-letters/<queue>`.
    pub target: String,
    pub reason: String,
    /// The action's id (one per bulk action, shared by its sagas).
    pub action_id: String,
    pub outcome: AuditOutcome,
    /// What the outcome says: the status after, the refusal, the error, the count redriven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Asked for; not known to have finished (its process may have died).
    Pending,
    /// Carried out.
    Applied,
    /// The same action id had been applied before: nothing changed this time.
    Repeated,
    /// Refused (the engine would not, the saga does not exist); nothing changed.
    Refused,
    /// It failed; it may or may not have taken effect (see the detail).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Pending => "pending",
            AuditOutcome::Applied => "applied",
            AuditOutcome::Repeated => "repeated",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// At or after.
    pub from: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// From a previous page.
    pub cursor: Option<String>,
    /// At most this many (a backend caps it; 0 means its default).
    pub limit: usize,
}

/// One page of the audit list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Write `entry` under its id, replacing what was there (but not its `at`).
    async fn record(&self, entry: &AuditEntry) -> PortResult<()>;

    /// Entries matching `query`, newest first.
    async fn list(&self, query: &AuditQuery) -> PortResult<AuditPage>;
}
