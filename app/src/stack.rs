//! The pieces [`crate::App`] assembles, built from settings: the backend, and each worker's
//! handler (its downstream client with the circuit breaker, the rate limit and, on AWS, the
//! token from the secret store); and the shutdown signal every loop honours.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use como_backend_aws::names;
use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_ports::{Backend, SecretStore, SystemClock};
use como_schemas::Worker;
use como_workers::breaker::{BreakerConfig, CircuitBreaker};
use como_workers::clients::memberson::{ExposeSecret, MembersonClient, MembersonSettings};
use como_workers::clients::secret_token::SecretTokenSource;
use como_workers::clients::sevenrooms::{SevenRoomsClient, SevenRoomsSettings};
use como_workers::clients::token::TokenSource;
use como_workers::clients::{Deadline, Guards};
use como_workers::handlers::{CommandHandler, CrmHandler, SevenRoomsHandler, VenueRouting};
use como_workers::rate_limit::{RateLimit, RateLimitConfig};
use tokio_util::sync::CancellationToken;

use crate::settings::{BackendKind, RateLimitSetting, Settings};

/// An open backend. Close it to flush before the process ends.
pub struct OpenBackend {
    pub ports: Backend,
    embedded: Option<EmbeddedBackend>,
    /// The AWS backend, when that is the one (it needs no flushing: every call it
    /// acknowledged is done).
    aws: Option<como_backend_aws::AwsBackend>,
}

impl OpenBackend {
    /// An AWS backend connected already (a test's fresh deployment).
    pub fn of_aws(aws: como_backend_aws::AwsBackend) -> OpenBackend {
        OpenBackend {
            ports: aws.ports(),
            embedded: None,
            aws: Some(aws),
        }
    }

    /// The AWS backend, when that is the one.
    pub fn aws(&self) -> Option<&como_backend_aws::AwsBackend> {
        self.aws.as_ref()
    }

    /// The AWS API calls this process made (and the write units they billed), when the
    /// backend is AWS.
    pub fn aws_api_calls(&self) -> Option<Vec<como_backend_aws::ApiCall>> {
        self.aws.as_ref().map(|a| a.api_calls())
    }

    /// The transactions the embedded backend has committed, when it is the one.
    pub fn embedded_commits(&self) -> Option<u64> {
        self.embedded.as_ref().map(EmbeddedBackend::commits)
    }

    pub fn reset_aws_api_calls(&self) {
        if let Some(a) = &self.aws {
            a.reset_api_calls();
        }
    }

    pub async fn close(&self) {
        if let Some(e) = &self.embedded {
            e.close().await;
        }
        if let Some(aws) = &self.aws {
            tracing::info!(calls = ?aws.api_calls(), "AWS API calls made");
        }
    }
}

pub fn open_backend(settings: &Settings) -> anyhow::Result<OpenBackend> {
    match settings.backend {
        BackendKind::Embedded => {
            check_database(settings)?;
            let config = EmbeddedConfig {
                // A command parked while its downstream is down is re-sent, not re-received,
                // so this only catches messages that keep failing to be handled.
                max_receives: 10,
                read_connections: 64,
                commit_delay: std::env::var(COMMIT_DELAY_ENV)
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .map(std::time::Duration::from_millis),
                ..EmbeddedConfig::default()
            };
            let embedded = EmbeddedBackend::open(&settings.database, config, Arc::new(SystemClock))
                .with_context(|| {
                    format!("cannot open the database {}", settings.database.display())
                })?;
            Ok(OpenBackend {
                ports: embedded.ports(),
                embedded: Some(embedded),
                aws: None,
            })
        }
        BackendKind::Aws => {
            let config = aws_config(settings);
            // Every caller runs on the multi-threaded runtime (`runtime()`); connecting is a
            // few look-ups of queue URLs and the table.
            let aws = block_on(como_backend_aws::AwsBackend::connect(config))?
                .context("cannot connect to the AWS backend")?;
            Ok(OpenBackend {
                ports: aws.ports(),
                embedded: None,
                aws: Some(aws),
            })
        }
    }
}

/// The keyring's text, in place of the key file or the secret (`{"primary": ..., "keys": ...}`).
pub const DATA_KEYS_ENV: &str = "COMO_SAGA_DATA_KEYS";
/// Where the embedded backend's key file is, in place of beside the database.
pub const DATA_KEY_FILE_ENV: &str = "COMO_SAGA_DATA_KEY_FILE";
/// The AWS backend's secret of data keys (`<prefix>/data-keys`).
pub const DATA_KEYS_SECRET: &str = "data-keys";

