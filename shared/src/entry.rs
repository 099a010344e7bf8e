//! How a function runs: build the context once, then serve requests through `lambda_http`. The dev
//! gateway uses [`http_service`] too, so local requests take the same path as Lambda's.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::FutureExt;
use lambda_http::{Body, LambdaEvent, Request, RequestExt, Response, Service, service_fn};
use serde_json::Value;
use tracing::Instrument;

use crate::functions::{Function, Handler, HttpHandler, QueueHandler, ScheduleHandler};
use crate::runtime::jobs;
use crate::{ApiError, Context, support::logging};

pub type Error = lambda_http::Error;

/// The whole main of a function binary.
pub async fn run(function: Function) -> Result<(), Error> {
    logging::init();
    let ctx = match Context::from_env().await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            tracing::error!(function = function.name, error = %e, "cannot start: invalid configuration");
            return Err(e.into());
        }
    };
    match function.handler {
        Handler::Http(handler) => lambda_http::run(http_service(ctx, function.name, handler)).await,
        Handler::Queue(handler) => lambda_runtime::run(queue_service(ctx, function.name, handler)).await,
        Handler::Schedule(handler) => lambda_runtime::run(schedule_service(ctx, function.name, handler)).await,
    }
}

/// A `tower` service answering every request: errors become JSON responses, panics become a JSON
/// 500, and each request logs one line (never the query string, which may carry tokens).
pub fn http_service(
    ctx: Arc<Context>,
    name: &'static str,
    handler: HttpHandler,
) -> impl Service<Request, Response = Response<Body>, Error = Infallible, Future: Send> + Clone {
    service_fn(move |req: Request| handle(ctx.clone(), name, handler, req))
}

async fn handle(
    ctx: Arc<Context>,
    name: &'static str,
    handler: HttpHandler,
    req: Request,
) -> Result<Response<Body>, Infallible> {
    let request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    let span = tracing::info_span!("request", function = name, request_id, user_id = tracing::field::Empty);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    async move {
        let mut response = match AssertUnwindSafe(handler(ctx, req)).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(_) => ApiError::internal("handler panicked").into_response(),
        };
        response.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
        tracing::info!(
            %method,
            path,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        Ok(response)
    }
    .instrument(span)
    .await
}

/// An SQS consumer: the messages of a batch are handled concurrently, each on its own; the ones
/// that fail or panic are reported back (`ReportBatchItemFailures`) so SQS retries only them, then
/// dead-letters them. (Consumers do not rely on order: every job is idempotent.)
///
/// Each message has the invocation's time less [`REPORT_MARGIN`]: one that has not finished by then
/// (its destination hangs) is given back alone, hidden for a backoff like any failure, while the
/// others of the batch are reported as they ended, never killed with it by the function's timeout.
pub fn queue_service(
    ctx: Arc<Context>,
    name: &'static str,
    handler: QueueHandler,
) -> impl Service<LambdaEvent<SqsEvent>, Response = SqsBatchResponse, Error = Infallible, Future: Send> + Clone {
    service_fn(move |event: LambdaEvent<SqsEvent>| handle_batch(ctx.clone(), name, handler, event))
}

/// Time kept back from an invocation's deadline to give back the messages that ran out of time and
/// report the batch.
pub const REPORT_MARGIN: Duration = Duration::from_secs(3);
/// The backoff of a message that ran out of time: this, doubled on each receive, at most 15 minutes.
const TIMEOUT_BACKOFF_SECS: i64 = 30;
const MAX_TIMEOUT_BACKOFF_SECS: i64 = 900;

/// When the messages of an invocation must be done: its deadline less [`REPORT_MARGIN`] (none when
/// the invocation names no deadline).
fn message_deadline(context: &lambda_runtime::Context) -> Option<tokio::time::Instant> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    (context.deadline > 0).then(|| {
        let left = Duration::from_millis(context.deadline.saturating_sub(now_ms)).saturating_sub(REPORT_MARGIN);
        tokio::time::Instant::now() + left
    })
}

async fn handle_batch(
    ctx: Arc<Context>,
    name: &'static str,
    handler: QueueHandler,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Infallible> {
    let span = tracing::info_span!("batch", function = name, request_id = event.context.request_id);
    let deadline = message_deadline(&event.context);
    async move {
        let mut response = SqsBatchResponse::default();
        let total = event.payload.records.len();
        let outcomes = futures_util::future::join_all(event.payload.records.into_iter().map(|message| {
            let ctx = ctx.clone();
            async move {
                let message_id = message.message_id.clone().unwrap_or_default();
                let run = AssertUnwindSafe(handler(ctx.clone(), message.clone())).catch_unwind();
                let ended = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, run).await,
                    None => Ok(run.await),
                };
                let failure = match ended {
                    Ok(Ok(Ok(()))) => None,
                    Ok(Ok(Err(error))) => Some(error.to_string()),
                    Ok(Err(_)) => Some("handler panicked".to_string()),
                    Err(_) => {
                        let delay = back_off(&ctx, &message).await;
                        Some(format!("ran out of the invocation's time; retried in {delay} s"))
                    }
                };
                (message_id, failure)
            }
        }))
        .await;
        for (message_id, failure) in outcomes {
            if let Some(error) = failure {
                tracing::warn!(message_id, error, "message failed; SQS will retry it");
                let mut item = BatchItemFailure::default();
                item.item_identifier = message_id;
                response.batch_item_failures.push(item);
            }
        }
        tracing::info!(messages = total, failed = response.batch_item_failures.len(), "batch");
        Ok(response)
    }
    .instrument(span)
    .await
}

/// Hides a message that ran out of time for its backoff (by how often it was received); returns the
/// delay. Its queue's URL is built from the message's source ARN (the event source mapping's
/// permissions include changing a message's visibility, not looking a queue up).
async fn back_off(ctx: &Context, message: &SqsMessage) -> i64 {
    let attempt = jobs::receive_count(message).clamp(1, 16);
    let delay = (TIMEOUT_BACKOFF_SECS << (attempt - 1)).min(MAX_TIMEOUT_BACKOFF_SECS);
    let arn = message.event_source_arn.as_deref().unwrap_or_default();
    if let ["arn", _, "sqs", region, account, queue] = arn.split(':').collect::<Vec<_>>()[..] {
        jobs::hide(ctx, &format!("https://sqs.{region}.amazonaws.com/{account}/{queue}"), message, delay).await;
    }
    delay
}

/// A scheduled function: its summary is logged and returned; a failure fails the invocation so
/// EventBridge's retry policy applies.
pub fn schedule_service(
    ctx: Arc<Context>,
    name: &'static str,
    handler: ScheduleHandler,
) -> impl Service<LambdaEvent<Value>, Response = Value, Error = Error, Future: Send> + Clone {
    service_fn(move |event: LambdaEvent<Value>| {
        let ctx = ctx.clone();
        let span = tracing::info_span!("schedule", function = name, request_id = event.context.request_id);
        async move {
            match AssertUnwindSafe(handler(ctx, event.payload)).catch_unwind().await {
                Ok(Ok(summary)) => {
                    tracing::info!(summary = %summary, "scheduled run finished");
                    Ok(summary)
                }
                Ok(Err(error)) => Err(Error::from(error)),
                Err(_) => Err(Error::from("scheduled handler panicked")),
            }
        }
        .instrument(span)
    })
}
