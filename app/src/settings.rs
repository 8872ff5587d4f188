//! Settings shared by every role: which backend, where its file is, how to reach the two
//! downstreams, and the venue catalogue. Flags and environment variables override the
//! optional TOML file, which overrides the defaults (which point at the local simulators).
//!
//! The production roles (`orchestrator`, `worker crm|sevenrooms`) load with
//! [`Settings::load_for_role`]: the credentials and the venues they use must be set, or they
//! refuse to start, unless `COMO_SAGA_DEV_DEFAULTS=1` lets them use the simulators' credentials
//! and the demo venues (local runs and tests only). [`Settings::load`] falls back to those
//! without asking: it serves the local stack (`up`, `bench`, `chaos`) and the tools.

use std::path::{Path, PathBuf};

use anyhow::Context;
use como_orchestrator::{VenueCatalogue, VenuePrice};
use como_schemas::credentials::{ExposeSecret, MembersonCredentials, SevenRoomsCredentials};
use serde::Deserialize;

/// Which backend holds the queues and the sagas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// One SQLite file on this machine.
    Embedded,
    /// SQS, DynamoDB, EventBridge and Secrets Manager.
    Aws,
}

/// The flags of every command that opens the backend (the same flags, help and environment
/// variables everywhere).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Where the queues and the sagas live (default: embedded). On `aws`, the SDK's standard
    /// configuration applies: AWS_ENDPOINT_URL, AWS_REGION, the credentials.
    #[arg(long, env = "COMO_SAGA_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// The embedded backend's SQLite file (created on first use).
    #[arg(long, env = "COMO_SAGA_DATABASE", value_name = "PATH")]
    pub database: Option<PathBuf>,
    /// A TOML settings file (see the README's "Configuration").
    #[arg(long, env = "COMO_SAGA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The AWS backend's prefix of every resource name (queues, table, bus, secrets).
    #[arg(long, env = "COMO_SAGA_AWS_PREFIX", value_name = "PREFIX")]
    pub aws_prefix: Option<String>,
}

