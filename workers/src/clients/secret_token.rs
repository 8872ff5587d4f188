//! A [`TokenSource`] backed by the secret store: the Memberson service token that `como-saga
//! rotate-tokens` mints, tests and promotes on a schedule, read by every worker instead of
//! each minting its own. `token` answers from a short cache of the current version; `refresh`,
//! after a 401, reads the current version again, so a worker picks up a rotation the moment
//! its old token is refused. Works on either backend (it only needs the `SecretStore` port).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use como_ports::{Clock, SecretStore, SystemClock};
use como_schemas::Timestamp;

use super::Deadline;
use super::token::{Token, TokenError, TokenSource};

/// How long a refused token's holder waits for the next rotation before trying again.
const AFTER_REFUSAL: Duration = Duration::from_secs(5);

pub struct SecretTokenSource {
    secrets: Arc<dyn SecretStore>,
    name: String,
    /// Re-read the current version at least this often, so that a rotation is picked up
    /// even by a worker whose old token is still accepted.
    max_age: Duration,
    /// Dates a read, and says how old it is (the system clock unless told otherwise).
    clock: Arc<dyn Clock>,
    /// The current version and when it was read.
    cached: RwLock<Option<(Token, Timestamp)>>,
    // One read at a time; the others wait for it and share its answer.
    reading: tokio::sync::Mutex<()>,
    /// What to do when the secret has no token: added to the error and the log line.
    hint: String,
    /// The last read found no current version (logged once, not on every command).
    missing: AtomicBool,
    /// The last read failed (logged once).
    unreadable: AtomicBool,
    /// The current version was refused and no rotation has landed since (logged once).
    waiting: AtomicBool,
}

impl SecretTokenSource {
    pub fn new(secrets: Arc<dyn SecretStore>, name: impl Into<String>, max_age: Duration) -> Self {
        Self {
            secrets,
            name: name.into(),
            max_age,
            clock: Arc::new(SystemClock),
            cached: RwLock::new(None),
            reading: tokio::sync::Mutex::new(()),
            hint: "run `como-saga rotate-tokens`".to_owned(),
            missing: AtomicBool::new(false),
            unreadable: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        }
    }

    /// What an operator should do when the secret holds no token yet (which secret it is,
    /// which command fills it): part of the error every call gets meanwhile, and logged.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Ages the cache on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn cached(&self) -> Option<(Token, Timestamp)> {
        self.cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cached token, if it was read less than `max_age` ago.
    fn fresh(&self) -> Option<Token> {
        let (token, read_at) = self.cached()?;
        let age = Duration::from_millis(self.clock.now().millis_since(read_at));
        (age < self.max_age).then_some(token)
    }

    async fn read_current(&self) -> Result<Token, TokenError> {
        let current = match self.secrets.current(&self.name).await {
            Ok(current) => {
                self.unreadable.store(false, Ordering::Relaxed);
                current
            }
            Err(e) => {
                let reason = format!("cannot read the secret {}: {e}", self.name);
                if !self.unreadable.swap(true, Ordering::Relaxed) {
                    tracing::warn!("no Memberson token: {reason}");
                }
                return Err(TokenError::Unavailable {
                    reason,
                    retry_after: None,
                });
            }
        };
        let Some(current) = current else {
            let reason = format!(
                "the secret {} has no current version yet ({})",
                self.name, self.hint
            );
            if !self.missing.swap(true, Ordering::Relaxed) {
                tracing::error!("no Memberson token: {reason}");
            }
            return Err(TokenError::Unavailable {
                reason,
                retry_after: Some(AFTER_REFUSAL),
            });
        };
        if self.missing.swap(false, Ordering::Relaxed) {
            tracing::info!(secret = %self.name, "the secret has a current version now");
        }
        let token = Token::new(current.value, None);
        let previous = self
            .cached
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace((token.clone(), self.clock.now()));
        if previous.is_some_and(|(p, _)| p.value != token.value)
            && self.waiting.swap(false, Ordering::Relaxed)
        {
            tracing::info!(secret = %self.name, "a rotated token is current; using it");
        }
        Ok(token)
    }
}

