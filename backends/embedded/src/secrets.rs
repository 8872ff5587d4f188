//! The secret store on the `secrets` table, with Secrets Manager's stages: one `current`
//! version, at most one `pending` (replaced by a newer one), and the `previous` current kept
//! for a rollback. The values sit in the file in clear: the embedded backend is for one
//! machine, whose file permissions guard it.

use async_trait::async_trait;
use como_ports::{PortResult, SecretStore, SecretVersion};
use rusqlite::OptionalExtension;

use crate::EmbeddedPorts;
use crate::codec::db_error;
use crate::ops::Op;

impl EmbeddedPorts {
    fn staged(&self, name: &str, stage: &str) -> PortResult<Option<SecretVersion>> {
        self.readers.point(|conn| {
            conn.prepare_cached(
                "SELECT version_id, value FROM secrets WHERE name = ?1 AND stage = ?2",
            )
            .and_then(|mut s| {
                s.query_row([name, stage], |r| {
                    Ok(SecretVersion {
                        version_id: r.get(0)?,
                        value: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db_error)
        })
    }
}

#[async_trait]
impl SecretStore for EmbeddedPorts {
    async fn current(&self, name: &str) -> PortResult<Option<SecretVersion>> {
        self.staged(name, "current")
    }

    async fn put_pending(&self, name: &str, value: &str) -> PortResult<String> {
        let version_id = uuid::Uuid::new_v4().to_string();
        self.writer
            .submit(Op::PutPending {
                name: name.to_owned(),
                version_id: version_id.clone(),
                value: value.to_owned(),
            })
            .await?
            .done()?;
        Ok(version_id)
    }

    async fn pending(&self, name: &str) -> PortResult<Option<SecretVersion>> {
        self.staged(name, "pending")
    }

    async fn promote(&self, name: &str, version_id: &str) -> PortResult<()> {
        self.writer
            .submit(Op::Promote {
                name: name.to_owned(),
                version_id: version_id.to_owned(),
            })
            .await?
            .done()
    }
}
