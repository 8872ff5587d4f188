//! Local simulators of the Memberson CRM and SevenRooms APIs, with seeded fault injection and
//! ledgers readable over HTTP.
//!
//! Layout:
//! - [`Simulators::start`] binds both simulators (in-process, on loopback by default) and returns a
//!   [`SimHandle`]: base URLs, credentials, typed ledger snapshots, fault control, the clock, and
//!   a graceful shutdown. `como-saga simulators` runs the same thing as a process.
//! - [`memberson`] and [`sevenrooms`]: the two APIs, as `downstreams.md` specifies them.
//! - [`faults`]: the fault rules (latency, hangs, 5xx, 429, commit-then-fail, late effects,
//!   token expiry, outages, business refusals), decided per request from a seed. Every request
//!   is handled in a task detached from its connection, so that what a simulator has begun is
//!   finished even when the client has gone.
//! - [`ledger`]: what each system has done, as `GET /_sim/ledger` serves it.
//! - [`requests`]: every API request each simulator received, when, and what it was answered,
//!   with the peak rate over a sliding window (`GET /_sim/requests`, `GET /_sim/requests/rate`).
//! - [`seed`]: the members and venues the simulators start with.
//! - [`clock`]: simulated time that tests can move forward (holds and tokens expire).
//!
//! The admin routes under each base URL (`/_sim/ledger`, `/_sim/faults`, ...) are described in
//! the crate's README.

// Handlers return `Result<_, Response>` where the error is the HTTP answer itself; boxing it
// would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub mod aws_proxy;
pub mod clock;
mod common;
pub mod faults;
pub mod invariant;
pub mod ledger;
pub mod memberson;
pub mod requests;
pub mod seed;
pub mod sevenrooms;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use clock::SimClock;
pub use common::Stats;
pub use faults::{FaultError, FaultKind, FaultRule, FaultsFile, InstalledRule};
pub use ledger::{Ledger, MembersonLedger, SevenRoomsLedger};
pub use memberson::{MembersonConfig, MembersonCredentials};
pub use requests::{LoggedRequest, RequestFilter, RequestRate, RequestsPage};
pub use sevenrooms::{SevenRoomsConfig, SevenRoomsCredentials};

use common::Common;
use memberson::Memberson;
use sevenrooms::SevenRooms;

/// Which simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Downstream {
    Memberson,
    SevenRooms,
}

/// Where the simulators listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Each simulator on its own address; base URLs are `http://ADDR`.
    Separate {
        memberson: SocketAddr,
        sevenrooms: SocketAddr,
    },
    /// Both on one address, under `/memberson` and `/sevenrooms`.
    Shared(SocketAddr),
}

impl Default for Listen {
    fn default() -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Listen::Separate {
            memberson: any_port,
            sevenrooms: any_port,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: Listen,
    /// Seed of every random fault decision.
    pub seed: u64,
    pub memberson: MembersonConfig,
    pub sevenrooms: SevenRoomsConfig,
    /// Fault rules installed at start-up.
    pub faults: FaultsFile,
    /// Extra active members with large balances, for load (see [`seed::bulk_member_no`]).
    pub bulk_members: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            seed: 0,
            memberson: MembersonConfig::default(),
            sevenrooms: SevenRoomsConfig::default(),
            faults: FaultsFile::default(),
            bulk_members: 1000,
        }
    }
}

/// Why the simulators could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid start-up faults for {downstream:?}")]
    Faults {
        downstream: Downstream,
        #[source]
        source: FaultError,
    },
    #[error("a simulator server failed")]
    Serve(#[source] std::io::Error),
    #[error("a simulator server task panicked or was cancelled")]
    Join(#[source] tokio::task::JoinError),
}

/// Starts the simulators.
pub struct Simulators;

impl Simulators {
    /// Binds and serves both simulators on the current tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let clock = SimClock::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let memberson = Arc::new(Memberson::new(
            Common::new(
                config.seed,
                memberson::OPS,
                memberson::WRITE_OPS,
                memberson::REFUSALS,
                clock.clone(),
                shutdown_rx.clone(),
            ),
            config.memberson.clone(),
            seed::members(config.bulk_members),
        ));
        memberson
            .common()
            .faults
            .set(config.faults.memberson.clone())
            .map_err(|source| SimError::Faults {
                downstream: Downstream::Memberson,
                source,
            })?;
        let sevenrooms = Arc::new(SevenRooms::new(
            Common::new(
                // Distinct streams for the two simulators under one seed.
                config.seed ^ 0x5EED_0007_0000,
                sevenrooms::OPS,
                sevenrooms::WRITE_OPS,
                sevenrooms::REFUSALS,
                clock.clone(),
                shutdown_rx.clone(),
            ),
            config.sevenrooms.clone(),
            seed::venues(),
        ));
        Simulated::common(sevenrooms.as_ref())
            .faults
            .set(config.faults.sevenrooms.clone())
            .map_err(|source| SimError::Faults {
                downstream: Downstream::SevenRooms,
                source,
            })?;

        let m_router = memberson.clone().router();
        let s_router = sevenrooms.clone().router();
        let mut servers = Vec::new();
        let (memberson_url, sevenrooms_url) = match config.listen {
            Listen::Separate {
                memberson: m_addr,
                sevenrooms: s_addr,
            } => {
                let m = serve(m_addr, m_router, shutdown_rx.clone()).await?;
                let s = serve(s_addr, s_router, shutdown_rx.clone()).await?;
                servers.push(m.1);
                servers.push(s.1);
                (format!("http://{}", m.0), format!("http://{}", s.0))
            }
            Listen::Shared(addr) => {
                let router = Router::new()
                    .nest("/memberson", m_router)
                    .nest("/sevenrooms", s_router);
                let (bound, task) = serve(addr, router, shutdown_rx.clone()).await?;
                servers.push(task);
                (
                    format!("http://{bound}/memberson"),
                    format!("http://{bound}/sevenrooms"),
                )
            }
        };
        Ok(SimHandle {
            memberson_url,
            sevenrooms_url,
            config,
            memberson,
            sevenrooms,
            clock,
            shutdown,
            servers,
        })
    }
}