#[async_trait]
impl TokenSource for SecretTokenSource {
    async fn token(&self, _deadline: Deadline) -> Result<Token, TokenError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _guard = self.reading.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.read_current().await
    }

    /// The rotation wrote the secret: read its current version now (no refusal involved).
    async fn renew(&self, _deadline: Deadline) -> Result<(), TokenError> {
        let _guard = self.reading.lock().await;
        self.read_current().await.map(|_| ())
    }

    async fn refresh(&self, rejected: &Token, _deadline: Deadline) -> Result<Token, TokenError> {
        let _guard = self.reading.lock().await;
        if let Some((token, _)) = self.cached()
            && token.value != rejected.value
        {
            return Ok(token);
        }
        let current = self.read_current().await?;
        if current.value == rejected.value {
            // Not rotated yet: retrying with the same token would only be refused again.
            if !self.waiting.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    secret = %self.name,
                    "Memberson refused the current token; waiting for a rotation ({})",
                    self.hint
                );
            }
            return Err(TokenError::Unavailable {
                reason: format!(
                    "the current version of {} was refused; waiting for a rotation",
                    self.name
                ),
                retry_after: Some(AFTER_REFUSAL),
            });
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_ports::{PortError, PortResult, SecretVersion};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Current and pending versions in memory, counting reads.
    #[derive(Default)]
    struct Memory {
        current: Mutex<Option<SecretVersion>>,
        pending: Mutex<Option<SecretVersion>>,
        reads: AtomicU32,
    }

    #[async_trait]
    impl SecretStore for Memory {
        async fn current(&self, _name: &str) -> PortResult<Option<SecretVersion>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.current.lock().unwrap().clone())
        }
        async fn put_pending(&self, _name: &str, value: &str) -> PortResult<String> {
            let id = format!("v-{value}");
            *self.pending.lock().unwrap() = Some(SecretVersion {
                version_id: id.clone(),
                value: value.into(),
            });
            Ok(id)
        }
        async fn pending(&self, _name: &str) -> PortResult<Option<SecretVersion>> {
            Ok(self.pending.lock().unwrap().clone())
        }
        async fn promote(&self, _name: &str, version_id: &str) -> PortResult<()> {
            let p = self.pending.lock().unwrap().take();
            match p {
                Some(v) if v.version_id == version_id => {
                    *self.current.lock().unwrap() = Some(v);
                    Ok(())
                }
                _ => Err(PortError::Invalid("no such version".into())),
            }
        }
    }

    async fn rotate(store: &Memory, value: &str) {
        let v = store.put_pending("t", value).await.unwrap();
        store.promote("t", &v).await.unwrap();
    }

    #[tokio::test]
    async fn reads_the_current_version_and_rereads_it_after_a_401() {
        let store = Arc::new(Memory::default());
        let source = SecretTokenSource::new(store.clone(), "t", Duration::from_secs(3600));
        let deadline = Deadline::after(Duration::from_secs(5));
        let none = source.token(deadline).await;
        assert!(
            matches!(none, Err(TokenError::Unavailable { .. })),
            "{none:?}"
        );

        rotate(&store, "first").await;
        let first = source.token(deadline).await.unwrap();
        assert_eq!(&*first.value, "first");
        let reads = store.reads.load(Ordering::SeqCst);
        assert_eq!(&*source.token(deadline).await.unwrap().value, "first");
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            reads,
            "answered from the cache"
        );

        // Refused, and not rotated yet: wait for the rotation rather than retry in vain.
        let refused = source.refresh(&first, deadline).await;
        assert!(
            matches!(
                refused,
                Err(TokenError::Unavailable {
                    retry_after: Some(_),
                    ..
                })
            ),
            "{refused:?}"
        );

        rotate(&store, "second").await;
        assert_eq!(
            &*source.token(deadline).await.unwrap().value,
            "first",
            "cached until refused or old"
        );
        let fresh = source.refresh(&first, deadline).await.unwrap();
        assert_eq!(&*fresh.value, "second", "a 401 picks up the rotation");
        assert_eq!(&*source.token(deadline).await.unwrap().value, "second");
    }

    #[tokio::test]
    async fn a_missing_token_says_what_to_run() {
        let store = Arc::new(Memory::default());
        let source = SecretTokenSource::new(store.clone(), "t", Duration::from_secs(3600))
            .with_hint("run `rotate now`");
        let deadline = Deadline::after(Duration::from_secs(5));
        match source.token(deadline).await {
            Err(TokenError::Unavailable {
                reason,
                retry_after: Some(_),
            }) => assert!(
                reason.contains("the secret t has no current version")
                    && reason.contains("run `rotate now`"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        rotate(&store, "first").await;
        assert_eq!(&*source.token(deadline).await.unwrap().value, "first");
    }

    #[tokio::test]
    async fn the_cache_ages_on_its_clock() {
        let store = Arc::new(Memory::default());
        rotate(&store, "first").await;
        let clock = Arc::new(como_ports::ManualClock::new(Timestamp::from_millis(
            1_000_000_000_000,
        )));
        let source = SecretTokenSource::new(store.clone(), "t", Duration::from_secs(60))
            .with_clock(clock.clone());
        let deadline = Deadline::after(Duration::from_secs(5));
        assert_eq!(&*source.token(deadline).await.unwrap().value, "first");
        rotate(&store, "second").await;
        clock.advance_ms(59_999);
        assert_eq!(&*source.token(deadline).await.unwrap().value, "first");
        clock.advance_ms(1);
        assert_eq!(
            &*source.token(deadline).await.unwrap().value,
            "second",
            "read again once max_age has passed on the test clock"
        );
    }

    #[tokio::test]
    async fn an_old_cache_is_read_again() {
        let store = Arc::new(Memory::default());
        rotate(&store, "first").await;
        let source = SecretTokenSource::new(store.clone(), "t", Duration::ZERO);
        let deadline = Deadline::after(Duration::from_secs(5));
        assert_eq!(&*source.token(deadline).await.unwrap().value, "first");
        rotate(&store, "second").await;
        assert_eq!(&*source.token(deadline).await.unwrap().value, "second");
    }
}
