//! Tokens for the downstream APIs: the [`TokenSource`] trait the clients read tokens from, and
//! [`CachedTokenSource`], which mints tokens with a [`TokenMinter`] (an API's own authenticate
//! call), caches them, renews them shortly before they expire, and re-mints on a 401.
//!
//! A source backed by a secret store (the rotated Memberson service token) implements the same
//! trait: `token` reads the cached current version, `refresh` re-reads it.
//!
//! Expiry is a point in time read on a [`Clock`] (the system clock unless told otherwise, see
//! [`CachedTokenSource::with_clock`]), so that a test can move past a token's expiry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use como_ports::{Clock, SystemClock};
use como_schemas::Timestamp;

use super::Deadline;

/// A bearer credential and, when known, when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub value: Arc<str>,
    pub expires_at: Option<Timestamp>,
}

impl Token {
    pub fn new(value: impl Into<Arc<str>>, expires_at: Option<Timestamp>) -> Self {
        Self {
            value: value.into(),
            expires_at,
        }
    }

    /// Whether it still works `margin` after `now`.
    fn usable_for(&self, margin: Duration, now: Timestamp) -> bool {
        self.expires_at
            .is_none_or(|at| now.plus_ms(millis(margin)) < at)
    }
}

/// `d` in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// The token could not be had now (the auth endpoint is down, slow, or throttling).
    #[error("no token available: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The credentials were refused: retrying will not help until they change.
    #[error("credentials refused: {0}")]
    Refused(String),
}

/// Where a client gets its token.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// The token to use now.
    async fn token(&self, deadline: Deadline) -> Result<Token, TokenError>;

    /// `rejected` was answered with 401: give a fresher token (one other than `rejected` when
    /// another caller already refreshed it).
    async fn refresh(&self, rejected: &Token, deadline: Deadline) -> Result<Token, TokenError>;

    /// A scheduled rotation: take a new token now. By default a refresh of the current one (a
    /// source that mints mints anew); a source that reads a store the rotation has written
    /// reads it again instead.
    async fn renew(&self, deadline: Deadline) -> Result<(), TokenError> {
        let current = self.token(deadline).await?;
        self.refresh(&current, deadline).await.map(|_| ())
    }
}

/// Obtains a new token from the API.
#[async_trait]
pub trait TokenMinter: Send + Sync {
    async fn mint(&self, deadline: Deadline) -> Result<Token, TokenError>;
}

/// Caches minted tokens: one mint at a time, renewal shortly before expiry, re-mint on a 401.
pub struct CachedTokenSource<M> {
    minter: M,
    /// Renew a token this long before it expires.
    margin: Duration,
    /// What "now" is when deciding whether a token is about to expire.
    clock: Arc<dyn Clock>,
    // Read on every call: a short, never-awaited read lock.
    cached: RwLock<Option<Token>>,
    // Held across the mint so that concurrent callers share one mint.
    minting: tokio::sync::Mutex<()>,
}

impl<M: TokenMinter> CachedTokenSource<M> {
    pub fn new(minter: M, margin: Duration) -> Self {
        Self {
            minter,
            margin,
            clock: Arc::new(SystemClock),
            cached: RwLock::new(None),
            minting: tokio::sync::Mutex::new(()),
        }
    }

    /// Decides expiry on `clock` instead of the system clock (give the minter the same clock
    /// when it stamps expiries itself, as [`super::memberson::MembersonAuthenticator`] does).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether `token` still works `margin` from now on this source's clock.
    fn usable_for(&self, token: &Token, margin: Duration) -> bool {
        token.usable_for(margin, self.clock.now())
    }