/// The flags of the roles that call the downstreams.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DownstreamArgs {
    /// Memberson's base URL.
    #[arg(long, env = "COMO_SAGA_MEMBERSON_URL", value_name = "URL")]
    pub memberson_url: Option<String>,
    /// SevenRooms' base URL.
    #[arg(long, env = "COMO_SAGA_SEVENROOMS_URL", value_name = "URL")]
    pub sevenrooms_url: Option<String>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    backend: Option<BackendKind>,
    database: Option<PathBuf>,
    aws_prefix: Option<String>,
    #[serde(default)]
    memberson: MembersonFile,
    #[serde(default)]
    sevenrooms: SevenRoomsFile,
    venues: Option<VenueCatalogue>,
    /// Late-effect audits after a saga ends compensated or cancelled, e.g. `["10m", "24h"]`.
    audit_after: Option<Vec<String>>,
    /// How long a saga may take to move forward, waiting for a downstream included, e.g.
    /// `"15m"` (the Como booking's own).
    deadline: Option<String>,
    /// Where a saga that needs an operator is pushed (see `notify`).
    #[serde(default)]
    webhook: WebhookFile,
    #[serde(default)]
    dashboard: DashboardFile,
    #[serde(default)]
    experiences: ExperiencesFile,
    /// How often `up` rotates the downstream tokens, e.g. `"12h"` (`"off"`: never).
    rotate_tokens_every: Option<String>,
    /// How long a finished saga keeps the guest's contact details, e.g. `"30d"` (`"off"`:
    /// kept).
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperiencesFile {
    /// How long venue details read from SevenRooms are served from the cache, e.g. `"6h"`.
    details_ttl: Option<String>,
    /// How long a venue's availability is served from the cache, e.g. `"10s"`.
    availability_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DashboardFile {
    /// The identity provider's sign-in page the dashboard offers (Cognito's hosted UI).
    signin_url: Option<String>,
    /// How often the overview is read while a dashboard watches, e.g. `"2s"`.
    refresh: Option<String>,
    /// How often while none does, e.g. `"1m"`, or `"off"`.
    idle_refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersonFile {
    base_url: Option<String>,
    svc_auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    point_type: Option<String>,
    redeem_description: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SevenRoomsFile {
    base_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    hold_seconds: Option<u32>,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: BackendKind,
    pub database: PathBuf,
    /// The AWS backend's resource name prefix.
    pub aws_prefix: String,
    pub memberson: MembersonTarget,
    pub sevenrooms: SevenRoomsTarget,
    pub venues: VenueCatalogue,
    /// Where the notifier pushes sagas that need an operator (none: not pushed).
    pub webhook: Option<crate::notify::Webhook>,
    /// The sign-in page the dashboard links to (none: tokens are pasted).
    pub dashboard_signin_url: Option<String>,
    /// How often the dashboard's overview is read while anyone watches.
    pub dashboard_refresh: std::time::Duration,
    /// How often it is read while no one watches (none: never).
    pub dashboard_idle_refresh: Option<std::time::Duration>,
    /// How long the API serves experiences from its cache.
    pub experiences: ExperienceTtls,
    /// How often `up` rotates the downstream tokens (none: never).
    pub rotate_tokens_every: Option<std::time::Duration>,
    /// How long a finished saga keeps the guest's contact details before the orchestrator
    /// erases them (none: kept).
    pub retention: Option<std::time::Duration>,
}

/// How long the API's cache in front of SevenRooms serves each kind of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExperienceTtls {
    pub details: std::time::Duration,
    pub availability: std::time::Duration,
}

impl Default for ExperienceTtls {
    fn default() -> Self {
        ExperienceTtls {
            details: std::time::Duration::from_secs(6 * 3600),
            availability: std::time::Duration::from_secs(10),
        }
    }
}

/// How often `up` rotates the tokens when nothing says: twice a day (a Memberson token lives
/// a day).
pub const DEFAULT_ROTATE_TOKENS_EVERY: std::time::Duration =
    std::time::Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub struct MembersonTarget {
    pub base_url: Option<String>,
    pub credentials: MembersonCredentials,
    pub point_type: String,
    pub rate_limit: RateLimitSetting,
    /// The redemptions' `Description` (default: the client's own wording).
    pub redeem_description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SevenRoomsTarget {
    pub base_url: Option<String>,
    pub credentials: SevenRoomsCredentials,
    pub rate_limit: RateLimitSetting,
    pub hold_seconds: u32,
}

/// The most calls per second one worker process makes to a downstream, and how many of them
/// may go at once after a quiet spell. Over any second a downstream sees at most
/// `per_second + burst` calls from one process; a backlog after an outage drains at
/// `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSetting {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimitSetting {
    /// From the environment (`<PREFIX>_RATE_LIMIT`, `<PREFIX>_RATE_LIMIT_BURST`), then the
    /// file; the burst defaults to a twentieth of a second's calls.
    fn resolve(
        prefix: &str,
        per_second: Option<u32>,
        burst: Option<u32>,
    ) -> anyhow::Result<RateLimitSetting> {
        let number = |name: String, file: Option<u32>| -> anyhow::Result<Option<u32>> {
            match env(&name) {
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        anyhow::anyhow!("{name}: expected a positive whole number, got {v:?}")
                    }),
                None => Ok(file),
            }
        };
        let per_second = number(format!("{prefix}_RATE_LIMIT"), per_second)?.unwrap_or(2_000);
        let burst = number(format!("{prefix}_RATE_LIMIT_BURST"), burst)?
            .unwrap_or((per_second / 20).max(1));
        if per_second == 0 || burst == 0 {
            anyhow::bail!("{prefix}: the rate limit and its burst must be positive");
        }
        Ok(RateLimitSetting { per_second, burst })
    }
}

pub const DEFAULT_DATABASE: &str = "como-saga.sqlite";

/// `1` lets a production role fall back to the simulators' credentials and the demo venues:
/// for local runs and tests only.
pub const DEV_DEFAULTS_ENV: &str = "COMO_SAGA_DEV_DEFAULTS";

/// What a production role cannot run on the local defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// The venue catalogue (the orchestrator prices and checks every request with it).
    Venues,
    /// Memberson's service credentials (the CRM worker).
    MembersonCredentials,
    /// SevenRooms' API client credentials (the SevenRooms worker).
    SevenRoomsCredentials,
}

/// A setting that was not given and took the local default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Defaulted {
    part: Required,
    /// The environment variable, if there is one.
    env: Option<&'static str>,
    /// Where it goes in the TOML file.
    toml: &'static str,
}

