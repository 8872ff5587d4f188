//! Before a command opens the AWS backend: can the SDK find credentials? Without them every
//! SDK call fails with the credential chain's whole story (each provider tried, then the same
//! again as a debug dump); this says it once, in one line, naming what to set.
//!
//! It asks the SDK's own chain (environment, profile files, web identity, ECS container, EC2
//! instance metadata), so what passes here is what the backend's clients then use. When the
//! endpoint is on this machine (`AWS_ENDPOINT_URL=http://127.0.0.1:...`, a local
//! AWS-compatible server) the EC2 instance metadata service is left out of the check: its
//! address (169.254.169.254) is outside this machine, no local server's credentials come from
//! it, and off EC2 asking it only waits for time-outs. The chain's other providers come first
//! in the SDK's order too, so a check passed without it finds what the clients will find.

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
// The SDK's credential trait, as every service crate re-exports it.
use aws_sdk_sqs::config::ProvideCredentials;

use crate::settings::{BackendKind, Settings};
use crate::stack;

/// The SDK stops waiting for credentials after 5 s; so does this check.
const WITHIN: Duration = Duration::from_secs(5);

/// The checks before a command opens its backend, so that what is wrong is one line said
/// before anything is started: the database file (embedded), the credentials (AWS).
pub async fn preflight(settings: &Settings) -> anyhow::Result<()> {
    stack::check_database(settings)?;
    check(settings).await
}

/// The application on the backend `settings` name, after [`preflight`]: what every role's
/// command opens.
pub async fn open_app(settings: Settings) -> anyhow::Result<como_app::App> {
    preflight(&settings).await?;
    como_app::App::build(settings)
}

/// Fails, in one line naming what to set, if the AWS backend is the one and no credentials
/// can be found. Nothing to do for the embedded backend.
pub async fn check(settings: &Settings) -> anyhow::Result<()> {
    if settings.backend != BackendKind::Aws {
        return Ok(());
    }
    let endpoint = stack::aws_config(settings)
        .endpoint_url
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    let local = endpoint.as_deref().is_some_and(is_loopback);
    let found = tokio::time::timeout(WITHIN, async {
        if local {
            local_chain().provide_credentials().await
        } else {
            DefaultCredentialsChain::builder()
                .build()
                .await
                .provide_credentials()
                .await
        }
    })
    .await;
    match found {
        Ok(Ok(_)) => Ok(()),
        // Every provider said it had nothing (rather than failing): the chain's own message
        // lists them all, over several lines, without saying what to do.
        Ok(Err(e)) if format!("{e:?}").starts_with("CredentialsNotLoaded") => {
            anyhow::bail!("{}", missing(local, profile().as_deref()))
        }
        Ok(Err(e)) => anyhow::bail!("cannot load AWS credentials: {}", one_line(&e)),
        Err(_) => anyhow::bail!(
            "{} (none found within {} s)",
            missing(local, profile().as_deref()),
            WITHIN.as_secs()
        ),
    }
}

/// The SDK's default chain without the EC2 instance metadata service, in the same order.
fn local_chain() -> CredentialsProviderChain {
    CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", ProfileFileCredentialsProvider::builder().build())
    .or_else(
        "WebIdentityToken",
        WebIdentityTokenCredentialsProvider::builder().build(),
    )
    .or_else("EcsContainer", EcsCredentialsProvider::builder().build())
}

/// The profile `AWS_PROFILE` names, if it names one.
fn profile() -> Option<String> {
    std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty())
}

/// What to set, in one line; `profile` is `AWS_PROFILE`'s, which gave none.
fn missing(local: bool, profile: Option<&str>) -> String {
    let mut line = "no AWS credentials: ".to_owned();
    if let Some(profile) = profile {
        line.push_str(&format!(
            "AWS_PROFILE={profile} gives none (no such profile with credentials in \
             ~/.aws/credentials or ~/.aws/config); "
        ));
    }
    line.push_str(
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile in \
         ~/.aws/credentials or ~/.aws/config), or run with a role (ECS task, EC2 instance \
         profile, web identity)",
    );
    if local {
        line.push_str(
            "; the local AWS-compatible server at AWS_ENDPOINT_URL takes any, e.g. \
             AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
        );
    }
    line
}

/// `e` and its sources, each said once, on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// Whether `url`'s host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_told_apart() {
        for url in [
            "http://127.0.0.1:5000",
            "http://127.1.2.3",
            "http://localhost:4566/",
            "http://LOCALHOST",
            "http://[::1]:5000",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://sqs.eu-west-1.amazonaws.com",
            "http://169.254.169.254",
            "http://10.0.0.5:4566",
            "not a url",
            "",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn the_message_is_one_line_and_names_what_to_set() {
        for local in [false, true] {
            let m = missing(local, None);
            assert!(!m.contains('\n'), "{m}");
            assert!(m.starts_with("no AWS credentials: "), "{m}");
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
                assert!(m.contains(name), "{m}");
            }
            assert_eq!(m.contains("local AWS-compatible server"), local, "{m}");
        }
        let m = missing(false, Some("ops"));
        assert!(
            m.starts_with("no AWS credentials: AWS_PROFILE=ops gives none"),
            "{m}"
        );
    }

    #[test]
    fn a_chain_with_line_breaks_becomes_one_line() {
        let e = std::io::Error::other("no credentials found in chain. Attempted:\n  Environment");
        assert_eq!(
            one_line(&e),
            "no credentials found in chain. Attempted: Environment"
        );
    }
}
