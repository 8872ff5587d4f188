//! Bulk actions: retry or compensate many sagas by filter, in two steps.
//!
//! 1. **Preview** (the default, and changes nothing): the filter's sagas now, each with its
//!    status, step and version, and a `preview_token` that names exactly that list (and the
//!    action, the caller, and an expiry ten minutes on), signed by this process.
//! 2. **Execute** with the token and a reason: the action is applied to exactly the previewed
//!    sagas (never to a re-run of the query, which may have changed), at most `rate_per_second`
//!    a second, all under one action id (so that a repeat changes each saga at most once); each
//!    saga's result is read back from the store afterwards, not assumed. A caller may execute
//!    the list a part at a time (`saga_ids`, each of which must be in the preview), which is how
//!    the command line shows progress.
//!
//! The token is signed with a key this process makes at start-up: a preview is executed by the
//! same API process (behind a load balancer, with stickiness), or previewed again.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use como_orchestrator::operator::{self, OperatorAction};
use como_schemas::{OperatorId, SagaId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// The most sagas one preview lists.
pub const MAX_BULK: usize = 1_000;
/// How long a preview can be executed.
const PREVIEW_LIFETIME: Duration = Duration::from_secs(600);

/// Signs and checks preview tokens.
pub struct PreviewSigner {
    key: hmac::Key,
}

impl PreviewSigner {
    pub fn new() -> Result<PreviewSigner, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|e| format!("cannot make the preview key: {e}"))?;
        Ok(PreviewSigner { key })
    }

    fn sign(&self, preview: &Preview) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(preview).unwrap_or_default());
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn check(&self, token: &str) -> Result<Preview, ApiError> {
        let bad = || {
            ApiError::invalid(
                "preview_token",
                "not a preview this API process made (or altered): preview again",
            )
        };
        let (body, tag) = token.split_once('.').ok_or_else(bad)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| bad())?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

/// What a preview token names.
#[derive(Serialize, Deserialize)]
struct Preview {
    action: BulkAction,
    caller: String,
    expires_ms: i64,
    sagas: Vec<SagaId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    RetryNow,
    ForceCompensation,
}