impl std::fmt::Display for Defaulted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.env {
            Some(env) => write!(f, "{env} (or {} in the settings file)", self.toml),
            None => write!(
                f,
                "{} in the settings file (--config or COMO_SAGA_CONFIG)",
                self.toml
            ),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// Where this process keeps sagas and queues, as its start-up line says it:
    /// `database data/saga.sqlite`, or `AWS deployment como-saga`.
    pub fn store_location(&self) -> String {
        match self.backend {
            BackendKind::Embedded => format!("database {}", self.database.display()),
            BackendKind::Aws => format!("AWS deployment {}", self.aws_prefix),
        }
    }

    /// The local stack's settings, from nothing in the environment: the embedded backend on
    /// `database`, the simulators at `sims` with their credentials, the demo venues, and the
    /// default rate limits. What [`crate::spawn_app`] and the tests start from.
    pub fn local(database: PathBuf, sims: &como_simulators::SimHandle) -> Settings {
        let rate_limit = RateLimitSetting {
            per_second: 2_000,
            burst: 100,
        };
        Settings {
            backend: BackendKind::Embedded,
            database,
            aws_prefix: como_backend_aws::names::DEFAULT_PREFIX.to_owned(),
            memberson: MembersonTarget {
                base_url: Some(sims.memberson_url().to_owned()),
                credentials: sims.memberson_credentials().clone(),
                point_type: "COMO_CREDITS".into(),
                rate_limit,
                redeem_description: None,
            },
            sevenrooms: SevenRoomsTarget {
                base_url: Some(sims.sevenrooms_url().to_owned()),
                credentials: sims.sevenrooms_credentials().clone(),
                rate_limit,
                hold_seconds: 300,
            },
            venues: demo_catalogue(),
            webhook: None,
            dashboard_signin_url: None,
            dashboard_refresh: DEFAULT_DASHBOARD_REFRESH,
            dashboard_idle_refresh: Some(DEFAULT_DASHBOARD_IDLE_REFRESH),
            experiences: ExperienceTtls::default(),
            rotate_tokens_every: Some(DEFAULT_ROTATE_TOKENS_EVERY),
            retention: Some(como_orchestrator::privacy::DEFAULT_RETENTION),
        }
    }

    /// Loads the settings; the credentials and venues not given are the simulators' and the
    /// demo catalogue, so the local stack just works. For `up`, `bench`, `chaos` and the tools,
    /// never for a production role (see [`Settings::load_for_role`]).
    pub fn load(common: &CommonArgs, downstreams: &DownstreamArgs) -> anyhow::Result<Settings> {
        Ok(Self::resolve(common, downstreams)?.0)
    }

    /// Loads the settings of a production role (`role` names it in the messages): every part
    /// in `required` must be set, by environment variable or settings file, or this fails
    /// naming what is missing; the simulators' credentials and the demo venues are used only
    /// when `COMO_SAGA_DEV_DEFAULTS=1` asks for them.
    pub fn load_for_role(
        role: &str,
        common: &CommonArgs,
        downstreams: &DownstreamArgs,
        required: &[Required],
    ) -> anyhow::Result<Settings> {
        let (settings, defaulted) = Self::resolve(common, downstreams)?;
        let missing: Vec<Defaulted> = defaulted
            .into_iter()
            .filter(|d| required.contains(&d.part))
            .collect();
        if missing.is_empty() {
            return Ok(settings);
        }
        let list = missing
            .iter()
            .map(|d| format!("\n  - {d}"))
            .collect::<String>();
        if dev_defaults() {
            tracing::warn!(
                "{role}: {DEV_DEFAULTS_ENV}=1: using the simulators' credentials and the demo venues for:{list}"
            );
            return Ok(settings);
        }
        anyhow::bail!(
            "{role} will not start on the simulators' credentials or the demo venues; set:{list}\n\
             (for a local run or a test only, {DEV_DEFAULTS_ENV}=1 uses those defaults)"
        )
    }

