//! The one assembly of como-saga: [`App::build`] turns [`Settings`] into an open backend, and
//! [`App::spawn`] starts the roles a process runs (the orchestrator, one worker or both, or
//! all of them) on it. Every way of starting the system goes through here: `como-saga up`, each
//! role's process (`orchestrator`, `worker`), `bench`, the processes `chaos` starts, and every
//! test that runs the system ([`spawn_app`] for the whole stack in-process on free ports, the
//! binary's roles for the tests that kill processes).
//!
//! Layout:
//! - [`settings`]: flags, environment and the settings file, resolved into [`Settings`]
//!   (production roles refuse to start on the simulators' credentials or the demo venues);
//! - [`stack`]: the pieces: the backend, the downstream clients with their circuit breakers
//!   and rate limits, the handlers, the orchestrator and the workers;
//! - this file: [`App`], [`Roles`], [`Running`], and [`spawn_app`].

pub mod experiences;
pub mod notify;
pub mod settings;
pub mod stack;
pub mod telemetry;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use como_orchestrator::runtime::OrchestratorStats;
use como_orchestrator::{LiveCatalogue, Observer, OrchestratorConfig};
use como_ports::Backend;
use como_schemas::Worker;
use como_simulators::{SimConfig, SimHandle, Simulators};
use como_workers::runtime::{DownstreamObserver, WorkerConfig, WorkerRuntime};
use tokio_util::sync::CancellationToken;

pub use settings::{BackendKind, Settings};
pub use stack::OpenBackend;

/// Which roles one process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub orchestrator: bool,
    pub workers: Vec<Worker>,
}

impl Roles {
    /// The orchestrator and every worker: the whole system in one process.
    pub fn all() -> Roles {
        Roles {
            orchestrator: true,
            workers: Worker::ALL.to_vec(),
        }
    }

    pub fn orchestrator() -> Roles {
        Roles {
            orchestrator: true,
            workers: Vec::new(),
        }
    }

    pub fn worker(worker: Worker) -> Roles {
        Roles {
            orchestrator: false,
            workers: vec![worker],
        }
    }
}

/// What a measuring caller (the benchmark) sees of the running roles.
#[derive(Clone, Default)]
pub struct Observers {
    /// Every stored transition.
    pub orchestrator: Option<Observer>,
    /// Every downstream call, with how long it took.
    pub workers: Option<DownstreamObserver>,
}

/// How long a role starting on the embedded backend waits for a lock another process holds.
pub const START_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Whether `e` is the embedded file's lock held by another process.
fn locked(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<como_backend_embedded::OpenError>())
        .any(como_backend_embedded::OpenError::is_locked)
}

/// The application: settings and the backend they name, ready to run roles.
pub struct App {
    settings: Settings,
    backend: OpenBackend,
    ports: Backend,
    orchestrator_config: OrchestratorConfig,
    worker_config: WorkerConfig,
    webhook: Option<notify::Webhook>,
    /// The venue catalogue this process follows in the store (see `como_orchestrator::catalogue`).
    catalogue: LiveCatalogue,
    following: Arc<std::sync::atomic::AtomicBool>,
    /// What a token rotation renews in this process: the workers' clients, the API's views.
    rotators: Arc<std::sync::Mutex<Rotators>>,
    /// The data keys, once read ([`App::with_data_keys`]): the ports' vault.
    keys: Option<Arc<como_privacy::Keys>>,
}

#[derive(Default)]
struct Rotators {
    handlers: Vec<Arc<dyn como_workers::handlers::CommandHandler>>,
    views: Vec<Arc<experiences::SevenRoomsViews>>,
}

