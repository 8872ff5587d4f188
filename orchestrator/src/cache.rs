//! The sagas this orchestrator wrote last, so that the next input for a saga skips the read
//! before its write: on the happy path every transition but the first would otherwise read
//! back what this process has just written (a consistent read on DynamoDB, a row and a JSON
//! parse on SQLite).
//!
//! A remembered state may be stale (another orchestrator wrote the saga since) or not written
//! yet (it is remembered as its write starts), which is safe by construction:
//! - a write computed from it carries the remembered version, so the store's conditional
//!   write refuses it (`Conflict`), the entry is forgotten, and `advance` reads and retries;
//! - an input that teaches nothing, or that the engine refuses, against a state read through
//!   the cache is judged again against the store's own ([`RememberingStore::read_store`])
//!   before it is acknowledged or dead-lettered: whether the state read was a remembered one
//!   cannot be told afterwards, since another task may have dropped the entry meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use como_engine::{HistoryEntry, SagaState, StatusKind};
use como_ports::{
    CreateOutcome, Effects, PortResult, SagaPage, SagaQuery, SagaReader, SagaStore, SagaSummary,
    SagaWriter, UpdateOutcome, Versioned,
};
use como_schemas::{SagaId, Timestamp};

/// At most this many sagas are remembered; finished ones are dropped at once.
const CAPACITY: usize = 50_000;

pub struct RememberingStore {
    inner: Arc<dyn SagaStore>,
    recent: Mutex<HashMap<SagaId, Versioned<SagaState>>>,
}

impl RememberingStore {
    pub fn new(inner: Arc<dyn SagaStore>) -> Self {
        Self {
            inner,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Saga `id` as the store has it, whatever is remembered (which is dropped: the store's
    /// state is what the next input is judged against).
    pub async fn read_store(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>> {
        self.recent().remove(&id);
        self.inner.get(id).await
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<SagaId, Versioned<SagaState>>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, state: &SagaState, version: u64) {
        let mut recent = self.recent();
        if state.status.kind().is_terminal() {
            recent.remove(&state.saga_id);
            return;
        }
        if recent.len() >= CAPACITY {
            recent.clear();
        }
        recent.insert(
            state.saga_id,
            Versioned {
                version,
                value: state.clone(),
            },
        );
    }
}

#[async_trait]
impl SagaReader for RememberingStore {
    async fn get(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>> {
        if let Some(known) = self.recent().get(&id) {
            return Ok(Some(known.clone()));
        }
        self.inner.get(id).await
    }

    async fn query(&self, query: &SagaQuery) -> PortResult<SagaPage> {
        self.inner.query(query).await
    }

    async fn history(&self, id: SagaId) -> PortResult<Vec<HistoryEntry>> {
        self.inner.history(id).await
    }

    async fn counts(&self) -> PortResult<Vec<(StatusKind, u64)>> {
        self.inner.counts().await
    }

    async fn stuck(&self, filter: &SagaQuery, limit: usize) -> PortResult<Vec<SagaSummary>> {
        self.inner.stuck(filter, limit).await
    }
}

#[async_trait]
impl SagaWriter for RememberingStore {
    // Remembered before the write, not after: the store sends the write's commands before it
    // returns, and their replies may come back first. A state remembered but not written is
    // harmless: a write from it expects its version, which the store then refuses.
    async fn create(&self, state: &SagaState, effects: Effects) -> PortResult<CreateOutcome> {
        self.remember(state, 1);
        let out = self.inner.create(state, effects).await;
        if !matches!(out, Ok(CreateOutcome::Created { version: 1 })) {
            self.recent().remove(&state.saga_id);
        }
        out
    }

    async fn update(
        &self,
        state: &SagaState,
        expected_version: u64,
        effects: Effects,
    ) -> PortResult<UpdateOutcome> {
        let next = expected_version + 1;
        self.remember(state, next);
        let out = self.inner.update(state, expected_version, effects).await;
        // Lost a race, or do not know whether it was written: read next time.
        if !matches!(out, Ok(UpdateOutcome::Updated { version }) if version == next) {
            self.recent().remove(&state.saga_id);
        }
        out
    }

    async fn flush(&self, id: SagaId) -> PortResult<()> {
        self.inner.flush(id).await
    }

    async fn compact(&self) -> PortResult<bool> {
        self.inner.compact().await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> PortResult<Vec<SagaId>> {
        self.inner.due(now, limit).await
    }
}