    /// The settings, and which of the parts a production role needs took the local default.
    fn resolve(
        common: &CommonArgs,
        downstreams: &DownstreamArgs,
    ) -> anyhow::Result<(Settings, Vec<Defaulted>)> {
        let file = match &common.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let m = file.memberson;
        // Without settings, the simulators' own credentials: the local stack just works.
        let default_m = como_simulators::memberson::simulator_credentials();
        let s = file.sevenrooms;
        let default_s = como_simulators::sevenrooms::simulator_credentials();
        // A deployment-wide schedule: every process that advances sagas uses the same.
        let audit_after = env("COMO_SAGA_AUDIT_AFTER")
            .map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .or(file.audit_after);
        if let Some(list) = audit_after {
            let parsed = list
                .iter()
                .map(|d| parse_duration(d.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("audit_after (COMO_SAGA_AUDIT_AFTER): {e}"))?;
            como_orchestrator::advance::set_audit_after(&parsed)
                .map_err(|e| anyhow::anyhow!("audit_after (COMO_SAGA_AUDIT_AFTER): {e}"))?;
        }
        if let Some(deadline) = env("COMO_SAGA_DEADLINE").or(file.deadline) {
            let parsed = parse_duration(deadline.trim())
                .map_err(|e| anyhow::anyhow!("deadline (COMO_SAGA_DEADLINE): {e}"))?;
            como_orchestrator::advance::set_deadline(parsed)
                .map_err(|e| anyhow::anyhow!("deadline (COMO_SAGA_DEADLINE): {e}"))?;
        }
        // Environment, then file, then the simulators' default, noting each default taken.
        let mut defaulted = Vec::new();
        let mut pick = |part: Required,
                        env_name: &'static str,
                        toml: &'static str,
                        from_file: Option<String>,
                        default: String| {
            match env(env_name).or(from_file.filter(|v| !v.is_empty())) {
                Some(v) => v,
                None => {
                    defaulted.push(Defaulted {
                        part,
                        env: Some(env_name),
                        toml,
                    });
                    default
                }
            }
        };
        let memberson_credentials = MembersonCredentials {
            svc_auth: pick(
                Required::MembersonCredentials,
                "COMO_SAGA_MEMBERSON_SVC_AUTH",
                "svc_auth under [memberson]",
                m.svc_auth,
                default_m.svc_auth.expose_secret().to_owned(),
            )
            .into(),
            username: pick(
                Required::MembersonCredentials,
                "COMO_SAGA_MEMBERSON_USERNAME",
                "username under [memberson]",
                m.username,
                default_m.username,
            ),
            password: pick(
                Required::MembersonCredentials,
                "COMO_SAGA_MEMBERSON_PASSWORD",
                "password under [memberson]",
                m.password,
                default_m.password.expose_secret().to_owned(),
            )
            .into(),
        };
        let sevenrooms_credentials = SevenRoomsCredentials {
            client_id: pick(
                Required::SevenRoomsCredentials,
                "COMO_SAGA_SEVENROOMS_CLIENT_ID",
                "client_id under [sevenrooms]",
                s.client_id,
                default_s.client_id,
            ),
            client_secret: pick(
                Required::SevenRoomsCredentials,
                "COMO_SAGA_SEVENROOMS_CLIENT_SECRET",
                "client_secret under [sevenrooms]",
                s.client_secret,
                default_s.client_secret.expose_secret().to_owned(),
            )
            .into(),
        };
        // The catalogue as JSON in the environment (how a container gets it), else the file's.
        let env_venues = env("COMO_SAGA_VENUES")
            .map(|json| {
                serde_json::from_str::<VenueCatalogue>(&json).map_err(|e| {
                    anyhow::anyhow!(
                        "COMO_SAGA_VENUES: expected JSON such as {{\"como-dempsey-candlenut\": {{\"credits_per_guest\": 600}}}}: {e}"
                    )
                })
            })
            .transpose()?;
        let venues = env_venues.or(file.venues).unwrap_or_else(|| {
            defaulted.push(Defaulted {
                part: Required::Venues,
                env: Some("COMO_SAGA_VENUES"),
                toml: "the [venues] table",
            });
            demo_catalogue()
        });
        for (id, venue) in venues.venues() {
            como_schemas::VenueId::parse(id)
                .map_err(|e| anyhow::anyhow!("the venues: {id:?} is not a venue id: {e}"))?;
            venue
                .validate()
                .map_err(|e| anyhow::anyhow!("the venues: {id}: {e}"))?;
        }
        let memberson_rate = RateLimitSetting::resolve(
            "COMO_SAGA_MEMBERSON",
            m.rate_limit_per_second,
            m.rate_limit_burst,
        )?;
        let sevenrooms_rate = RateLimitSetting::resolve(
            "COMO_SAGA_SEVENROOMS",
            s.rate_limit_per_second,
            s.rate_limit_burst,
        )?;
        let settings = Settings {
            backend: common
                .backend
                .or(file.backend)
                .unwrap_or(BackendKind::Embedded),
            database: common
                .database
                .clone()
                .or(file.database)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE)),
            aws_prefix: common
                .aws_prefix
                .clone()
                .or(file.aws_prefix)
                .unwrap_or_else(|| como_backend_aws::names::DEFAULT_PREFIX.to_owned()),
            memberson: MembersonTarget {
                base_url: downstreams.memberson_url.clone().or(m.base_url),
                credentials: memberson_credentials,
                point_type: m.point_type.unwrap_or_else(|| "COMO_CREDITS".into()),
                rate_limit: memberson_rate,
                redeem_description: env("COMO_SAGA_MEMBERSON_REDEEM_DESCRIPTION")
                    .or(m.redeem_description),
            },
            sevenrooms: SevenRoomsTarget {
                base_url: downstreams.sevenrooms_url.clone().or(s.base_url),
                credentials: sevenrooms_credentials,
                rate_limit: sevenrooms_rate,
                hold_seconds: s.hold_seconds.unwrap_or(300),
            },
            venues,
            webhook: webhook(file.webhook)?,
            dashboard_refresh: dashboard_refresh(file.dashboard.refresh.as_deref())?,
            dashboard_idle_refresh: duration_or_off(
                "COMO_SAGA_DASHBOARD_IDLE_REFRESH",
                file.dashboard.idle_refresh.as_deref(),
                DEFAULT_DASHBOARD_IDLE_REFRESH,
                (Duration::from_secs(10), Duration::from_secs(3600)),
            )?,
            dashboard_signin_url: dashboard_signin_url(file.dashboard)?,
            experiences: ExperienceTtls {
                details: duration_setting(
                    "COMO_SAGA_VIEW_DETAILS_TTL",
                    file.experiences.details_ttl.as_deref(),
                    ExperienceTtls::default().details,
                    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600)),
                )?,
                availability: duration_setting(
                    "COMO_SAGA_VIEW_AVAILABILITY_TTL",
                    file.experiences.availability_ttl.as_deref(),
                    ExperienceTtls::default().availability,
                    (Duration::from_millis(100), Duration::from_secs(3600)),
                )?,
            },
            rotate_tokens_every: duration_or_off(
                "COMO_SAGA_ROTATE_TOKENS_EVERY",
                file.rotate_tokens_every.as_deref(),
                DEFAULT_ROTATE_TOKENS_EVERY,
                (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600)),
            )?,
            retention: duration_or_off(
                "COMO_SAGA_RETENTION",
                file.retention.as_deref(),
                como_orchestrator::privacy::DEFAULT_RETENTION,
                (
                    Duration::from_secs(1),
                    Duration::from_secs(10 * 366 * 24 * 3600),
                ),
            )?,
        };
        Ok((settings, defaulted))
    }
}

