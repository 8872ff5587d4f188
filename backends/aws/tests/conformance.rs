//! The port conformance suites against the AWS backend on a local moto server (one server per
//! test binary, a fresh set of queues, table, bus and secrets per test under a unique
//! prefix). Time is real here: SQS counts visibility timeouts and delays on its own clock, so
//! `pass` sleeps.

use std::time::Duration;

use como_backend_aws::{AwsBackend, AwsConfig, EventSelection, testing};
use como_ports::Backend;
use como_ports::conformance::TestEnv;

/// Small, so that the dead-letter check receives only a few times.
const MAX_RECEIVES: u32 = 3;

struct Env {
    ports: Backend,
    _backend: AwsBackend,
}

impl TestEnv for Env {
    fn backend(&self) -> &Backend {
        &self.ports
    }

    async fn pass(&self, d: Duration) {
        // SQS counts whole seconds and moto compares with a strict "later than": a little
        // extra so that a moment that has come has come on the server too.
        tokio::time::sleep(d + Duration::from_millis(150)).await;
    }

    fn max_receives(&self) -> u32 {
        MAX_RECEIVES
    }
}

async fn env() -> Env {
    let config = AwsConfig {
        max_receives: MAX_RECEIVES,
        // The bus suite publishes every kind of event and reads them back.
        events: EventSelection::All,
        ..AwsConfig::default()
    };
    let (backend, _sdk) = testing::fresh("conformance", config)
        .await
        .expect("a fresh deployment on moto");
    Env {
        ports: backend.ports(),
        _backend: backend,
    }
}

como_ports::conformance_tests!(crate::env);