/// Where this deployment keeps its data keys: `COMO_SAGA_DATA_KEYS` when set; else the
/// embedded backend's key file (beside the database: `como-saga.sqlite` → `como-saga.keys`,
/// or `COMO_SAGA_DATA_KEY_FILE`), or the AWS backend's secret `<prefix>/data-keys`.
pub fn key_source(settings: &Settings, secrets: Arc<dyn SecretStore>) -> como_privacy::KeySource {
    if let Ok(text) = std::env::var(DATA_KEYS_ENV)
        && !text.trim().is_empty()
    {
        return como_privacy::KeySource::Text(text);
    }
    match settings.backend {
        BackendKind::Embedded => como_privacy::KeySource::File(
            std::env::var_os(DATA_KEY_FILE_ENV)
                .filter(|p| !p.is_empty())
                .map_or_else(|| settings.database.with_extension("keys"), Into::into),
        ),
        BackendKind::Aws => como_privacy::KeySource::Secret {
            store: secrets,
            name: DATA_KEYS_SECRET.to_owned(),
        },
    }
}

/// The data keys of this deployment. The embedded backend's key file is made on first use
/// (mode 0600); the AWS secret is made once, by `como-saga keys init`, or here with `make`
/// (a local stack: `up`, tests, benchmarks).
pub async fn data_keys(
    settings: &Settings,
    ports: &Backend,
    make: bool,
) -> anyhow::Result<Arc<como_privacy::Keys>> {
    let source = key_source(settings, ports.secrets.clone());
    let create = make || matches!(source, como_privacy::KeySource::File(_));
    let described = source.describe();
    if create && source.read().await.ok().flatten().is_none() {
        refuse_new_keys_over_sealed_guests(ports, &source).await?;
    }
    como_privacy::Keys::load(source, create)
        .await
        .with_context(|| {
            format!("cannot read the data keys ({described}) that seal the guests' contact details")
        })
}

/// New data keys would open none of the guests sealed before: where the store already holds
/// sealed guests, their keys were lost or moved (a key file left behind in a copy of the
/// database), and making new ones would only hide that. Refused, naming what to do. Only a
/// key file is checked: a Secrets Manager secret is not left behind by a copy (and the role
/// that makes it may not read the table).
pub async fn refuse_new_keys_over_sealed_guests(
    ports: &Backend,
    source: &como_privacy::KeySource,
) -> anyhow::Result<()> {
    if !matches!(source, como_privacy::KeySource::File(_)) {
        return Ok(());
    }
    let keys = source.describe();
    let page = ports
        .store
        .query(&como_ports::SagaQuery {
            personal_data: Some(true),
            limit: 20,
            ..como_ports::SagaQuery::default()
        })
        .await
        .context("cannot look for sealed guests before making the data keys")?;
    for s in &page.items {
        let sealed = ports
            .store
            .get(s.saga_id)
            .await
            .context("cannot look for sealed guests before making the data keys")?
            .is_some_and(|v| v.value.request.guest.sealed().is_some());
        if sealed {
            anyhow::bail!(
                "no data keys ({keys}), yet the store holds guests sealed with keys (saga {} for one): \
                 restore the keys they were sealed with (the key file beside the database, \
                 COMO_SAGA_DATA_KEY_FILE or COMO_SAGA_DATA_KEYS) rather than make new ones that open none of them",
                s.saga_id
            );
        }
    }
    Ok(())
}

/// Fails, in one line naming the path and the reason, if the embedded backend's file cannot
/// be its database: SQLite's own words ("unable to open database file", "file is not a
/// database") name neither, and come wrapped two or three times. A file that does not exist
/// yet is fine (the backend creates it, and any missing directory), unless a part of its path
/// that exists is not a directory. Nothing to check for the AWS backend.
pub fn check_database(settings: &Settings) -> anyhow::Result<()> {
    if settings.backend != BackendKind::Embedded {
        return Ok(());
    }
    match database_problem(&settings.database) {
        None => Ok(()),
        Some(reason) => anyhow::bail!(
            "cannot open the database {}: {reason}",
            settings.database.display()
        ),
    }
}

