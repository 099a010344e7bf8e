//! Jobs on SQS queues: queueing one, reading one, and hiding one for a backoff before it is retried.
//!
//! A worker that wants a later retry hides its message (`ChangeMessageVisibility`, at most 12 hours,
//! so longer than SQS's 15-minute delays) and reports it as failed: Lambda leaves it on the queue and
//! it comes back when the delay is over.

use aws_lambda_events::sqs::SqsMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Context;

/// Why a queue message was not processed; the message is retried, then dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// SQS refuses visibility timeouts over 12 hours.
pub const MAX_HIDE_SECS: i64 = 12 * 3600;

pub async fn enqueue<T: Serialize>(ctx: &Context, queue_url: &str, job: &T) -> Result<(), QueueError> {
    let body = serde_json::to_string(job).map_err(|e| QueueError(e.to_string()))?;
    ctx.sqs()
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await
        .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}

/// The job a message carries; a malformed one fails (and ends in the dead-letter queue).
pub fn parse<T: DeserializeOwned>(message: &SqsMessage) -> Result<T, QueueError> {
    serde_json::from_str(message.body.as_deref().unwrap_or_default())
        .map_err(|e| QueueError(format!("malformed job: {e}")))
}

/// How many times SQS has handed this message out, this time included.
pub fn receive_count(message: &SqsMessage) -> u32 {
    let this_copy: u32 = message.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
    this_copy.saturating_add(attribute(message, RECEIVES_BEFORE).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The message attribute that carries the receives of a deferred job's earlier copies (a deferred
/// job is a new message, whose own count starts again).
const RECEIVES_BEFORE: &str = "receives_before";

fn attribute<'a>(message: &'a SqsMessage, name: &str) -> Option<&'a str> {
    message.message_attributes.get(name).and_then(|a| a.string_value.as_deref())
}

/// A job deferred past a paused destination waits this long at most in all; then it is retried like
/// any failure (toward the dead-letter queue).
pub const MAX_DEFERRAL_SECS: i64 = 24 * 3600;
/// The message attribute that carries when a job was first deferred.
const DEFERRED_SINCE: &str = "deferred_since";

/// Puts a job back on its queue to be received again in `seconds` (at most 15 minutes, SQS's longest
/// delay) without counting a receive: the caller then reports the message done. `false` when it has
/// been deferred for [`MAX_DEFERRAL_SECS`] already (the caller retries it as a failure instead).
pub async fn defer(ctx: &Context, queue_url: &str, message: &SqsMessage, seconds: i64) -> Result<bool, QueueError> {
    let now = ctx.clock.now();
    let since = now.saturating_sub(deferred_for(ctx, message));
    if now.saturating_sub(since) >= MAX_DEFERRAL_SECS {
        return Ok(false);
    }
    let number = |value: i64| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(value.to_string())
            .build()
            .map_err(|e| QueueError(e.to_string()))
    };
    // This receive attempted nothing: only the earlier ones count.
    let receives_before = i64::from(receive_count(message).saturating_sub(1));
    ctx.sqs()
        .send_message()
        .queue_url(queue_url)
        .message_body(message.body.as_deref().unwrap_or_default())
        .delay_seconds(seconds.clamp(1, 900) as i32)
        .message_attributes(DEFERRED_SINCE, number(since)?)
        .message_attributes(RECEIVES_BEFORE, number(receives_before)?)
        .send()
        .await
        .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
    Ok(true)
}

/// How long a job has been deferred in all (0 when never). One whose attribute does not read as a
/// time in the past counts as deferred long enough.
pub fn deferred_for(ctx: &Context, message: &SqsMessage) -> i64 {
    let now = ctx.clock.now();
    if !message.message_attributes.contains_key(DEFERRED_SINCE) {
        return 0;
    }
    attribute(message, DEFERRED_SINCE)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|since| *since <= now)
        .map_or(MAX_DEFERRAL_SECS, |since| now - since)
}

/// Keeps the message hidden for `seconds` (capped at 12 hours) before it is delivered again.
pub async fn hide(ctx: &Context, queue_url: &str, message: &SqsMessage, seconds: i64) {
    let Some(receipt) = message.receipt_handle.as_deref() else { return };
    if let Err(e) = ctx
        .sqs()
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(seconds.clamp(0, MAX_HIDE_SECS) as i32)
        .send()
        .await
    {
        tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "backoff not set; the queue's visibility timeout applies");
    }
}
