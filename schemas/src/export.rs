//! The JSON Schema files under `schemas/json/`, generated from the Rust types.
//!
//! The files are the contract for anyone outside this codebase. `como-saga schemas export`
//! writes them; the `schema_files_match_types` test fails when they drift from the types.

use std::path::Path;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::{BookingRejected, BookingRequested, SagaEvent, WorkerCommand, WorkerReply};

/// One message type and the file its schema lives in.
pub struct SchemaFile {
    pub file_name: &'static str,
    pub generate: fn() -> Schema,
}

fn generate<T: JsonSchema>() -> Schema {
    SchemaGenerator::default().into_root_schema_for::<T>()
}

/// Every message that crosses a process boundary.
pub const SCHEMA_FILES: &[SchemaFile] = &[
    SchemaFile {
        file_name: "booking-requested.schema.json",
        generate: generate::<BookingRequested>,
    },
    SchemaFile {
        file_name: "booking-rejected.schema.json",
        generate: generate::<BookingRejected>,
    },
    SchemaFile {
        file_name: "worker-command.schema.json",
        generate: generate::<WorkerCommand>,
    },
    SchemaFile {
        file_name: "worker-reply.schema.json",
        generate: generate::<WorkerReply>,
    },
    SchemaFile {
        file_name: "saga-event.schema.json",
        generate: generate::<SagaEvent>,
    },
];

/// The text of a schema file as it is checked in: pretty JSON and a final newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema)
        .unwrap_or_else(|e| unreachable!("a schema is plain JSON: {e}"));
    text.push('\n');
    text
}

/// Write every schema file into `dir`; returns the names of the files whose content changed.
pub fn export_all(dir: &Path) -> std::io::Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir)?;
    let mut changed = Vec::new();
    for file in SCHEMA_FILES {
        let path = dir.join(file.file_name);
        let text = render(&(file.generate)());
        let old = std::fs::read_to_string(&path).ok();
        if old.as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
            changed.push(file.file_name);
        }
    }
    Ok(changed)
}

/// The directory the files are checked in to.
pub fn checked_in_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/json"))
}