/// Why `path` cannot be an SQLite database this process reads and writes, if it cannot.
fn database_problem(path: &Path) -> Option<String> {
    use std::io::{ErrorKind, Read};
    let io_reason = |e: &std::io::Error| match e.kind() {
        ErrorKind::PermissionDenied => {
            "permission denied: this user must be able to read and write it".to_owned()
        }
        _ => e.to_string(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Some("it is a directory, not a file".to_owned()),
        Ok(meta) if !meta.is_file() => Some("it is not a regular file".to_owned()),
        Ok(meta) => {
            let mut file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                Ok(file) => file,
                Err(e) => return Some(io_reason(&e)),
            };
            // An empty file is a new database to SQLite; anything else begins with its header.
            if meta.len() == 0 {
                return None;
            }
            let mut header = [0u8; SQLITE_HEADER.len()];
            match file.read_exact(&mut header) {
                Ok(()) if header == *SQLITE_HEADER => None,
                Err(e) if e.kind() != ErrorKind::UnexpectedEof => Some(io_reason(&e)),
                _ => Some(format!(
                    "it is not an SQLite database (a file of {} bytes that does not begin with SQLite's header)",
                    meta.len()
                )),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            // The backend creates the file and the missing directories, unless something on
            // the way is a file.
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                match std::fs::metadata(d) {
                    Ok(m) if m.is_dir() => return None,
                    Ok(_) => return Some(format!("{} is not a directory", d.display())),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) =>
                    {
                        dir = d.parent()
                    }
                    Err(e) => return Some(format!("{}: {}", d.display(), io_reason(&e))),
                }
            }
            None
        }
        Err(e) => Some(io_reason(&e)),
    }
}

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The AWS backend's settings: the SDK's standard configuration (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, credentials) with the deployment's prefix.
pub fn aws_config(settings: &Settings) -> como_backend_aws::AwsConfig {
    como_backend_aws::AwsConfig {
        prefix: settings.aws_prefix.clone(),
        ..como_backend_aws::AwsConfig::default()
    }
}

/// Runs `f` to completion from synchronous code, inside a multi-threaded runtime or outside
/// any.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(f)))
        }
        Ok(_) => anyhow::bail!("the AWS backend is opened from a multi-threaded runtime only"),
        Err(_) => Ok(runtime()?.block_on(f)),
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .context("cannot build the HTTP client")
}

fn guards(name: &str, rate: RateLimitSetting) -> Guards {
    Guards::new(
        Arc::new(CircuitBreaker::new(name, BreakerConfig::default())),
        rate_limit(name, rate),
    )
}

/// A rate limit named `name` at `rate`.
pub fn rate_limit(name: &str, rate: RateLimitSetting) -> Arc<RateLimit> {
    let positive = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimit::new(
        name,
        RateLimitConfig {
            per_second: positive(rate.per_second),
            burst: positive(rate.burst),
        },
    ))
}

/// Fault injection for the crash tests and `chaos --store-faults`: the embedded writer holds
/// each transaction open this many ms before committing, so that a `kill -9` lands inside it.
/// Never set in production.
pub const COMMIT_DELAY_ENV: &str = "COMO_SAGA_FAULT_COMMIT_DELAY_MS";

/// How long a worker on the AWS backend answers from its copy of the Memberson token before
/// reading the secret again (a 401 makes it read at once).
pub const MEMBERSON_TOKEN_MAX_AGE: Duration = Duration::from_secs(300);

/// The handler of one worker kind, with its client pointed at `base_url`. On the AWS backend
/// the CRM handler reads the Memberson token from the ports' secret store.
pub fn handler(
    settings: &Settings,
    worker: Worker,
    ports: &Backend,
    catalogue: Option<como_orchestrator::LiveCatalogue>,
) -> anyhow::Result<Arc<dyn CommandHandler>> {
    handler_with(settings, worker, ports, catalogue)
}

fn handler_with(
    settings: &Settings,
    worker: Worker,
    ports: &Backend,
    catalogue: Option<como_orchestrator::LiveCatalogue>,
) -> anyhow::Result<Arc<dyn CommandHandler>> {
    let secrets = ports.secrets.clone();
    let http = http_client()?;
    Ok(match worker {
        Worker::Crm => {
            let m = &settings.memberson;
            let url = m.base_url.clone().context(
                "no Memberson URL: set --memberson-url or COMO_SAGA_MEMBERSON_URL (`como-saga simulators` prints one)",
            )?;
            let mut s = MembersonSettings::new(url, m.credentials.clone());
            s.point_type = m.point_type.clone();
            let mut client = memberson_client(settings, http, s, secrets)?
                .with_guards(guards("memberson", m.rate_limit));
            if let Some(d) = &m.redeem_description {
                client = client.with_redeem_description(d.as_str());
            }
            Arc::new(CrmHandler { client })
        }
        Worker::Sevenrooms => {
            let r = &settings.sevenrooms;
            let url = r.base_url.clone().context(
                "no SevenRooms URL: set --sevenrooms-url or COMO_SAGA_SEVENROOMS_URL (`como-saga simulators` prints one)",
            )?;
            let s = SevenRoomsSettings::new(url, r.credentials.clone());
            let guards = guards("sevenrooms", r.rate_limit);
            let client =
                SevenRoomsClient::connect(http.clone(), s.clone()).with_guards(guards.clone());
            let mut handler =
                SevenRoomsHandler::new(client, r.hold_seconds).with_vault(ports.vault.clone());
            if let Some(catalogue) = catalogue {
                handler = handler.with_venues(
                    Arc::new(move |venue: &str| {
                        catalogue.current().venues.get(venue).map(|v| VenueRouting {
                            api_url: v.api_url.clone(),
                            credit_shifts: v.credit_shifts.clone(),
                        })
                    }),
                    Arc::new(move |url: &str| {
                        let mut at = s.clone();
                        at.base_url = url.to_owned();
                        SevenRoomsClient::connect(http.clone(), at).with_guards(guards.clone())
                    }),
                );
            }
            Arc::new(handler)
        }
    })
}

