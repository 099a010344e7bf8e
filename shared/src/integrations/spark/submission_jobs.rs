//! Submissions whose files come by URL are completed off the request path: the webhook records a
//! job and answers `202 {"status":"processing","submission_id"}`; the `spark-submission-worker`
//! downloads the files, stores them and records the submission (the same events as inline).
//!
//! At least once and idempotent: the job item decides (a finished job is not redone), and recording
//! is idempotent by the submission's key. Failures the sender caused (a refused URL, a file too large
//! or of a refused type, an unknown student) end the job as failed at once; others (a download or
//! storage failure) retry with backoff (`base × 2^(attempt-1)`), then end failed in the dead-letter queue.

use serde::{Deserialize, Serialize};

use super::webhook::{Outcome, SubmissionPayload};
use crate::domain::learning::submissions::Recorded;
use crate::store::submission_jobs::JobStatus;
use crate::{ApiError, Context, runtime::jobs};

/// Attempts before a job ends as failed (the queue's `maxReceiveCount` matches).
pub const MAX_ATTEMPTS: u32 = 5;
/// A job still processing this long after it was received (longer than all its attempts take) has
/// lost its message: a retry of the same submission queues it again.
const REQUEUE_AFTER_SECS: i64 = 3600;

/// What a queue message carries: the job's key (the job item holds the payload).
#[derive(Debug, Serialize, Deserialize)]
pub struct JobMessage {
    pub key: String,
}

/// The public id of a submission, derived from its idempotency key (a retry gets the same).
pub fn submission_id(key: &str) -> String {
    format!("sub_{}", &key[..key.len().min(32)])
}

/// Records the job and queues it; a retry of the same submission answers the job's state.
pub async fn queue(ctx: &Context, key: &str, p: &SubmissionPayload) -> Result<Outcome, ApiError> {
    let queue_url = ctx
        .config
        .submission_queue_url
        .as_deref()
        .ok_or_else(|| ApiError::unavailable("submission queue not configured"))?;
    let store = ctx.store();
    let id = submission_id(key);
    let payload = serde_json::to_string(p).map_err(ApiError::internal)?;
    let now = ctx.clock.now();
    if !store.create_submission_job(key, &id, &payload, now).await? {
        let job = store.submission_job(key).await?.ok_or_else(|| ApiError::unavailable("submission job vanished"))?;
        return match job.status {
            JobStatus::Processing if now - job.received_at > REQUEUE_AFTER_SECS => {
                // Its message may be lost (a crash between the write and the send): the sender's
                // retry queues it again; the worker is idempotent.
                enqueue(ctx, queue_url, key, &job.submission_id).await?;
                Ok(Outcome::Processing { submission_id: job.submission_id })
            }
            JobStatus::Processing => Ok(Outcome::Processing { submission_id: job.submission_id }),
            JobStatus::Completed { completion_id } => {
                Ok(Outcome::Recorded(Recorded { completion_id, duplicate: true }))
            }
            JobStatus::Failed { error } => Err(ApiError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "submission_failed",
                format!("This submission ({}) failed: {error}", job.submission_id),
            )),
        };
    }
    if let Err(e) = enqueue(ctx, queue_url, key, &id).await {
        // Nothing waits for a job without a message: forget it, so the sender's retry starts afresh.
        if let Err(forget) = store.delete_submission_job(key).await {
            tracing::error!(error = %forget, submission_id = id, "unqueued submission job not removed");
        }
        return Err(e);
    }
    Ok(Outcome::Processing { submission_id: id })
}

async fn enqueue(ctx: &Context, queue_url: &str, key: &str, submission_id: &str) -> Result<(), ApiError> {
    jobs::enqueue(ctx, queue_url, &JobMessage { key: key.into() }).await.map_err(|e| ApiError::unavailable(e.0))?;
    tracing::info!(submission_id, "submission queued for its files");
    Ok(())
}
