//! The secret store on Secrets Manager: the port's current and pending versions are the
//! `AWSCURRENT` and `AWSPENDING` staging labels, as in Secrets Manager's own rotation; a
//! promotion moves `AWSCURRENT` (Secrets Manager then labels the old version `AWSPREVIOUS`)
//! and takes `AWSPENDING` off. Port names map to `<prefix>/<name>`.
//!
//! Secrets Manager makes the first version of a secret `AWSCURRENT` whatever labels it is put
//! with, so a secret that has no value yet gets a placeholder first version ([`NO_VALUE`]),
//! which reads as "no current version": a pending version then stays pending until promoted.

use async_trait::async_trait;
use como_ports::{PortError, PortResult, SecretStore, SecretVersion};

use crate::AwsPorts;
use crate::error::{code, unavailable};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";
/// The value of a secret's placeholder first version.
pub const NO_VALUE: &str = "como-saga: no value yet";

fn not_found(c: Option<&str>) -> bool {
    c == Some("ResourceNotFoundException")
}

impl AwsPorts {
    /// Give a secret without a current version its placeholder first version, creating the
    /// secret if there is none (Terraform creates them; a rotation role may not create).
    async fn placeholder(&self, name: &str) -> PortResult<()> {
        self.clients.calls.count("secretsmanager", "PutSecretValue");
        match self
            .clients
            .secrets
            .put_secret_value()
            .secret_id(self.names.secret(name))
            .secret_string(NO_VALUE)
            .version_stages(CURRENT)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if not_found(code(&e)) => {}
            Err(e) => {
                return Err(unavailable(
                    &format!(
                        "Secrets Manager PutSecretValue on secret {}",
                        self.names.secret(name)
                    ),
                    e,
                ));
            }
        }
        self.clients.calls.count("secretsmanager", "CreateSecret");
        match self
            .clients
            .secrets
            .create_secret()
            .name(self.names.secret(name))
            .secret_string(NO_VALUE)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Created beside us: it has its first version now.
            Err(e) if code(&e) == Some("ResourceExistsException") => Ok(()),
            Err(e) => Err(unavailable(
                &format!(
                    "Secrets Manager CreateSecret on secret {}",
                    self.names.secret(name)
                ),
                e,
            )),
        }
    }

    async fn version_at(&self, name: &str, stage: &str) -> PortResult<Option<SecretVersion>> {
        self.clients.calls.count("secretsmanager", "GetSecretValue");
        match self
            .clients
            .secrets
            .get_secret_value()
            .secret_id(self.names.secret(name))
            .version_stage(stage)
            .send()
            .await
        {
            Ok(out) => match (out.version_id(), out.secret_string()) {
                (Some(id), Some(value)) => Ok(Some(SecretVersion {
                    version_id: id.to_owned(),
                    value: value.to_owned(),
                })),
                _ => Err(PortError::Corrupt(format!(
                    "secret {name} ({stage}) has no version id or no text value"
                ))),
            },
            // No such secret, or no version with this label.
            Err(e) if not_found(code(&e)) => Ok(None),
            Err(e) => Err(unavailable(
                &format!(
                    "Secrets Manager GetSecretValue on secret {}",
                    self.names.secret(name)
                ),
                e,
            )),
        }
    }

    async fn stage(
        &self,
        name: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> PortResult<()> {
        self.clients
            .calls
            .count("secretsmanager", "UpdateSecretVersionStage");
        self.clients
            .secrets
            .update_secret_version_stage()
            .secret_id(self.names.secret(name))
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_owned))
            .set_remove_from_version_id(remove_from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    &format!(
                        "Secrets Manager UpdateSecretVersionStage on secret {}",
                        self.names.secret(name)
                    ),
                    e,
                )
            })?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for AwsPorts {
    async fn current(&self, name: &str) -> PortResult<Option<SecretVersion>> {
        Ok(self
            .version_at(name, CURRENT)
            .await?
            .filter(|v| v.value != NO_VALUE))
    }

    async fn put_pending(&self, name: &str, value: &str) -> PortResult<String> {
        if self.version_at(name, CURRENT).await?.is_none() {
            self.placeholder(name).await?;
        }
        let version = uuid::Uuid::new_v4().to_string();
        for _ in 0..2 {
            self.clients.calls.count("secretsmanager", "PutSecretValue");
            match self
                .clients
                .secrets
                .put_secret_value()
                .secret_id(self.names.secret(name))
                .client_request_token(&version)
                .secret_string(value)
                .version_stages(PENDING)
                .send()
                .await
            {
                Ok(_) => return Ok(version),
                Err(e) if not_found(code(&e)) => self.placeholder(name).await?,
                Err(e) => {
                    return Err(unavailable(
                        &format!(
                            "Secrets Manager PutSecretValue on secret {}",
                            self.names.secret(name)
                        ),
                        e,
                    ));
                }
            }
        }
        Err(PortError::Unavailable(format!(
            "secret {name}: created, but the pending version could not be stored"
        )))
    }

    async fn pending(&self, name: &str) -> PortResult<Option<SecretVersion>> {
        self.version_at(name, PENDING).await
    }

    async fn promote(&self, name: &str, version_id: &str) -> PortResult<()> {
        self.clients.calls.count("secretsmanager", "DescribeSecret");
        let described = match self
            .clients
            .secrets
            .describe_secret()
            .secret_id(self.names.secret(name))
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) if not_found(code(&e)) => {
                return Err(PortError::Invalid(format!("no secret {name}")));
            }
            Err(e) => {
                return Err(unavailable(
                    &format!(
                        "Secrets Manager DescribeSecret on secret {}",
                        self.names.secret(name)
                    ),
                    e,
                ));
            }
        };
        let stages = described.version_ids_to_stages();
        let Some(labels) = stages.and_then(|s| s.get(version_id)) else {
            return Err(PortError::Invalid(format!(
                "secret {name} has no version {version_id}"
            )));
        };
        let has = |label: &str| labels.iter().any(|l| l == label);
        if !has(CURRENT) {
            let current = stages.and_then(|s| {
                s.iter()
                    .find(|(_, l)| l.iter().any(|l| l == CURRENT))
                    .map(|(v, _)| v.clone())
            });
            self.stage(name, CURRENT, Some(version_id), current.as_deref())
                .await?;
        }
        if has(PENDING) {
            self.stage(name, PENDING, None, Some(version_id)).await?;
        }
        Ok(())
    }
}
