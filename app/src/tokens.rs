//! The Memberson service token kept in the secret store (the AWS backend's workers read it
//! there and never mint one): its rotation, in the four steps of a Secrets Manager rotation,
//! so that it can run on a schedule (an ECS scheduled task, cron):
//!
//! 1. create: mint a new token with Memberson's authenticate call and store it as the pending
//!    version (`AWSPENDING` on AWS);
//! 2. set: nothing to do, Memberson issued the token itself;
//! 3. test: a cheap read (a member's summary) with the pending token; a 401 stops the rotation
//!    and the current version stays;
//! 4. finish: promote the pending version to current.
//!
//! Workers on the AWS backend read the token through `SecretTokenSource` (see
//! `stack::memberson_client`) and read the current version again when Memberson answers 401, so
//! a rotation needs no restart. [`rotate_once`] is the rotation itself (`como-saga
//! rotate-tokens`); [`ensure_token`] (used by `up`, `bench` and the tests, whose simulators are
//! new on every run) rotates only when the secret has no token that Memberson accepts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use como_backend_aws::names;
use como_ports::SecretStore;
use como_workers::clients::memberson::{ExposeSecret, MembersonAuthenticator, MembersonClient};
use como_workers::clients::token::{Token, TokenError, TokenMinter, TokenSource};
use como_workers::clients::{CallPolicy, Deadline, Outcome};

use crate::settings::Settings;

/// The pending token and nothing else; notes whether Memberson refused it.
struct Pending {
    token: Token,
    refused: AtomicBool,
}

#[async_trait]
impl TokenSource for Pending {
    async fn token(&self, _deadline: Deadline) -> Result<Token, TokenError> {
        Ok(self.token.clone())
    }

    async fn refresh(&self, _rejected: &Token, _deadline: Deadline) -> Result<Token, TokenError> {
        self.refused.store(true, Ordering::SeqCst);
        Err(TokenError::Refused("the new token was refused".into()))
    }
}

/// One rotation of the Memberson token secret in `secrets` (the four steps above), against the
/// Memberson of `settings`, tested by reading `test_member`'s summary. Returns the version
/// made current.
pub async fn rotate_once(
    settings: &Settings,
    secrets: &dyn SecretStore,
    test_member: &str,
) -> anyhow::Result<String> {
    let m = &settings.memberson;
    let url = memberson_url(settings)?;
    let name = names::MEMBERSON_TOKEN_SECRET;
    let http = reqwest::Client::new();

    // 1. create
    let minter = MembersonAuthenticator::new(
        http.clone(),
        url.clone(),
        m.credentials.clone(),
        Duration::from_secs(3600),
    );
    let token = minter
        .mint(deadline())
        .await
        .context("cannot mint a Memberson token")?;
    let version = secrets
        .put_pending(name, &token.value)
        .await
        .context("cannot store the pending version")?;

    // 2. set: Memberson issued the token; there is nothing to register.

    // 3. test
    if let Err(outcome) = test_token(settings, http, &url, token, test_member).await {
        anyhow::bail!(
            "the new token failed its test ({outcome}); version {version} stays pending, the current version stays current"
        );
    }

    // 4. finish
    secrets
        .promote(name, &version)
        .await
        .context("cannot promote the new version")?;
    Ok(version)
}

/// What [`ensure_token`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// The secret's current token works against this Memberson.
    Current,
    /// The secret had no current token: one rotation made `version_id` current.
    RotatedNone { version_id: String },
    /// Memberson refused the secret's current token (one this Memberson never issued, such
    /// as a token of an earlier run's simulators): one rotation made `version_id` current.
    RotatedRefused { version_id: String },
}

/// Makes sure the Memberson token secret holds a token that the Memberson of `settings`
/// accepts, rotating once when it does not. For `up` on the AWS backend: its simulators are
/// new on every run, and its workers read the token from the secret rather than minting one.
pub async fn ensure_token(
    settings: &Settings,
    secrets: &dyn SecretStore,
) -> anyhow::Result<TokenCheck> {
    let name = names::MEMBERSON_TOKEN_SECRET;
    let member = como_simulators::seed::MEMBER_RICH;
    let current = secrets
        .current(name)
        .await
        .with_context(|| format!("cannot read the secret {name}"))?;
    let Some(current) = current else {
        let version_id = rotate_once(settings, secrets, member).await?;
        return Ok(TokenCheck::RotatedNone { version_id });
    };
    let url = memberson_url(settings)?;
    let token = Token::new(current.value, None);
    match test_token(settings, reqwest::Client::new(), &url, token, member).await {
        Ok(()) => Ok(TokenCheck::Current),
        Err(_) => {
            let version_id = rotate_once(settings, secrets, member).await?;
            Ok(TokenCheck::RotatedRefused { version_id })
        }
    }
}

fn memberson_url(settings: &Settings) -> anyhow::Result<String> {
    settings
        .memberson
        .base_url
        .clone()
        .context("no Memberson URL: set --memberson-url or COMO_SAGA_MEMBERSON_URL")
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

/// Reads `member`'s summary with `token` and nothing else: `Ok` when Memberson took the token
/// (it answered, or refused the read on business grounds), else the outcome as text.
async fn test_token(
    settings: &Settings,
    http: reqwest::Client,
    url: &str,
    token: Token,
    member: &str,
) -> Result<(), String> {
    let m = &settings.memberson;
    let pending = Arc::new(Pending {
        token,
        refused: AtomicBool::new(false),
    });
    let client = MembersonClient::new(
        http,
        url,
        m.credentials.svc_auth.expose_secret(),
        m.point_type.clone(),
        pending.clone(),
        CallPolicy::default(),
    );
    let outcome = client.member_summary(member, deadline()).await;
    let accepted = !pending.refused.load(Ordering::SeqCst)
        && matches!(
            outcome,
            Outcome::Success(_) | Outcome::BusinessFailure { .. }
        );
    if accepted {
        Ok(())
    } else {
        Err(format!("{outcome:?}"))
    }
}
