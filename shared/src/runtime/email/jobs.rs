//! The email queue: requests enqueue what to send; the worker (`email-send`) decides and sends.
//! Jobs carry no secret: the worker creates each code as it sends it, so a retry sends a fresh link
//! and the previous one stops working.

use serde::{Deserialize, Serialize};

use crate::runtime::jobs::QueueError;
use crate::{ApiError, Context};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmailJob {
    /// A sign-in link, if the address has an account or a pending invitation. `browser`: the digest of
    /// the asking browser's secret, without which the link does not lead to a browser-bound `next`.
    SignIn {
        email: String,
        next: Option<String>,
        #[serde(default)]
        browser: Option<String>,
    },
    /// A student's invitation, if it is still pending.
    Invitation { invitation_id: String },
}

/// Queues an email; the caller's change is already written, so a failure is worth a retry (503).
pub async fn enqueue(ctx: &Context, job: &EmailJob) -> Result<(), ApiError> {
    let queue =
        ctx.config.email_queue_url.as_deref().ok_or_else(|| ApiError::internal("EMAIL_QUEUE_URL is not set"))?;
    crate::runtime::jobs::enqueue(ctx, queue, job).await.map_err(ApiError::unavailable)
}

/// What the email worker answers the queue for one job: a refusal (an address DynamoDB or SES
/// cannot take...) will not change on retry, so it is dropped with a log line instead of ending in the
/// dead-letter queue and its alarm; anything else retries (then the dead-letter queue).
pub fn outcome(sent: Result<(), ApiError>) -> Result<(), QueueError> {
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.status.is_client_error() => {
            tracing::warn!(error = %e, "email dropped: refused for good");
            Ok(())
        }
        Err(e) => Err(QueueError(e.to_string())),
    }
}