impl App {
    /// Opens the backend that `settings` name (creating the embedded database on first use,
    /// or connecting to the AWS deployment). A role starting while another process holds the
    /// embedded file's lock (a backup, an operator's shell) waits for it, saying so, up to
    /// [`START_LOCK_WAIT`], rather than exiting.
    pub fn build(settings: Settings) -> anyhow::Result<App> {
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            match stack::open_backend(&settings) {
                Ok(backend) => {
                    if said {
                        tracing::warn!(
                            database = %settings.database.display(),
                            waited_s = started.elapsed().as_secs(),
                            "the database's lock is free again; starting"
                        );
                    }
                    return Ok(App::on(settings, backend));
                }
                Err(e) if locked(&e) && started.elapsed() < START_LOCK_WAIT => {
                    if !said {
                        tracing::warn!(
                            database = %settings.database.display(),
                            "another process holds the database's lock; waiting for it (up to {} s)",
                            START_LOCK_WAIT.as_secs()
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The application on a backend opened already (a test's fresh AWS deployment).
    pub fn on(settings: Settings, backend: OpenBackend) -> App {
        let retention = settings.retention;
        App {
            ports: backend.ports.clone(),
            webhook: settings.webhook.clone(),
            catalogue: LiveCatalogue::pending(settings.venues.clone()),
            following: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            rotators: Arc::default(),
            keys: None,
            settings,
            backend,
            orchestrator_config: OrchestratorConfig {
                retention,
                ..OrchestratorConfig::default()
            },
            worker_config: WorkerConfig::default(),
        }
    }

    /// The venue catalogue this process uses: the store's, followed in the store from the
    /// first call on (one task per process, until `shutdown`). With `seed` (a process that
    /// runs the orchestrator), the settings' venues become the store's when it has none.
    pub fn catalogue(&self, shutdown: &CancellationToken, seed: bool) -> LiveCatalogue {
        if !self
            .following
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::spawn(self.catalogue.clone().open_and_follow(
                self.ports.records.clone(),
                seed,
                shutdown.clone(),
            ));
        }
        self.catalogue.clone()
    }

    /// The application with its data keys read (made first, for the embedded backend's key
    /// file): the roles seal and open the guest's contact with them. A process that runs the
    /// orchestrator, the SevenRooms worker or the API needs them; the CRM worker does not.
    pub async fn with_data_keys(self) -> anyhow::Result<App> {
        self.data_keys_made(false).await
    }

    /// [`App::with_data_keys`], making them first wherever they are missing, the AWS secret
    /// too: for a local stack (`up`, tests, benchmarks), never a deployment's roles.
    pub async fn with_local_data_keys(self) -> anyhow::Result<App> {
        self.data_keys_made(true).await
    }

    async fn data_keys_made(mut self, make: bool) -> anyhow::Result<App> {
        let keys = stack::data_keys(&self.settings, &self.ports, make).await?;
        self.ports.vault = keys.clone();
        self.keys = Some(keys);
        Ok(self)
    }

    /// The data keys, once read.
    pub fn data_keys(&self) -> Option<&Arc<como_privacy::Keys>> {
        self.keys.as_ref()
    }

    /// Where the notifier (which runs with the orchestrator) delivers `SagaNeedsOperator`, in
    /// place of the settings' (`COMO_SAGA_WEBHOOK_URL`); without one, notifications are
    /// dropped (see [`notify`]).
    pub fn with_webhook(mut self, webhook: Option<notify::Webhook>) -> App {
        self.webhook = webhook;
        self
    }

    /// Puts something between the roles and the backend's ports (a test that records what
    /// the roles publish, or that injects faults below them).
    pub fn wrap_ports(mut self, wrap: impl FnOnce(Backend) -> Backend) -> App {
        self.ports = wrap(self.ports);
        self
    }

    /// How long the API's views of SevenRooms stay fresh, in place of the settings'.
    pub fn with_experience_ttls(mut self, ttls: settings::ExperienceTtls) -> App {
        self.settings.experiences = ttls;
        self
    }

    pub fn with_orchestrator_config(mut self, config: OrchestratorConfig) -> App {
        self.orchestrator_config = config;
        self
    }

    pub fn with_worker_config(mut self, config: WorkerConfig) -> App {
        self.worker_config = config;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The ports the roles run on.
    pub fn ports(&self) -> &Backend {
        &self.ports
    }

    pub fn backend(&self) -> &OpenBackend {
        &self.backend
    }

    /// Starts `roles` as tasks on the current runtime; they run until `shutdown` is
    /// cancelled. Fails, starting nothing, when a worker's downstream is not configured.
    pub fn spawn(
        &self,
        roles: &Roles,
        shutdown: &CancellationToken,
        observers: Observers,
    ) -> anyhow::Result<Running> {
        let catalogue = (roles.orchestrator || roles.workers.contains(&Worker::Sevenrooms))
            .then(|| self.catalogue(shutdown, roles.orchestrator));
        let mut handlers = Vec::new();
        for &worker in &roles.workers {
            handlers.push((
                worker,
                stack::handler(
                    &self.settings,
                    worker,
                    &self.ports,
                    catalogue.clone().filter(|_| worker == Worker::Sevenrooms),
                )
                .with_context(|| format!("cannot start the {worker} worker"))?,
            ));
        }
        let mut running = Running {
            orchestrator: None,
            workers: Vec::new(),
            tasks: Vec::new(),
        };
        if let Some(keys) = &self.keys {
            // A rotation made elsewhere is learnt here within ten minutes (at once, from the
            // first value sealed with the new key).
            running.tasks.push(tokio::spawn(
                keys.clone()
                    .follow(como_privacy::RELOAD_EVERY, shutdown.clone()),
            ));
        }
        if let Some(catalogue) = catalogue.clone().filter(|_| roles.orchestrator) {
            let mut orchestrator = como_orchestrator::Orchestrator::new(
                self.ports.clone(),
                catalogue.clone(),
                self.orchestrator_config.clone(),
            );
            if let Some(observer) = &observers.orchestrator {
                orchestrator = orchestrator.with_observer(observer.clone());
            }
            running.orchestrator = Some(orchestrator.stats());
            // It prices its first request with the store's catalogue, not the settings'.
            let stop = shutdown.clone();
            running.tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = catalogue.opened() => orchestrator.run(stop).await,
                    _ = stop.cancelled() => {}
                }
            }));
            running.tasks.push(tokio::spawn(notify::run(
                self.ports.clone(),
                self.webhook.clone(),
                shutdown.clone(),
            )));
        }
        for (worker, handler) in handlers {
            self.rotators
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .handlers
                .push(handler.clone());
            let mut runtime =
                WorkerRuntime::new(self.ports.clone(), handler, self.worker_config.clone());
            if let Some(observer) = &observers.workers {
                runtime = runtime.with_observer(observer.clone());
            }
            running.workers.push((worker, runtime.clone()));
            // The SevenRooms worker routes each venue by the store's catalogue: it takes its
            // first command once that has been read.
            let opened = catalogue.clone().filter(|_| worker == Worker::Sevenrooms);
            let stop = shutdown.clone();
            running.tasks.push(tokio::spawn(async move {
                if let Some(catalogue) = opened {
                    tokio::select! {
                        _ = catalogue.opened() => {}
                        _ = stop.cancelled() => return,
                    }
                }
                runtime.run(stop).await
            }));
        }
        Ok(running)
    }

    /// The HTTP API on `listener`, checking tokens with `auth`, until `shutdown` is cancelled.
    /// It holds the ports it needs and nothing else (see `como_api`).
    ///
    /// `process`, when given (the roles this process runs, [`Running::metrics`]), is added to
    /// `/metrics`.
    pub fn serve_api(
        &self,
        listener: tokio::net::TcpListener,
        auth: &como_api::auth::AuthConfig,
        process: Option<como_api::metrics::ProcessMetrics>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
        let verifier = como_api::auth::Verifier::new(auth)
            .map_err(|e| anyhow::anyhow!("cannot check the API's tokens: {e}"))?;
        let state = como_api::ApiState::new(
            self.ports.clone(),
            verifier,
            self.catalogue(shutdown, false),
        )
        .map_err(anyhow::Error::msg)?;
        let state = match process {
            Some(metrics) => state.with_process_metrics(metrics),
            None => state,
        }
        .with_dashboard(como_api::dashboard::DashboardConfig {
            signin_url: self.settings.dashboard_signin_url.clone(),
        })
        .with_live(como_api::live::LiveConfig {
            every: self.settings.dashboard_refresh,
            idle_every: self
                .settings
                .dashboard_idle_refresh
                .map(|idle| idle.max(self.settings.dashboard_refresh)),
        });
        let state = match experiences::SevenRoomsViews::new(
            &self.settings,
            self.ports.records.clone(),
            self.ports.clock.clone(),
        )? {
            Some(source) => state.with_experiences(como_api::experiences::ExperienceCache::new(
                {
                    let source = Arc::new(source);
                    self.rotators
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .views
                        .push(source.clone());
                    source
                },
                como_api::experiences::CacheConfig {
                    details_ttl: self.settings.experiences.details,
                    availability_ttl: self.settings.experiences.availability,
                    ..como_api::experiences::CacheConfig::default()
                },
            )),
            None => state,
        };
        Ok(tokio::spawn(como_api::serve(
            listener,
            state,
            shutdown.clone(),
        )))
    }

    /// One token rotation, as `como-saga rotate-tokens` and `up`'s schedule do it: on the AWS
    /// backend the Memberson token secret (minted, tested, promoted: the workers read it
    /// again); then every downstream token this process holds (the workers' clients, the API's
    /// views) is taken anew. A call in flight with an old token that is refused retries once
    /// with the new one, so no view or booking fails because of a rotation.
    pub async fn rotate_tokens(&self) -> anyhow::Result<()> {
        rotate_with(&self.settings, &self.ports, &self.rotators).await
    }

    /// Rotates the tokens every `every` until `shutdown` (`up`'s schedule); a failed round is
    /// logged and tried again at the next.
    pub fn schedule_token_rotation(
        &self,
        every: Duration,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (settings, ports, rotators) = (
            self.settings.clone(),
            self.ports.clone(),
            self.rotators.clone(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut rounds = 0u64;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                rounds += 1;
                match rotate_with(&settings, &ports, &rotators).await {
                    Ok(()) => tracing::info!(round = rounds, "tokens rotated"),
                    Err(e) => {
                        tracing::warn!(round = rounds, error = %format!("{e:#}"), "token rotation failed; the current tokens stay; trying again at the next round")
                    }
                }
            }
        })
    }

    /// The local signing key of this application's database (made on first use): what `up`
    /// and `como-saga token` sign tokens with.
    pub fn local_key(&self) -> anyhow::Result<como_api::auth::LocalKey> {
        local_key(&self.settings)
    }

    /// Flushes and closes the backend (after the roles have stopped).
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// One token rotation (see [`App::rotate_tokens`]).
async fn rotate_with(
    settings: &Settings,
    ports: &Backend,
    rotators: &std::sync::Mutex<Rotators>,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    if settings.backend == BackendKind::Aws
        && settings.memberson.base_url.is_some()
        && let Err(e) = tokens::rotate_once(
            settings,
            ports.secrets.as_ref(),
            como_simulators::seed::MEMBER_RICH,
        )
        .await
    {
        failed.push(format!("the Memberson token secret: {e:#}"));
    }
    let (handlers, views) = {
        let r = rotators.lock().unwrap_or_else(|e| e.into_inner());
        (r.handlers.clone(), r.views.clone())
    };
    let deadline = como_workers::clients::Deadline::after(Duration::from_secs(30));
    // Each token on its own: one that cannot be renewed now keeps its current token and does
    // not hold the others back.
    for handler in handlers {
        if let Err(e) = handler.rotate_tokens(deadline).await {
            failed.push(format!("the {} worker's token: {e}", handler.worker()));
        }
    }
    for view in views {
        if let Err(e) = view.rotate_tokens().await {
            failed.push(format!("the views' SevenRooms token: {e}"));
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!(failed.join("; "))),
    }
}

/// Where the local signing key of `settings`' database lives: next to it, readable by its
/// owner only.
pub fn local_key_path(settings: &Settings) -> PathBuf {
    let mut name = settings.database.as_os_str().to_owned();
    name.push(".api-key.pem");
    PathBuf::from(name)
}

/// The local signing key (made on first use).
pub fn local_key(settings: &Settings) -> anyhow::Result<como_api::auth::LocalKey> {
    como_api::auth::LocalKey::load_or_create(&local_key_path(settings)).map_err(anyhow::Error::msg)
}

/// The roles an [`App`] started.
pub struct Running {
    /// The orchestrator's counters, when it runs here.
    pub orchestrator: Option<Arc<OrchestratorStats>>,
    /// Each worker, for its counters and its downstream's circuit.
    pub workers: Vec<(Worker, WorkerRuntime)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Whether a role's loop has ended (before a shutdown, that is a failure).
    pub fn any_stopped(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }

    /// Whether every role's loop still runs, asked at any time (a health endpoint's check).
    pub fn liveness(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let handles: Vec<tokio::task::AbortHandle> =
            self.tasks.iter().map(|t| t.abort_handle()).collect();
        Arc::new(move || handles.iter().all(|h| !h.is_finished()))
    }

    /// The roles' counters and circuits, for `/metrics`, read at each scrape.
    pub fn metrics(&self) -> como_api::metrics::ProcessMetrics {
        use como_api::metrics::{Kind, Sample};
        let orchestrator = self.orchestrator.clone();
        let workers = self.workers.clone();
        Arc::new(move || {
            let mut out = Vec::new();
            let mut histograms = Vec::new();
            let mut push =
                |name: &str, help: &str, kind: Kind, labels: Vec<(&str, String)>, value: u64| {
                    out.push(Sample {
                        name: name.into(),
                        help: help.into(),
                        kind,
                        labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                        value: value as f64,
                        histogram: None,
                    });
                };
            if let Some(counts) = telemetry::span_counts()
                && como_ports::trace::enabled()
            {
                push(
                    "trace_spans_exported",
                    "Spans the collector took",
                    Kind::Counter,
                    vec![],
                    counts.exported(),
                );
                push(
                    "trace_spans_dropped",
                    "Spans dropped: the export queue was full or the collector did not take them",
                    Kind::Counter,
                    vec![],
                    counts.dropped(),
                );
            }
            if let Some(stats) = &orchestrator {
                let s = stats.snapshot();
                let help = "Inputs the orchestrator handled, by outcome";
                for (what, n) in [
                    ("started", s.started),
                    ("duplicate", s.duplicates),
                    ("rejected", s.rejected),
                    ("reply", s.replies),
                    ("error", s.errors),
                ] {
                    push(
                        "orchestrator_inputs",
                        help,
                        Kind::Counter,
                        vec![("outcome", what.into())],
                        n,
                    );
                }
                push(
                    "late_effects_undone",
                    "Effects that landed after their saga ended, found and undone by the audit",
                    Kind::Counter,
                    vec![],
                    s.late_effects_undone,
                );
                let steps = stats.steps.snapshot();
                for (step, kind, n) in steps.retries {
                    push(
                        "command_retries",
                        "Commands this orchestrator sent again (attempt 2 or later), by step and kind",
                        Kind::Counter,
                        vec![("step", step), ("command", kind)],
                        n,
                    );
                }
                for (step, n) in steps.compensations {
                    push(
                        "compensations",
                        "Compensations this orchestrator began (a step's first undo), by step",
                        Kind::Counter,
                        vec![("step", step)],
                        n,
                    );
                }
                let mut bounds: Vec<f64> = como_orchestrator::latency::BUCKETS_SECONDS.to_vec();
                bounds.push(f64::MAX);
                for (step, kind, h) in steps.latency {
                    histograms.push(Sample {
                        name: "step_latency_seconds".into(),
                        help: "From the commit that sent a command to the commit that applied its reply, by step and kind (this orchestrator's)".into(),
                        kind: Kind::Histogram,
                        labels: vec![("step".into(), step), ("command".into(), kind)],
                        value: 0.0,
                        histogram: Some(como_api::metrics::HistogramValue {
                            buckets: bounds.iter().copied().zip(h.buckets).collect(),
                            sum: h.sum_seconds,
                            count: h.count,
                        }),
                    });
                }
            }
            for (worker, runtime) in &workers {
                let s = runtime.snapshot();
                let w = worker.to_string();
                let help = "Commands a worker took, by what it did with them";
                for (what, n) in [
                    ("handled", s.handled),
                    ("replayed", s.replayed),
                    ("parked", s.parked),
                    ("expired", s.expired),
                    ("dead_lettered", s.dead_lettered),
                    ("error", s.errors),
                ] {
                    push(
                        "worker_commands",
                        help,
                        Kind::Counter,
                        vec![("worker", w.clone()), ("outcome", what.into())],
                        n,
                    );
                }
                push(
                    "worker_waiting_commands",
                    "Commands waiting now for their downstream (parked while its circuit is open)",
                    Kind::Gauge,
                    vec![("worker", w.clone())],
                    s.waiting,
                );
                if let Some(b) = &s.breaker {
                    let open = b.state != como_workers::breaker::BreakerState::Closed;
                    push(
                        "circuit_open",
                        "1 while a downstream's circuit is open (or half open), else 0",
                        Kind::Gauge,
                        vec![("downstream", worker.downstream().to_owned())],
                        u64::from(open),
                    );
                    push(
                        "circuit_opened",
                        "Times a downstream's circuit opened since the process started",
                        Kind::Counter,
                        vec![("downstream", worker.downstream().to_owned())],
                        b.opened_total,
                    );
                }
            }
            out.extend(histograms);
            out
        })
    }

    /// Waits for the roles to finish their batches after `shutdown` was cancelled, giving up
    /// on any still busy after `grace`. Fails when a role's loop panicked or did not stop.
    pub async fn stopped(self, grace: Duration) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for task in self.tasks {
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("a role's loop failed: {e}")),
                Err(_) => problems.push(format!("a role's loop was still busy after {grace:?}")),
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(problems.join("; "))),
        }
    }
}

