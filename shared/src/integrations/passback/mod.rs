//! Grades back to the LMS a task came from: one path, one adapter per LMS ([`spark`]: Spark's grade
//! API; [`lti_ags`]: LTI Assignment and Grade Services).
//!
//! Domain events (written with the change, through the outbox) become jobs on the grade passback
//! queue; the `grade-passback` worker posts each one with its adapter. Delivery is at least once, so
//! every post is idempotent (Spark: an `Idempotency-Key`; AGS: the score's `timestamp`, which a
//! platform applies once and never lets an older score override). Retryable failures (network, 408,
//! 429, 5xx) wait an exponential backoff built from the message's visibility timeout
//! (`base × 2^(attempt-1)`), then SQS moves the job to the dead-letter queue after its receive limit.
//! Other refusals are permanent: logged and dropped.

pub mod lti_ags;
pub mod spark;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};

use crate::runtime::breaker::{self, Destination};
use crate::runtime::events::DomainEvent;
use crate::runtime::jobs::QueueError;
use crate::{Context, runtime::jobs};

pub use crate::domain::learning::submissions::GRADE_UPDATED;

/// One grade on its way to one LMS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "lms", rename_all = "snake_case")]
pub enum PassbackJob {
    Spark(spark::SparkGrade),
    Lti(lti_ags::LtiScore),
}

impl PassbackJob {
    /// The destination whose breaker and share the job goes through: Spark's API, or one LMS
    /// registration.
    fn destination(&self) -> Destination {
        let key = match self {
            Self::Spark(_) => "spark".into(),
            Self::Lti(s) => format!("lti:{}", s.registration_id),
        };
        Destination::new(key, MAX_CALLS_PER_LMS, JOB_BUDGET.as_secs() as i64 + 5)
    }

    fn completion_id(&self) -> &str {
        match self {
            Self::Spark(g) => &g.completion_id,
            Self::Lti(s) => &s.completion_id,
        }
    }
}

/// What an LMS made of a post.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Done,
    /// Refused for good (a 4xx other than 408 and 429): retrying would not change it.
    Refused(String),
    /// The LMS failed (no answer, 5xx, 429...): worth another attempt later.
    Retry(String),
    /// We could not try (our store, configuration or secrets): another attempt later, and the LMS is
    /// not to blame (its breaker does not count it).
    Unavailable(String),
}

impl Delivery {
    /// The outcome an HTTP status means.
    pub fn of_status(status: u16, lms: &str) -> Self {
        match status {
            200..=299 => Self::Done,
            s if crate::support::outbound::retryable_status(s) => Self::Retry(format!("{lms} answered {status}")),
            _ => Self::Refused(format!("{lms} answered {status}")),
        }
    }
}

impl From<crate::integrations::lti::services::ServiceError> for Delivery {
    fn from(e: crate::integrations::lti::services::ServiceError) -> Self {
        if e.retryable { Self::Retry(e.message) } else { Self::Refused(e.message) }
    }
}

/// Called by the events consumer: queues the grades an event asks for.
pub async fn enqueue(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    let mut jobs = Vec::new();
    if let Some(grade) = spark::job(ctx, event) {
        jobs.push(PassbackJob::Spark(grade));
    }
    if let Some(score) = lti_ags::job(ctx, event).await.map_err(|e| QueueError(e.to_string()))? {
        jobs.push(PassbackJob::Lti(score));
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let queue = queue(ctx)?;
    for job in &jobs {
        jobs::enqueue(ctx, queue, job).await?;
        tracing::info!(completion_id = job.completion_id(), "grade passback queued");
    }
    Ok(())
}

/// Jobs calling one LMS at once: a fifth of the worker's 10 instances (one job each), so an LMS that
/// starts hanging holds no more while its breaker counts the first timeouts.
const MAX_CALLS_PER_LMS: i64 = 2;

/// What one job's calls may take in all (token, post, a fresh token and the post again): well under
/// the worker's 30 s, so a job that hangs is given back on its own, with its backoff.
const JOB_BUDGET: Duration = Duration::from_secs(20);

/// The worker: posts one job with its LMS's adapter, unless its LMS is paused (see
/// [`crate::runtime::breaker`]): then the job waits out the pause on the queue, holding no worker.
pub async fn deliver(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: PassbackJob = jobs::parse(&message)?;
    let Some(ticket) = breaker::admit_job(&ctx, &job.destination(), queue(&ctx)?, &message).await? else {
        return Ok(());
    };
    let post = async {
        match &job {
            PassbackJob::Spark(grade) => spark::post(&ctx, grade).await,
            PassbackJob::Lti(score) => lti_ags::post(&ctx, score).await,
        }
    };
    let delivery = tokio::time::timeout(JOB_BUDGET, post)
        .await
        .unwrap_or_else(|_| Delivery::Retry(format!("the LMS did not answer within {} s", JOB_BUDGET.as_secs())));
    match &delivery {
        Delivery::Unavailable(_) => breaker::release(&ctx, ticket).await,
        Delivery::Retry(_) => breaker::record(&ctx, ticket, false).await,
        Delivery::Done | Delivery::Refused(_) => breaker::record(&ctx, ticket, true).await,
    }
    match delivery {
        Delivery::Done => {
            tracing::info!(completion_id = job.completion_id(), "grade passed back");
            Ok(())
        }
        Delivery::Refused(why) => {
            tracing::error!(completion_id = job.completion_id(), why, "grade passback refused; not retried");
            Ok(())
        }
        Delivery::Retry(why) | Delivery::Unavailable(why) => {
            retry_later(&ctx, &message).await;
            Err(QueueError(why))
        }
    }
}

fn queue(ctx: &Context) -> Result<&str, QueueError> {
    ctx.config
        .grade_passback_queue_url
        .as_deref()
        .ok_or_else(|| QueueError("grade passback queue not configured".into()))
}

/// Hides the message for the next backoff step before it is reported as failed.
async fn retry_later(ctx: &Context, message: &SqsMessage) {
    let attempt = jobs::receive_count(message);
    let delay = (ctx.config.passback_retry_base.as_secs() << attempt.saturating_sub(1).min(20)) as i64;
    if let Ok(queue) = queue(ctx) {
        jobs::hide(ctx, queue, message, delay).await;
    }
}