/// The webhook, from `COMO_SAGA_WEBHOOK_URL` and `COMO_SAGA_WEBHOOK_SECRET` (or `[webhook]`
/// `url` and `secret` in the file): both or neither, an http(s) URL and a secret of at least 16
/// characters.
fn webhook(file: WebhookFile) -> anyhow::Result<Option<crate::notify::Webhook>> {
    let url = env("COMO_SAGA_WEBHOOK_URL").or(file.url);
    let secret = env("COMO_SAGA_WEBHOOK_SECRET").or(file.secret);
    match (url, secret) {
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!(
            "a webhook URL without a secret: set COMO_SAGA_WEBHOOK_SECRET (or secret in [webhook]) \
             to sign the notifications with"
        ),
        (None, Some(_)) => anyhow::bail!(
            "a webhook secret without a URL: set COMO_SAGA_WEBHOOK_URL (or url in [webhook])"
        ),
        (Some(url), Some(secret)) => {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("COMO_SAGA_WEBHOOK_URL {url:?} is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("COMO_SAGA_WEBHOOK_URL {url:?}: the webhook must be http or https");
            }
            if secret.chars().count() < 16 {
                anyhow::bail!(
                    "COMO_SAGA_WEBHOOK_SECRET is too short: use at least 16 characters (a random \
                     string the receiver also holds)"
                );
            }
            Ok(Some(crate::notify::Webhook {
                url,
                secret: secret.into(),
            }))
        }
    }
}

