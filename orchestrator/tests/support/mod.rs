//! What the orchestrator's tests share: a real SQLite file on a manual clock, and the example
//! request's venue priced.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_orchestrator::{VenueCatalogue, VenuePrice};
use como_ports::{Backend, Delivery, ManualClock, QueueName};
use como_schemas::Timestamp;

pub const NOW: Timestamp = Timestamp::from_millis(1_790_000_000_000); // 2026-09-21

pub struct Rig {
    pub _dir: tempfile::TempDir,
    pub _backend: EmbeddedBackend,
    pub ports: Backend,
    pub clock: Arc<ManualClock>,
    pub catalogue: VenueCatalogue,
}

pub fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let backend = EmbeddedBackend::open(
        dir.path().join("o.sqlite"),
        EmbeddedConfig::default(),
        clock.clone(),
    )
    .unwrap();
    Rig {
        // Guests are sealed with a key of this test's own.
        ports: backend
            .ports()
            .with_vault(como_privacy::Keys::fixed(como_privacy::Keyring::generate())),
        _dir: dir,
        _backend: backend,
        clock,
        // The example request: 2 guests at 600 a guest = its quote of 1,200.
        catalogue: VenueCatalogue::new([(
            "como-cuisine".to_owned(),
            VenuePrice {
                credits_per_guest: 600,
            },
        )]),
    }
}

pub async fn next(ports: &Backend, queue: QueueName) -> Option<Delivery> {
    ports
        .queue
        .receive(queue, 1, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .pop()
}