/// How [`spawn_app`] starts the whole system.
#[derive(Default)]
pub struct SpawnOptions {
    /// The simulators' configuration (seed, faults, bulk members); their addresses are always
    /// free loopback ports.
    pub simulators: SimConfig,
    /// The embedded database; a fresh file in a temporary directory when not given.
    pub database: Option<PathBuf>,
    /// The venue catalogue; the demo's when not given.
    pub venues: Option<como_orchestrator::VenueCatalogue>,
    /// Quicker polling than production's, for tests that wait on every step.
    pub quick: bool,
}

/// The whole system running in this process: both simulators, the orchestrator and both
/// workers on the embedded backend. Dropping it without [`Spawned::stop`] leaves the tasks to
/// the runtime's end.
pub struct Spawned {
    pub app: App,
    /// The simulators: their addresses, credentials, ledgers and fault controls.
    pub sims: SimHandle,
    pub running: Running,
    pub shutdown: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

impl Spawned {
    pub fn ports(&self) -> &Backend {
        self.app.ports()
    }

    /// Stops the roles, closes the backend and stops the simulators. Fails when a role's
    /// loop panicked or would not stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let stopped = self.running.stopped(stack::SHUTDOWN_GRACE).await;
        self.app.close().await;
        self.sims
            .shutdown()
            .await
            .context("cannot stop the simulators")?;
        stopped
    }
}

