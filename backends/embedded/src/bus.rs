//! The event bus on the event log (`events`) and `rejections`: publishing appends, once per
//! `event_id`, so a republished duplicate is dropped at the source.

use async_trait::async_trait;
use como_ports::{EventBus, PortError, PortResult};
use como_schemas::{BookingRejected, SagaEvent};

use crate::EmbeddedPorts;
use crate::codec::{self, db_error, json_error};
use crate::ops::Op;
use crate::store::event_row;

#[async_trait]
impl EventBus for EmbeddedPorts {
    async fn publish(&self, events: Vec<SagaEvent>) -> PortResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.iter().map(event_row).collect::<PortResult<_>>()?;
        self.writer.submit(Op::Publish { events }).await?.done()
    }

    async fn publish_rejection(&self, rejection: BookingRejected) -> PortResult<()> {
        let body = serde_json::to_string(&rejection)
            .map_err(|e| PortError::Invalid(format!("cannot encode the rejection: {e}")))?;
        self.writer
            .submit(Op::PublishRejection {
                event_id: rejection.event_id,
                at: rejection.at.as_millis(),
                body,
            })
            .await?
            .done()
    }

    async fn recent(&self, limit: usize) -> PortResult<Vec<SagaEvent>> {
        let limit = codec::limit(limit);
        self.readers
            .scan(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT body FROM events ORDER BY seq DESC LIMIT ?1")
                    .map_err(db_error)?;
                let mut rows = stmt.query([limit]).map_err(db_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let body: String = row.get(0).map_err(db_error)?;
                    out.push(serde_json::from_str(&body).map_err(json_error("event"))?);
                }
                out.reverse();
                Ok(out)
            })
            .await
    }
}
