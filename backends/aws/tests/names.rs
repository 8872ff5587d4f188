//! The Terraform and the backend spell every resource name the same way: `infra/modules/data/
//! names.tf` holds the Terraform's names, and this test compares them with `names.rs` (what
//! `como-saga infra bootstrap` and the backend use), rendering the Terraform's name templates
//! with a sample prefix. No other Terraform file builds a name of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use como_backend_aws::bootstrap::{DUE_INDEX_PROJECTION, STATUS_INDEX_PROJECTION};
use como_backend_aws::{AwsConfig, Names, names};
use como_ports::QueueName;

fn terraform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/modules/data")
}

/// `name = value` lines of a Terraform file, the value as written.
fn assignments(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn string(v: &str) -> String {
    v.trim().trim_matches('"').to_owned()
}

fn list(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(string)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The template in `{ for x in ... : x => "TEMPLATE" }` or `"TEMPLATE"`, rendered.
fn render(v: &str, prefix: &str, item: &str) -> String {
    let template = v.rsplit("=> ").next().unwrap_or(v);
    let template = template.trim().trim_end_matches('}').trim();
    let t = string(template)
        .replace("${var.prefix}", prefix)
        .replace("${local.dlq_suffix}", names::DLQ_SUFFIX)
        .replace("${local.table}", names::TABLE)
        .replace("${local.bus}", names::BUS)
        .replace("${local.booking_rule}", names::BOOKING_RULE);
    ["${q}", "${s}"]
        .iter()
        .fold(t, |t, var| t.replace(var, item))
}

#[test]
fn terraform_names_match_the_backend() {
    let text = std::fs::read_to_string(terraform_dir().join("names.tf")).unwrap();
    let tf = assignments(&text);
    let get = |k: &str| {
        tf.get(k)
            .unwrap_or_else(|| panic!("names.tf has no {k}"))
            .as_str()
    };

    let queues: Vec<&str> = QueueName::ALL.iter().map(|q| q.as_str()).collect();
    assert_eq!(list(get("queue_names")), queues);
    assert_eq!(string(get("dlq_suffix")), names::DLQ_SUFFIX);
    assert_eq!(string(get("table")), names::TABLE);
    assert_eq!(string(get("status_index")), names::STATUS_INDEX);
    assert_eq!(string(get("due_index")), names::DUE_INDEX);
    assert_eq!(string(get("ttl_attribute")), names::TTL_ATTRIBUTE);
    assert_eq!(
        list(get("status_index_projection")),
        STATUS_INDEX_PROJECTION
    );
    assert_eq!(list(get("due_index_projection")), DUE_INDEX_PROJECTION);
    assert_eq!(string(get("bus")), names::BUS);
    assert_eq!(string(get("booking_rule")), names::BOOKING_RULE);
    assert_eq!(string(get("booking_target_id")), names::BOOKING_TARGET_ID);
    assert_eq!(string(get("booking_source")), names::BOOKING_SOURCE);
    assert_eq!(
        string(get("booking_detail_type")),
        names::BOOKING_DETAIL_TYPE
    );
    assert_eq!(string(get("event_source")), names::EVENT_SOURCE);
    assert_eq!(list(get("secret_names")), names::SECRETS);
    assert_eq!(list(get("roles")), names::ROLES);

    // The full names, from the templates, for a sample prefix.
    let n = Names::new("p");
    for q in QueueName::ALL {
        assert_eq!(render(get("queue"), "p", q.as_str()), n.queue(q));
        assert_eq!(render(get("dlq"), "p", q.as_str()), n.dead_letter_queue(q));
    }
    assert_eq!(render(get("table_name"), "p", ""), n.table());
    assert_eq!(render(get("bus_name"), "p", ""), n.bus());
    assert_eq!(render(get("rule_name"), "p", ""), n.booking_rule());
    for s in names::SECRETS {
        assert_eq!(render(get("secret"), "p", s), n.secret(s));
    }
}

#[test]
fn terraform_defaults_match_the_backend() {
    let text = std::fs::read_to_string(terraform_dir().join("variables.tf")).unwrap();
    let block = |name: &str| {
        let start = text
            .find(&format!("variable \"{name}\""))
            .unwrap_or_else(|| panic!("no variable {name}"));
        text[start..]
            .lines()
            .find_map(|l| l.trim().strip_prefix("default"))
            .and_then(|rest| rest.trim().strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("variable {name} has no default"))
    };
    assert_eq!(string(&block("prefix")), names::DEFAULT_PREFIX);
    assert_eq!(
        block("max_receives").parse::<u32>().unwrap(),
        AwsConfig::default().max_receives
    );
}

#[test]
fn only_names_tf_builds_names() {
    let own: Vec<String> = QueueName::ALL
        .iter()
        .map(|q| q.as_str().to_owned())
        .chain([names::TABLE, names::BUS, names::BOOKING_RULE].map(str::to_owned))
        .chain(names::SECRETS.map(str::to_owned))
        .collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(terraform_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("tf")
            || path.file_name().and_then(|n| n.to_str()) == Some("names.tf")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for name in &own {
            for built in [
                format!("${{var.prefix}}-{name}\""),
                format!("${{var.prefix}}/{name}\""),
            ] {
                assert!(
                    !text.contains(&built),
                    "{} builds the name {built}: use names.tf",
                    path.display()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "the Terraform files were not found");
}
