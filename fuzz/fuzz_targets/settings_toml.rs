//! The TOML settings file, read by the command line's own module (`app/src/settings.rs`,
//! compiled here by path) through `Settings::load`, as every role reads it. Whatever it accepts
//! says what the file says: the backend, the rate limits and the venue catalogue; whatever it
//! refuses names the file.
#![no_main]

#[allow(dead_code)]
#[path = "../../app/src/settings.rs"]
mod settings;

/// What the settings module names of the notifier (`app/src/notify.rs`): the webhook.
#[allow(dead_code)]
mod notify {
    #[derive(Debug, Clone)]
    pub struct Webhook {
        pub url: String,
        pub secret: secrecy::SecretString,
    }
}

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use settings::{BackendKind, CommonArgs, DownstreamArgs, Settings};

fn path() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "como-saga-fuzz-settings-{}.toml",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).unwrap();
    let common = CommonArgs {
        backend: None,
        database: None,
        config: Some(path().to_owned()),
        aws_prefix: None,
    };
    let settings = match Settings::load(&common, &DownstreamArgs::default()) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                e.to_string().contains(&path().display().to_string()),
                "{e:#}"
            );
            return;
        }
    };
    let text = std::str::from_utf8(data).expect("an accepted file is text");
    let table: toml::Table = text.parse().expect("an accepted file is TOML");
    match table.get("backend").and_then(|b| b.as_str()) {
        Some("aws") => assert_eq!(settings.backend, BackendKind::Aws),
        Some(_) => assert_eq!(settings.backend, BackendKind::Embedded),
        None => assert_eq!(settings.backend, BackendKind::Embedded),
    }
    let rate = |section: &str| {
        table
            .get(section)
            .and_then(|s| s.get("rate_limit_per_second"))
            .and_then(|r| r.as_integer())
    };
    if let Some(r) = rate("memberson") {
        assert_eq!(i64::from(settings.memberson.rate_limit.per_second), r);
    }
    if let Some(r) = rate("sevenrooms") {
        assert_eq!(i64::from(settings.sevenrooms.rate_limit.per_second), r);
    }
    if let Some(venues) = table.get("venues").and_then(|v| v.as_table()) {
        let read: Vec<(String, i64)> = settings
            .venues
            .venues()
            .map(|(id, p)| (id.to_owned(), p.credits_per_guest as i64))
            .collect();
        let written: Vec<(String, i64)> = venues
            .iter()
            .map(|(id, p)| {
                let price = p
                    .get("credits_per_guest")
                    .and_then(|c| c.as_integer())
                    .unwrap();
                (id.clone(), price)
            })
            .collect();
        assert_eq!(read, written);
    }
});