use common::Simulated;

async fn serve(
    addr: SocketAddr,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    // Small request/response pairs: Nagle's algorithm would add delay to every round trip.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok((bound, task))
}

/// Running simulators. Dropping the handle stops them without waiting.
pub struct SimHandle {
    memberson_url: String,
    sevenrooms_url: String,
    config: SimConfig,
    memberson: Arc<Memberson>,
    sevenrooms: Arc<SevenRooms>,
    clock: SimClock,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// Memberson's base URL (no trailing slash), e.g. `http://127.0.0.1:41234`.
    pub fn memberson_url(&self) -> &str {
        &self.memberson_url
    }

    /// SevenRooms' base URL (no trailing slash).
    pub fn sevenrooms_url(&self) -> &str {
        &self.sevenrooms_url
    }

    pub fn url(&self, downstream: Downstream) -> &str {
        match downstream {
            Downstream::Memberson => &self.memberson_url,
            Downstream::SevenRooms => &self.sevenrooms_url,
        }
    }

    pub fn memberson_credentials(&self) -> &MembersonCredentials {
        &self.config.memberson.credentials
    }

    pub fn sevenrooms_credentials(&self) -> &SevenRoomsCredentials {
        &self.config.sevenrooms.credentials
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn common(&self, downstream: Downstream) -> &Common {
        match downstream {
            Downstream::Memberson => self.memberson.common(),
            Downstream::SevenRooms => Simulated::common(self.sevenrooms.as_ref()),
        }
    }

    /// Both ledgers (each taken under its own lock, one after the other).
    pub fn ledger(&self) -> Ledger {
        Ledger {
            memberson: self.memberson.snapshot(),
            sevenrooms: self.sevenrooms.snapshot(),
        }
    }

    pub fn memberson_ledger(&self) -> MembersonLedger {
        self.memberson.snapshot()
    }

    pub fn sevenrooms_ledger(&self) -> SevenRoomsLedger {
        self.sevenrooms.snapshot()
    }

    /// Replaces the fault rules of one simulator.
    pub fn set_faults(
        &self,
        downstream: Downstream,
        rules: Vec<FaultRule>,
    ) -> Result<(), FaultError> {
        self.common(downstream).faults.set(rules)
    }

    /// Adds fault rules to one simulator, keeping the others.
    pub fn add_faults(
        &self,
        downstream: Downstream,
        rules: Vec<FaultRule>,
    ) -> Result<(), FaultError> {
        self.common(downstream).faults.add(rules)
    }

    pub fn clear_faults(&self, downstream: Downstream) {
        // An empty set is always valid.
        let _ = self.common(downstream).faults.set(Vec::new());
    }

    pub fn faults(&self, downstream: Downstream) -> Vec<InstalledRule> {
        self.common(downstream).faults.installed()
    }

    pub fn stats(&self, downstream: Downstream) -> Stats {
        self.common(downstream).stats()
    }

    /// The API requests one simulator has received that match `filter`, oldest first, as
    /// `GET /_sim/requests` serves them.
    pub fn requests(&self, downstream: Downstream, filter: &RequestFilter) -> RequestsPage {
        self.common(downstream).log.page(filter)
    }

    /// The most requests matching `filter` that arrived within any `window` (sliding over the
    /// arrival times), as `GET /_sim/requests/rate` serves it.
    pub fn request_rate(
        &self,
        downstream: Downstream,
        filter: &RequestFilter,
        window: Duration,
    ) -> RequestRate {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.common(downstream).log.rate(filter, window_ms)
    }

    /// Revokes every token the simulator has issued.
    pub fn expire_tokens(&self, downstream: Downstream) {
        match downstream {
            Downstream::Memberson => self.memberson.expire_all_tokens(),
            Downstream::SevenRooms => self.sevenrooms.expire_all_tokens(),
        }
    }

    /// The clock both simulators share.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Stops accepting, ends hanging requests, lets in-flight ones finish, and waits for the
    /// servers to stop.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.servers) {
            task.await
                .map_err(SimError::Join)?
                .map_err(SimError::Serve)?;
        }
        Ok(())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