/// Where the CRM worker's Memberson token comes from, decided here for every role that runs
/// one (`worker crm`, `up`, `bench`):
///
/// - embedded backend: the client mints its own with Memberson's authenticate call and caches
///   it (`MembersonClient::connect`);
/// - AWS backend: the current version of the `memberson-token` secret, which `como-saga
///   rotate-tokens` mints, tests and promotes on a schedule (`SecretTokenSource`: cached for
///   [`MEMBERSON_TOKEN_MAX_AGE`], read again at once after a 401). Workers never mint there.
fn memberson_client(
    settings: &Settings,
    http: reqwest::Client,
    s: MembersonSettings,
    secrets: Arc<dyn SecretStore>,
) -> anyhow::Result<MembersonClient> {
    if settings.backend == BackendKind::Embedded {
        return Ok(MembersonClient::connect(http, s));
    }
    let full_name = aws_config(settings)
        .names()
        .secret(names::MEMBERSON_TOKEN_SECRET);
    let tokens = Arc::new(
        SecretTokenSource::new(secrets, names::MEMBERSON_TOKEN_SECRET, MEMBERSON_TOKEN_MAX_AGE)
            .with_hint(format!(
                "Secrets Manager secret {full_name}; run `{}` (Terraform schedules it); until then Memberson calls fail as retryable and commands wait on their queue",
                rotate_command(settings, &s.base_url)
            )),
    );
    // Read it once now, so that a worker started before the first rotation says so at start-up
    // (the source logs the missing token) rather than at its first command.
    let first = block_on(tokens.token(Deadline::after(Duration::from_secs(10))))?;
    if let Err(e) = first {
        tracing::debug!(error = %e, "no Memberson token at start-up");
    }
    Ok(MembersonClient::new(
        http,
        s.base_url,
        s.credentials.svc_auth.expose_secret(),
        s.point_type,
        tokens,
        s.policy,
    ))
}

/// The `rotate-tokens` command line that fills the token secret of this deployment.
fn rotate_command(settings: &Settings, memberson_url: &str) -> String {
    let mut line = "como-saga rotate-tokens --backend aws".to_owned();
    if settings.aws_prefix != names::DEFAULT_PREFIX {
        line.push_str(&format!(" --aws-prefix {}", settings.aws_prefix));
    }
    line.push_str(&format!(" --memberson-url {memberson_url}"));
    line
}

/// Cancel `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}

/// A multi-threaded runtime for a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// How long to wait for loops to finish their batch on shutdown before giving up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_path_that_cannot_be_one_is_named_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::create_dir(at("a-directory")).unwrap();
        std::fs::write(at("text"), "not a database, just some words\n").unwrap();
        std::fs::write(at("short"), "x").unwrap();
        std::fs::write(at("empty"), "").unwrap();
        let mut sqlite = SQLITE_HEADER.to_vec();
        sqlite.resize(4096, 0);
        std::fs::write(at("db.sqlite"), sqlite).unwrap();

        assert_eq!(
            database_problem(&at("a-directory")).as_deref(),
            Some("it is a directory, not a file")
        );
        for name in ["text", "short"] {
            let problem = database_problem(&at(name)).unwrap();
            assert!(
                problem.starts_with("it is not an SQLite database"),
                "{problem}"
            );
        }
        let under_a_file = at("text").join("deeper").join("x.sqlite");
        assert_eq!(
            database_problem(&under_a_file),
            Some(format!("{} is not a directory", at("text").display()))
        );
        // What the backend makes or opens as it is.
        for fine in [
            at("empty"),
            at("db.sqlite"),
            at("new.sqlite"),
            at("new-dir").join("deeper").join("x.sqlite"),
            std::path::PathBuf::from("relative-and-new.sqlite"),
        ] {
            assert_eq!(database_problem(&fine), None, "{}", fine.display());
        }
    }
}