/// Starts the whole system in this process, on free loopback ports: the simulators, then the
/// application on their addresses and credentials ([`Settings::local`]) with every role.
/// `prepare` may adjust the application before its roles start (wrap its ports, say).
pub async fn spawn_app(
    options: SpawnOptions,
    prepare: impl FnOnce(App) -> App,
) -> anyhow::Result<Spawned> {
    let sims = Simulators::start(options.simulators)
        .await
        .context("cannot start the simulators")?;
    let (database, dir) = match options.database {
        Some(path) => (path, None),
        None => {
            let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
            (dir.path().join("como-saga.sqlite"), Some(dir))
        }
    };
    let mut settings = Settings::local(database, &sims);
    if let Some(venues) = options.venues {
        settings.venues = venues;
    }
    let mut app = App::build(settings)?.with_local_data_keys().await?;
    if options.quick {
        app = app
            .with_orchestrator_config(OrchestratorConfig {
                poll_wait: Duration::from_millis(50),
                ..OrchestratorConfig::default()
            })
            .with_worker_config(WorkerConfig {
                poll_wait: Duration::from_millis(50),
                ..WorkerConfig::default()
            });
    }
    let app = prepare(app);
    let shutdown = CancellationToken::new();
    let running = app.spawn(&Roles::all(), &shutdown, Observers::default())?;
    Ok(Spawned {
        app,
        sims,
        running,
        shutdown,
        _dir: dir,
    })
}
