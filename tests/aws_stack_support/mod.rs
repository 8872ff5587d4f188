//! The whole application in-process on the AWS backend (through `como_app::App`, as every role
//! starts): both simulators on loopback, the orchestrator and both workers, against a fresh
//! deployment on this test binary's AWS-compatible server.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use como_app::settings::{BackendKind, Settings};
use como_app::{App, Observers, OpenBackend, Roles, Running, tokens};
use como_backend_aws::{AwsBackend, AwsConfig, testing};
use como_engine::{SagaState, StatusKind};
use como_orchestrator::{VenueCatalogue, VenuePrice};
use como_ports::Backend;
use como_schemas::{
    BookingRequested, Credits, MemberNo, PartySize, RequestId, SagaId, VenueId, examples,
};
use como_simulators::{SimConfig, SimHandle, Simulators, seed};
use tokio_util::sync::CancellationToken;

pub const PRICE_PER_GUEST: u64 = 600;

pub struct Stack {
    /// The application under test, on the AWS backend.
    app: App,
    /// Its own connection, for the tests' polling: its calls are not counted as the stack's.
    watcher: AwsBackend,
    pub sdk: aws_config::SdkConfig,
    pub ports: Backend,
    pub sim: SimHandle,
    pub shutdown: CancellationToken,
    running: Running,
}

pub fn catalogue() -> VenueCatalogue {
    VenueCatalogue::new([(
        seed::VENUE_LARGE.to_owned(),
        VenuePrice {
            credits_per_guest: PRICE_PER_GUEST,
        },
    )])
}

/// A booking that succeeds: a member who can pay, the large venue, two guests.
pub fn booking(id: &str, n: usize) -> BookingRequested {
    let date = chrono::Utc::now()
        .date_naive()
        .checked_add_days(Days::new(7 + (n % 50) as u64))
        .unwrap_or(NaiveDate::MAX);
    let mut r = examples::booking_request(id, date);
    r.request_id = RequestId::parse(id).unwrap();
    r.member_no = MemberNo::parse(seed::bulk_member_no(n % 1000)).unwrap();
    r.venue_id = VenueId::parse(seed::VENUE_LARGE).unwrap();
    r.party_size = PartySize::new(2).unwrap();
    r.quoted_credits = Credits::new(2 * PRICE_PER_GUEST).unwrap();
    r
}

/// The application on a fresh deployment on this test binary's AWS-compatible server, with
/// every role, against fresh simulators; `wrap` may put something between the backend's ports
/// and the roles.
pub async fn start(
    name: &str,
    config: AwsConfig,
    wrap: impl Fn(&AwsBackend, Backend) -> Backend,
) -> Stack {
    start_with(name, config, wrap, |app| app).await
}

/// [`start`], with `prepare` applied to the application before its roles start.
pub async fn start_with(
    name: &str,
    config: AwsConfig,
    wrap: impl Fn(&AwsBackend, Backend) -> Backend,
    prepare: impl FnOnce(App) -> App,
) -> Stack {
    let sim = Simulators::start(SimConfig::default()).await.unwrap();
    let (backend, sdk) = testing::fresh(name, config.clone()).await.unwrap();
    let watcher = AwsBackend::connect_with(
        &sdk,
        AwsConfig {
            prefix: backend.names().prefix().to_owned(),
            ..config
        },
    )
    .await
    .unwrap();
    let mut settings = Settings::local(std::path::PathBuf::new(), &sim);
    settings.backend = BackendKind::Aws;
    settings.aws_prefix = backend.names().prefix().to_owned();
    settings.venues = catalogue();
    let wrapped = wrap(&backend, backend.ports());
    // The data keys that seal the guests' contact: made in this deployment's secret.
    let app = App::on(settings, OpenBackend::of_aws(backend))
        .wrap_ports(|_| wrapped)
        .with_local_data_keys()
        .await
        .unwrap();
    let app = prepare(app);
    // The CRM worker reads its Memberson token from the secret store: put one there that these
    // simulators issued, as `up` does.
    tokens::ensure_token(app.settings(), app.ports().secrets.as_ref())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = app
        .spawn(&Roles::all(), &shutdown, Observers::default())
        .unwrap();
    Stack {
        ports: app.ports().clone(),
        app,
        watcher,
        sdk,
        sim,
        shutdown,
        running,
    }
}

impl Stack {
    /// The backend the roles run on.
    pub fn backend(&self) -> &AwsBackend {
        self.app.backend().aws().expect("the AWS backend")
    }

    /// Waits until every saga is finished or needs an operator; panics after `within`.
    pub async fn wait_finished(&self, ids: &[SagaId], within: Duration) -> Vec<SagaState> {
        let until = Instant::now() + within;
        loop {
            let mut done = Vec::new();
            for id in ids {
                if let Some(s) = self.watcher.ports().store.get(*id).await.unwrap() {
                    let k = s.value.status.kind();
                    if k.is_terminal() || k == StatusKind::NeedsOperator {
                        done.push(s.value);
                    }
                }
            }
            if done.len() == ids.len() {
                return done;
            }
            assert!(
                Instant::now() < until,
                "only {} of {} sagas finished in {within:?}",
                done.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.running.stopped(Duration::from_secs(30)).await;
        let _ = self.sim.shutdown().await;
    }
}
