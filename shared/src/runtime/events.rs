//! Domain events and their transactional outbox.
//!
//! A state change writes its event into the outbox in the same DynamoDB transaction as the change
//! (so an event exists exactly when its change does), then publishes it to the events queue and
//! marks it published. When the publish fails after the write, the event stays pending and the
//! scheduled [`relay`] publishes it later: none is lost. Publishing is at least once; consumers
//! deduplicate by event id. The bus knows nothing of its consumers: the functions catalogue
//! (`functions.rs`) wires them to the events queue.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use serde_json::{Value, json};

use crate::runtime::jobs::QueueError;
pub use crate::store::outbox::DomainEvent;
use crate::{ApiError, Context};

/// Event types, as subscribers see them.
pub const USER_REGISTERED: &str = "user.registered";

/// Publishes events already committed to the outbox, concurrently (consumers do not rely on order).
/// Failures are logged and left to the relay.
pub async fn publish(ctx: &Context, events: &[DomainEvent]) -> usize {
    let outcomes = futures_util::future::join_all(events.iter().map(|event| async move {
        send(ctx, event).await.map_err(|e| {
            tracing::warn!(event_id = event.id, error = %e, "event publish failed; the outbox relay will retry");
        })
    }))
    .await;
    outcomes.iter().filter(|o| o.is_ok()).count()
}

async fn send(ctx: &Context, event: &DomainEvent) -> Result<(), String> {
    enqueue(ctx, event).await?;
    ctx.store().mark_event_published(&event.id, ctx.clock.now()).await.map_err(|e| e.to_string())?;
    tracing::info!(event_id = event.id, event_type = event.event_type, "event published");
    Ok(())
}

async fn enqueue(ctx: &Context, event: &DomainEvent) -> Result<(), String> {
    let body = serde_json::to_string(event).map_err(|e| e.to_string())?;
    ctx.sqs()
        .send_message()
        .queue_url(&ctx.config.events_queue_url)
        .message_body(body)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
    Ok(())
}

/// Queues an event again for its consumers (one that ran out of time leaves the rest to this
/// delivery); the outbox, which recorded it once, is not involved.
pub async fn requeue(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    enqueue(ctx, event).await.map_err(QueueError)
}

/// Events pending longer than this are the relay's; younger ones are still being published inline.
const RELAY_GRACE_SECS: i64 = 30;
/// At most this many events per relay run; the next run takes the rest.
const RELAY_BATCH: i32 = 500;

/// Scheduled: publishes outbox events whose inline publish failed.
pub async fn relay(ctx: Arc<Context>, _schedule: Value) -> Result<Value, ApiError> {
    let pending = ctx.store().pending_events(ctx.clock.now() - RELAY_GRACE_SECS, RELAY_BATCH).await?;
    let published = publish(&ctx, &pending).await;
    if !pending.is_empty() {
        tracing::info!(pending = pending.len(), published, "outbox relayed");
    }
    Ok(json!({ "pending": pending.len(), "published": published }))
}

/// The event an events-queue message carries; a malformed one fails (and ends in the dead-letter queue).
pub fn parse(message: &SqsMessage) -> Result<DomainEvent, QueueError> {
    let body = message.body.as_deref().unwrap_or_default();
    serde_json::from_str(body).map_err(|e| QueueError(format!("malformed event: {e}")))
}

/// Records a dispatched event once in its organization's activity log (a duplicate delivery changes
/// nothing).
pub async fn record(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    let recorded = ctx.store().record_activity(event).await.map_err(|e| QueueError(e.to_string()))?;
    tracing::info!(event_id = event.id, event_type = event.event_type, duplicate = !recorded, "event dispatched");
    Ok(())
}

/// A unix time as RFC 3339 (UTC, seconds), as events and LMSs write times.
pub fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}
