//! The whole stack in-process on the AWS backend: both simulators on loopback, the
//! orchestrator and both workers, against a fresh deployment on this test binary's moto server.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use como_backend_aws::{AwsBackend, AwsConfig, testing};
use como_engine::{SagaState, StatusKind};
use como_orchestrator::{Orchestrator, OrchestratorConfig, VenueCatalogue, VenuePrice};
use como_ports::Backend;
use como_schemas::{
    BookingRequested, Credits, MemberNo, PartySize, RequestId, SagaId, VenueId, Worker, examples,
};
use como_simulators::{SimConfig, SimHandle, Simulators, seed};
use como_workers::clients::memberson::{MembersonClient, MembersonCredentials, MembersonSettings};
use como_workers::clients::sevenrooms::{
    SevenRoomsClient, SevenRoomsCredentials, SevenRoomsSettings,
};
use como_workers::handlers::{CommandHandler, CrmHandler, SevenRoomsHandler};
use como_workers::runtime::{WorkerConfig, WorkerRuntime};
use tokio_util::sync::CancellationToken;

pub const PRICE_PER_GUEST: u64 = 600;

pub struct Stack {
    pub backend: AwsBackend,
    /// Its own connection, for the tests' polling: its calls are not counted as the stack's.
    watcher: AwsBackend,
    pub sdk: aws_config::SdkConfig,
    pub ports: Backend,
    pub sim: SimHandle,
    pub shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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

/// `ports` with the stack's handlers; `wrap` may put something between them and the runtime.
pub async fn start(
    name: &str,
    config: AwsConfig,
    wrap: impl Fn(&AwsBackend, Backend) -> Backend,
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
    let ports = wrap(&backend, backend.ports());
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let orchestrator = Orchestrator::new(ports.clone(), catalogue(), OrchestratorConfig::default());
    tasks.push(tokio::spawn(orchestrator.run(shutdown.clone())));
    for worker in Worker::ALL {
        let runtime = WorkerRuntime::new(
            ports.clone(),
            handler(&sim, worker),
            WorkerConfig::default(),
        );
        tasks.push(tokio::spawn(runtime.run(shutdown.clone())));
    }
    Stack {
        backend,
        watcher,
        sdk,
        ports,
        sim,
        shutdown,
        tasks,
    }
}

fn handler(sim: &SimHandle, worker: Worker) -> Arc<dyn CommandHandler> {
    let http = reqwest_client();
    match worker {
        Worker::Crm => {
            let c = sim.memberson_credentials();
            let credentials = MembersonCredentials {
                svc_auth: c.svc_auth.clone().into(),
                username: c.username.clone(),
                password: c.password.clone().into(),
            };
            let client = MembersonClient::connect(
                http,
                MembersonSettings::new(sim.memberson_url(), credentials),
            );
            Arc::new(CrmHandler { client })
        }
        Worker::Sevenrooms => {
            let c = sim.sevenrooms_credentials();
            let credentials = SevenRoomsCredentials {
                client_id: c.client_id.clone(),
                client_secret: c.client_secret.clone().into(),
            };
            let client = SevenRoomsClient::connect(
                http,
                SevenRoomsSettings::new(sim.sevenrooms_url(), credentials),
            );
            Arc::new(SevenRoomsHandler {
                client,
                hold_seconds: 300,
            })
        }
    }
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

impl Stack {
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
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = self.sim.shutdown().await;
    }
}
