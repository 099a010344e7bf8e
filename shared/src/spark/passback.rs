//! Grade passback to Spark: a `grade.updated` event (written with the submission, through the
//! outbox) becomes a job on the grade passback queue; the worker posts it to Spark's API.
//!
//! Delivery is at least once, so every request carries `Idempotency-Key` (the completion and grade).
//! Retryable failures (network, 408, 429, 5xx) wait an exponential backoff built from the message's
//! visibility timeout (`base × 2^(attempt-1)`, at most 12 hours), then SQS moves the job to the
//! dead-letter queue after its receive limit. Other 4xx answers are permanent: logged and dropped.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::{DomainEvent, QueueError};
use crate::{Context, crypto, jobs};

pub const GRADE_UPDATED: &str = "grade.updated";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassbackJob {
    pub completion_id: String,
    pub spark_user_id: String,
    pub course_id: String,
    pub assignment_id: String,
    pub grade: Value,
}

impl PassbackJob {
    /// The job a `grade.updated` event asks for, when the grade belongs to a Spark assignment.
    pub fn from_event(event: &DomainEvent) -> Option<Self> {
        let lms = event.data.get("lms")?;
        if event.event_type != GRADE_UPDATED || lms["platform"] != "spark" {
            return None;
        }
        Some(Self {
            completion_id: event.data["completion_id"].as_str()?.to_string(),
            spark_user_id: lms["user_id"].as_str()?.to_string(),
            course_id: lms["course_id"].as_str()?.to_string(),
            assignment_id: lms["assignment_id"].as_str()?.to_string(),
            grade: event.data.get("grade")?.clone(),
        })
    }

    /// Same completion and grade, same key: Spark applies it once however often it arrives.
    pub fn idempotency_key(&self) -> String {
        crypto::sha256_hex(format!("{}\0{}", self.completion_id, self.grade).as_bytes())
    }
}

/// Called by the events consumer: queues the passback a `grade.updated` event asks for.
pub async fn enqueue(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    let Some(job) = PassbackJob::from_event(event) else { return Ok(()) };
    // Grades go back to Spark only from Spark's own organization (DESIGN.md §3a): a completion of a
    // quest elsewhere (a mapping made before that rule) never writes into Spark's gradebook.
    let organization = event.organization_id.as_deref().unwrap_or_default();
    if crate::tenancy::admit(ctx, crate::spark::sso::PROVIDER, organization).is_err() {
        tracing::warn!(
            alert = "integration_tenant_mismatch",
            completion_id = job.completion_id,
            organization_id = organization,
            "grade not passed back: the completion is outside Spark's organization"
        );
        return Ok(());
    }
    let queue = ctx
        .config
        .grade_passback_queue_url
        .as_deref()
        .ok_or_else(|| QueueError("grade passback queue not configured".into()))?;
    jobs::enqueue(ctx, queue, &job).await?;
    tracing::info!(completion_id = job.completion_id, "grade passback queued");
    Ok(())
}

/// The worker: posts one job to Spark's API.
pub async fn deliver(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: PassbackJob = jobs::parse(&message)?;
    let api = ctx.config.spark_api_url.as_deref().ok_or_else(|| QueueError("SPARK_API_URL not configured".into()))?;
    let host = url::Url::parse(api)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| QueueError("SPARK_API_URL is not a URL".into()))?;
    let keys = ctx.spark_api_key.as_ref().ok_or_else(|| QueueError("Spark API key not configured".into()))?;
    let key = keys.get(ctx.secrets()).await.map_err(|e| QueueError(e.to_string()))?;
    let api_key = String::from_utf8_lossy(crate::secrets::key_bytes(&key.current)).into_owned();
    let client = ctx.outbound(Some(vec![host])).map_err(|e| QueueError(e.to_string()))?;
    let request = client
        .post(&format!("{api}/api/grades"))
        .map_err(|e| QueueError(e.to_string()))?
        .bearer_auth(api_key)
        .header("Idempotency-Key", job.idempotency_key())
        .json(&json!({
            "user_id": job.spark_user_id, "course_id": job.course_id, "assignment_id": job.assignment_id,
            "grade": job.grade, "completion_id": job.completion_id,
        }));
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            if response.status().is_success() {
                tracing::info!(completion_id = job.completion_id, status, "grade passed back");
                return Ok(());
            }
            if (400..500).contains(&status) && status != 408 && status != 429 {
                tracing::error!(
                    completion_id = job.completion_id,
                    status,
                    "grade passback refused by Spark; not retried"
                );
                return Ok(());
            }
            format!("Spark answered {status}")
        }
        Err(e) => format!("request failed: {e}"),
    };
    retry_later(&ctx, &message).await;
    Err(QueueError(outcome))
}

/// Hides the message for the next backoff step before it is reported as failed.
async fn retry_later(ctx: &Context, message: &SqsMessage) {
    let attempt = jobs::receive_count(message);
    let delay = (ctx.config.passback_retry_base.as_secs() << attempt.saturating_sub(1).min(20)) as i64;
    if let Some(queue) = ctx.config.grade_passback_queue_url.as_deref() {
        jobs::hide(ctx, queue, message, delay).await;
    }
}
