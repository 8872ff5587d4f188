//! Shared set-up for the client tests: simulators on loopback and clients with millisecond
//! backoffs, so that fault scenarios run fast.

#![allow(dead_code)]

use std::time::Duration;

use como_simulators::{SimConfig, SimHandle, Simulators};
use como_workers::clients::memberson::{MembersonClient, MembersonSettings};
use como_workers::clients::sevenrooms::{SevenRoomsClient, SevenRoomsSettings};
use como_workers::clients::{CallPolicy, Deadline};

pub async fn start() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> SimHandle {
    Simulators::start(SimConfig {
        bulk_members: 10,
        ..config
    })
    .await
    .expect("simulators start")
}

/// Short timeouts and millisecond backoffs.
pub fn policy() -> CallPolicy {
    CallPolicy {
        attempt_timeout: Duration::from_millis(400),
        max_attempts: 6,
        min_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
        jitter: true,
    }
}

pub fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(10))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("http client")
}

pub fn memberson_settings(sim: &SimHandle, policy: CallPolicy) -> MembersonSettings {
    let mut settings =
        MembersonSettings::new(sim.memberson_url(), sim.memberson_credentials().clone());
    settings.policy = policy;
    settings
}

pub fn memberson(sim: &SimHandle, policy: CallPolicy) -> MembersonClient {
    MembersonClient::connect(http(), memberson_settings(sim, policy))
}

pub fn sevenrooms_settings(sim: &SimHandle, policy: CallPolicy) -> SevenRoomsSettings {
    let mut settings =
        SevenRoomsSettings::new(sim.sevenrooms_url(), sim.sevenrooms_credentials().clone());
    settings.policy = policy;
    settings
}

pub fn sevenrooms(sim: &SimHandle, policy: CallPolicy) -> SevenRoomsClient {
    SevenRoomsClient::connect(http(), sevenrooms_settings(sim, policy))
}
