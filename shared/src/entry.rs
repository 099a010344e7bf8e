//! How a function runs: build the context once, then serve requests through `lambda_http`. The dev
//! gateway uses [`http_service`] too, so local requests take the same path as Lambda's.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use lambda_http::{Body, Request, RequestExt, Response, Service, service_fn};
use tracing::Instrument;

use crate::functions::{Function, Handler, HttpHandler};
use crate::{ApiError, Context, logging};

pub type Error = lambda_http::Error;

/// The whole main of a function binary.
pub async fn run(function: Function) -> Result<(), Error> {
    logging::init();
    let ctx = Arc::new(Context::from_env().await?);
    match function.handler {
        Handler::Http(handler) => lambda_http::run(http_service(ctx, function.name, handler)).await,
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
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        function = name,
        request_id,
        user_id = tracing::field::Empty
    );
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    async move {
        let mut response = match AssertUnwindSafe(handler(ctx, req)).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(_) => ApiError::internal("handler panicked").into_response(),
        };
        response.headers_mut().insert(
            "x-content-type-options",
            http::HeaderValue::from_static("nosniff"),
        );
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