    fn current(&self) -> Option<Token> {
        self.cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn store(&self, token: &Token) {
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
    }

    async fn mint(&self, deadline: Deadline) -> Result<Token, TokenError> {
        let token = self.minter.mint(deadline).await?;
        self.store(&token);
        Ok(token)
    }

    /// Forgets the cached token.
    pub fn invalidate(&self) {
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[async_trait]
impl<M: TokenMinter> TokenSource for CachedTokenSource<M> {
    async fn token(&self, deadline: Deadline) -> Result<Token, TokenError> {
        if let Some(token) = self.current() {
            if self.usable_for(&token, self.margin) {
                return Ok(token);
            }
            if self.usable_for(&token, Duration::ZERO) {
                // About to expire: one caller renews it while the others keep using it.
                if let Ok(_guard) = self.minting.try_lock() {
                    if let Some(fresh) = self.current()
                        && fresh != token
                    {
                        return Ok(fresh);
                    }
                    return match self.mint(deadline).await {
                        Ok(fresh) => Ok(fresh),
                        Err(e) => {
                            tracing::warn!(error = %e, "renewing a token before expiry failed");
                            Ok(token)
                        }
                    };
                }
                return Ok(token);
            }
        }
        let _guard = self.minting.lock().await;
        if let Some(token) = self.current()
            && self.usable_for(&token, Duration::ZERO)
        {
            return Ok(token);
        }
        self.mint(deadline).await
    }

    async fn refresh(&self, rejected: &Token, deadline: Deadline) -> Result<Token, TokenError> {
        let _guard = self.minting.lock().await;
        if let Some(token) = self.current()
            && token != *rejected
        {
            return Ok(token);
        }
        self.mint(deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_ports::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// 2001-09-09: long past by the wall clock, so only the test clock can say a token is good.
    const T0: Timestamp = Timestamp::from_millis(1_000_000_000_000);

    struct Counting {
        minted: AtomicU32,
        lifetime: Duration,
        clock: Arc<ManualClock>,
    }

    #[async_trait]
    impl TokenMinter for Counting {
        async fn mint(&self, _deadline: Deadline) -> Result<Token, TokenError> {
            let n = self.minted.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Token::new(
                format!("t{n}"),
                Some(self.clock.now().plus_ms(millis(self.lifetime))),
            ))
        }
    }

    fn source(lifetime: Duration) -> (CachedTokenSource<Counting>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let source = CachedTokenSource::new(
            Counting {
                minted: AtomicU32::new(0),
                lifetime,
                clock: clock.clone(),
            },
            Duration::from_secs(60),
        )
        .with_clock(clock.clone());
        (source, clock)
    }

    #[tokio::test]
    async fn caches_then_renews_when_the_clock_reaches_the_margin() {
        let (s, clock) = source(Duration::from_secs(600));
        let deadline = Deadline::after(Duration::from_secs(3600));
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
        // The wall clock says this token expired decades ago; the source's clock decides.
        clock.advance_ms(539_999);
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
        clock.advance_ms(1);
        assert_eq!(
            &*s.token(deadline).await.unwrap().value,
            "t2",
            "60 s before expiry by the test clock"
        );
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t2");
    }

    #[tokio::test]
    async fn a_token_past_its_expiry_is_not_handed_out() {
        let (s, clock) = source(Duration::from_secs(30));
        let deadline = Deadline::after(Duration::from_secs(3600));
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
        // Inside the margin from the start (30 s < 60 s): renewed on the next call.
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t2");
        clock.advance_ms(30_000);
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t3");
        assert_eq!(s.minter.minted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_time_does_not_expire_a_token() {
        let (s, _clock) = source(Duration::from_secs(600));
        let deadline = Deadline::after(Duration::from_secs(7200));
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(&*s.token(deadline).await.unwrap().value, "t1");
    }

    #[tokio::test]
    async fn a_401_refreshes_once_for_all_callers_holding_the_same_token() {
        let (s, _clock) = source(Duration::from_secs(600));
        let deadline = Deadline::after(Duration::from_secs(3600));
        let old = s.token(deadline).await.unwrap();
        let a = s.refresh(&old, deadline).await.unwrap();
        let b = s.refresh(&old, deadline).await.unwrap();
        assert_eq!((&*a.value, &*b.value), ("t2", "t2"));
        assert_eq!(s.minter.minted.load(Ordering::SeqCst), 2);
    }
}
