//! The email queue: requests enqueue what to send; the worker (`email-send`) decides and sends.
//! Jobs carry no secret: the worker creates each code as it sends it, so a retry sends a fresh link
//! and the previous one stops working.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};

use crate::events::QueueError;
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
    crate::jobs::enqueue(ctx, queue, job).await.map_err(ApiError::unavailable)
}

/// Worker: sends one queued email. SES failures retry (then the dead-letter queue).
pub async fn work(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: EmailJob = crate::jobs::parse(&message)?;
    let sent = match &job {
        EmailJob::SignIn { email, next, browser } => {
            crate::auth::email_sign_in::send_link(&ctx, email, next.as_deref(), browser.as_deref()).await
        }
        EmailJob::Invitation { invitation_id } => {
            crate::observers::invitations::send_invitation(&ctx, invitation_id).await
        }
    };
    match sent {
        Ok(()) => Ok(()),
        // A refusal (an address DynamoDB or SES cannot take...) will not change on retry: dropped
        // with a log line instead of ending in the dead-letter queue and its alarm.
        Err(e) if e.status.is_client_error() => {
            tracing::warn!(error = %e, "email dropped: refused for good");
            Ok(())
        }
        Err(e) => Err(QueueError(e.to_string())),
    }
}
