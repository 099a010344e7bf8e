//! `GET /health`: each dependency checked concurrently, with a time cap, by a cheap control-plane
//! call that needs no data (and reads no secret value).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;

use crate::Context;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::support::http::{ApiResult, json};

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    status: &'static str,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Checks {
    dynamodb: Check,
    s3: Check,
    sqs: Check,
    secretsmanager: Check,
}

/// Every dependency, checked concurrently.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Every dependency is up", body = Health),
    (status = 503, description = "A dependency is down (named in `checks`)", body = Health),
))]
pub async fn health(ctx: Arc<Context>, _req: Request) -> ApiResult {
    let c = &ctx;
    let (dynamodb, s3, sqs, secretsmanager) = tokio::join!(
        check(c.dynamodb().describe_table().table_name(&c.config.table_name).send()),
        check(c.s3().head_bucket().bucket(&c.config.evidence_bucket).send()),
        check(
            c.sqs()
                .get_queue_attributes()
                .queue_url(&c.config.events_queue_url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .send()
        ),
        check(c.secrets().describe_secret().secret_id(&c.config.access_key_secret_id).send()),
    );
    let checks = Checks { dynamodb, s3, sqs, secretsmanager };
    let healthy = [&checks.dynamodb, &checks.s3, &checks.sqs, &checks.secretsmanager].iter().all(|c| c.status == "up");
    let (status, code) =
        if healthy { ("healthy", StatusCode::OK) } else { ("unhealthy", StatusCode::SERVICE_UNAVAILABLE) };
    json(code, &Health { status, checks })
}

async fn check<T, E, R>(call: impl Future<Output = Result<T, SdkError<E, R>>>) -> Check
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, call).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(_)) => Check { status: "up", latency_ms, error: None },
        Ok(Err(e)) => {
            tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "health check failed");
            Check { status: "down", latency_ms, error: Some(error_code(&e)) }
        }
        Err(_) => Check { status: "down", latency_ms, error: Some("timeout".into()) },
    }
}

/// The AWS error code (`ResourceNotFoundException`, `NotFound`...) or the kind of failure; never
/// the full message, which may carry internals.
fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service_error").to_string(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "unreachable".into(),
        _ => "error".into(),
    }
}
