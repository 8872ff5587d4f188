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

/// What only the AWS backend shows: a value written by `swap` has no TTL attribute (it must
/// outlive `record_retention`), while a recorded reply has one; each swap, refused or not, is
/// one counted `PutItem (swap)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_value_never_expires_and_a_record_does() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use como_backend_aws::names;

    let (backend, sdk) = testing::fresh("swap-ttl", AwsConfig::default())
        .await
        .expect("a fresh deployment on moto");
    let records = backend.ports().records;
    backend.reset_api_calls();
    assert!(records.swap("health/ttl", None, "v1").await.unwrap());
    assert!(records.swap("health/ttl", Some("v1"), "v2").await.unwrap());
    assert!(!records.swap("health/ttl", Some("v1"), "v3").await.unwrap());
    records
        .complete(Some(("cmd-ttl", "reply")), vec![], None)
        .await
        .unwrap();
    let swaps = backend
        .api_calls()
        .iter()
        .find(|c| c.service == "dynamodb" && c.operation == "PutItem (swap)")
        .map_or(0, |c| c.count);
    assert_eq!(swaps, 3, "every swap is counted, refused or not");

    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let item = |pk: &'static str| {
        let (dynamo, table) = (dynamo.clone(), backend.names().table());
        async move {
            dynamo
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(pk.into()))
                .key("sk", AttributeValue::S("R".into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item()
                .cloned()
                .expect("the item")
        }
    };
    let swapped = item("R#health/ttl").await;
    assert_eq!(swapped.get("val"), Some(&AttributeValue::S("v2".into())));
    assert!(
        !swapped.contains_key(names::TTL_ATTRIBUTE),
        "a swapped value has no TTL: {swapped:?}"
    );
    let recorded = item("R#cmd-ttl").await;
    assert!(
        recorded.contains_key(names::TTL_ATTRIBUTE),
        "a recorded reply expires: {recorded:?}"
    );
}