const DEFAULT_DASHBOARD_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the overview is read while no one watches, when nothing says: enough to keep the
/// last hour's per-minute figures.
const DEFAULT_DASHBOARD_IDLE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

use std::time::Duration;

/// As [`duration_setting`], where `off` means none.
fn duration_or_off(
    name: &str,
    file: Option<&str>,
    default: Duration,
    range: (Duration, Duration),
) -> anyhow::Result<Option<Duration>> {
    match env(name)
        .or(file.map(str::to_owned))
        .as_deref()
        .map(str::trim)
    {
        Some("off") => Ok(None),
        _ => duration_setting(name, file, default, range).map(Some),
    }
}

/// A duration from the environment variable `name`, else the settings file's `file`, else
/// `default`; refused, naming the variable, outside `range`.
fn duration_setting(
    name: &str,
    file: Option<&str>,
    default: Duration,
    range: (Duration, Duration),
) -> anyhow::Result<Duration> {
    let Some(text) = env(name).or(file.map(str::to_owned)) else {
        return Ok(default);
    };
    let value = parse_duration(text.trim()).map_err(|e| anyhow::anyhow!("{name} {text:?}: {e}"))?;
    if value < range.0 || value > range.1 {
        anyhow::bail!(
            "{name} {text:?}: give {} ms to {} s",
            range.0.as_millis(),
            range.1.as_secs()
        );
    }
    Ok(value)
}

/// How often the dashboard's overview is read while anyone watches: `COMO_SAGA_DASHBOARD_REFRESH`
/// (or `[dashboard] refresh`), 1 s to 5 min; 2 s when not given. On DynamoDB each read counts
/// every saga (see docs/aws.md), so a large table may want it slower.
fn dashboard_refresh(file: Option<&str>) -> anyhow::Result<std::time::Duration> {
    let Some(text) = env("COMO_SAGA_DASHBOARD_REFRESH").or(file.map(str::to_owned)) else {
        return Ok(DEFAULT_DASHBOARD_REFRESH);
    };
    let every = parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("COMO_SAGA_DASHBOARD_REFRESH {text:?}: {e}"))?;
    if every < std::time::Duration::from_secs(1) || every > std::time::Duration::from_secs(300) {
        anyhow::bail!("COMO_SAGA_DASHBOARD_REFRESH {text:?}: give 1s to 5m");
    }
    Ok(every)
}

/// The dashboard's sign-in link, from `COMO_SAGA_DASHBOARD_SIGNIN_URL` (or `[dashboard]
/// signin_url`): Cognito's hosted UI authorize URL, with `response_type=token`, the app
/// client's id and the dashboard as `redirect_uri`, so that the token comes back in the URL's
/// fragment. https only (http for a loopback address).
fn dashboard_signin_url(file: DashboardFile) -> anyhow::Result<Option<String>> {
    let Some(url) = env("COMO_SAGA_DASHBOARD_SIGNIN_URL").or(file.signin_url) else {
        return Ok(None);
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| anyhow::anyhow!("COMO_SAGA_DASHBOARD_SIGNIN_URL {url:?} is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        anyhow::bail!(
            "COMO_SAGA_DASHBOARD_SIGNIN_URL {url:?}: the sign-in page must be https (http only on \
             a loopback address)"
        );
    }
    if !parsed
        .query_pairs()
        .any(|(k, v)| k == "response_type" && v == "token")
    {
        anyhow::bail!(
            "COMO_SAGA_DASHBOARD_SIGNIN_URL {url:?}: add response_type=token, so that the \
             identity provider hands the token back to the dashboard"
        );
    }
    Ok(Some(url))
}

/// Whether `COMO_SAGA_DEV_DEFAULTS` asks for the local defaults (`1` or `true`).
fn dev_defaults() -> bool {
    env(DEV_DEFAULTS_ENV).is_some_and(|v| matches!(v.trim(), "1" | "true"))
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid settings file", path.display()))
}

/// The venues of the simulators' seed data with their prices: what the local stack books.
pub fn demo_catalogue() -> VenueCatalogue {
    VenueCatalogue::new(como_simulators::seed::venues().into_iter().map(|v| {
        let per_guest = if v.id == como_simulators::seed::VENUE_SMALL {
            1_500
        } else {
            600
        };
        (
            v.id.to_string(),
            VenuePrice {
                credits_per_guest: per_guest,
            },
        )
    }))
}

pub use como_schemas::time::parse_duration;