impl BulkAction {
    fn operator_action(self) -> OperatorAction {
        match self {
            BulkAction::RetryNow => OperatorAction::RetryNow,
            BulkAction::ForceCompensation => OperatorAction::ForceCompensation,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    action: BulkAction,
    /// Only sagas in this status.
    status: Option<String>,
    /// Only sagas at this step.
    step: Option<String>,
    /// Only sagas unchanged for at least this long (`10m`).
    older_than: Option<String>,
    /// Only this member's sagas.
    member: Option<String>,
    /// Only sagas at this venue.
    venue: Option<String>,
    /// Only sagas started at or after this time (RFC 3339).
    started_from: Option<String>,
    /// Only sagas started before this time (RFC 3339).
    started_before: Option<String>,
    /// Only live sagas whose current command goes to this downstream (`memberson`,
    /// `sevenrooms`).
    downstream: Option<String>,
    /// Only live sagas retrying with errors.
    retrying: Option<bool>,
    /// At most this many (1 to 1000; 1000 when not given).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewItem {
    saga_id: String,
    status: String,
    step: Option<String>,
    updated_at: String,
    version: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewResult {
    action: BulkAction,
    /// Exactly the sagas an execute with this token acts on.
    sagas: Vec<PreviewItem>,
    /// Give it back to execute; valid until `expires_at`.
    preview_token: String,
    expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    preview_token: String,
    /// Why (kept in each saga's history with who acted); required.
    reason: String,
    /// Only these of the previewed sagas (to act a part at a time); all of them when not given.
    saga_ids: Option<Vec<String>>,
    /// At most this many sagas a second (1 to 100; 20 when not given).
    rate_per_second: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ExecuteItem {
    saga_id: String,
    /// `applied`, `repeated` (this bulk had acted on it already), `refused` (the engine
    /// refused the action now), `not_found` or `failed` (a store error: repeat the execute).
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The saga's status read back from the store after the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ExecuteResult {
    action: BulkAction,
    /// The bulk's action id: every saga of the preview gets the same one.
    action_id: String,
    results: Vec<ExecuteItem>,
}

pub async fn preview(
    state: &ApiState,
    caller: &Caller,
    request: PreviewRequest,
) -> Result<PreviewResult, ApiError> {
    let limit = match request.limit.unwrap_or(MAX_BULK) {
        n @ 1..=MAX_BULK => n,
        n => {
            return Err(ApiError::invalid(
                "limit",
                &format!("{n} is outside 1 to {MAX_BULK}"),
            ));
        }
    };
    let mut query = crate::Filters {
        status: request.status.as_deref(),
        step: request.step.as_deref(),
        older_than: request.older_than.as_deref(),
        member: request.member.as_deref(),
        venue: request.venue.as_deref(),
        started_from: request.started_from.as_deref(),
        started_before: request.started_before.as_deref(),
        downstream: request.downstream.as_deref(),
        retrying: request.retrying,
    }
    .query(None, limit.min(500))?;
    let mut found = Vec::new();
    loop {
        let page = state.reader.query(&query).await.map_err(ApiError::store)?;
        found.extend(page.items);
        match page.next_cursor {
            Some(next) if found.len() < limit => query.cursor = Some(next),
            _ => break,
        }
    }
    found.truncate(limit);
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::from_std(PREVIEW_LIFETIME).unwrap_or_default();
    let preview = Preview {
        action: request.action,
        caller: caller.id.clone(),
        expires_ms: expires.timestamp_millis(),
        sagas: found.iter().map(|s| s.saga_id).collect(),
    };
    Ok(PreviewResult {
        action: request.action,
        preview_token: state.previews.sign(&preview),
        expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        sagas: found
            .into_iter()
            .map(|s| PreviewItem {
                saga_id: s.saga_id.to_string(),
                status: s.status.kind().as_str().to_owned(),
                step: s.step.map(|n| n.to_string()),
                updated_at: s.updated_at.to_string(),
                version: s.version,
            })
            .collect(),
    })
}

pub async fn execute(
    state: &ApiState,
    caller: &Caller,
    request: ExecuteRequest,
) -> Result<ExecuteResult, ApiError> {
    let preview = state.previews.check(&request.preview_token)?;
    if preview.caller != caller.id {
        return Err(ApiError::forbidden(
            "this preview was made by someone else: preview it yourself",
        ));
    }
    if chrono::Utc::now().timestamp_millis() > preview.expires_ms {
        return Err(ApiError::invalid(
            "preview_token",
            "the preview has expired: preview again (the sagas may have changed)",
        ));
    }
    if request.reason.trim().is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "say why you act (it is kept in each saga's history)",
        ));
    }
    let rate = match request.rate_per_second.unwrap_or(20) {
        n @ 1..=100 => n,
        n => {
            return Err(ApiError::invalid(
                "rate_per_second",
                &format!("{n} is outside 1 to 100"),
            ));
        }
    };
    let previewed: BTreeSet<SagaId> = preview.sagas.iter().copied().collect();
    let targets: Vec<SagaId> = match &request.saga_ids {
        None => preview.sagas.clone(),
        Some(ids) => {
            let mut targets = Vec::with_capacity(ids.len());
            for id in ids {
                let id = SagaId::parse(id).map_err(|e| ApiError::invalid("saga_ids", &e))?;
                if !previewed.contains(&id) {
                    return Err(ApiError::invalid(
                        "saga_ids",
                        &format!("saga {id} is not in the preview"),
                    ));
                }
                targets.push(id);
            }
            targets
        }
    };
    let who = OperatorId::parse(&caller.id)
        .map_err(|e| ApiError::forbidden(format!("the token's user cannot act: {e}")))?;
    // One action id per preview: executing it again (or a part again) changes nothing twice.
    let tag = request
        .preview_token
        .rsplit_once('.')
        .map_or("", |(_, tag)| tag);
    let action_id = format!("bulk-{}", &tag[..22.min(tag.len())]);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut results = Vec::with_capacity(targets.len());
    for saga in targets {
        ticker.tick().await;
        let done = operator::act(
            &state.ports,
            saga,
            preview.action.operator_action(),
            &who,
            &request.reason,
            Some(&action_id),
        )
        .await;
        let (result, message) = match &done {
            Ok(o) if o.repeated => ("repeated", None),
            Ok(_) => ("applied", None),
            Err(operator::OperatorError::Refused { .. }) => {
                ("refused", done.as_ref().err().map(ToString::to_string))
            }
            Err(operator::OperatorError::NotFound(_)) => ("not_found", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let status_after = match state.reader.get(saga).await {
            Ok(Some(s)) => Some(s.value.status.kind().as_str().to_owned()),
            _ => None,
        };
        results.push(ExecuteItem {
            saga_id: saga.to_string(),
            result: result.to_owned(),
            message,
            status_after,
        });
    }
    tracing::info!(
        operator = %caller.id,
        reason = request.reason.trim(),
        action = ?preview.action,
        %action_id,
        sagas = results.len(),
        "bulk action executed"
    );
    Ok(ExecuteResult {
        action: preview.action,
        action_id,
        results,
    })
}
