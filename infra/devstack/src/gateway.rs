//! The dev gateway: serves every `HttpApi` route of template.yaml on one loopback port, the way API
//! Gateway HTTP API does with payload format 2.0, through the same `hub` service the Lambda binary
//! runs (`lambda_http`'s own event conversion included).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use aws_config::SdkConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full, Limited};
use hub::functions::Handler;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, LambdaEvent, Service};
use serde_json::{Value, json};

use crate::provision::LocalStack;
use crate::template::{Route, Template};

/// API Gateway HTTP API refuses bodies over 10 MB; Lambda refuses events over 6 MB.
const MAX_BODY: usize = 10 * 1024 * 1024;
const MAX_EVENT: usize = 6 * 1024 * 1024;

struct LocalRoute {
    route: Route,
    segments: Vec<Segment>,
    name: &'static str,
    handler: hub::functions::HttpHandler,
    ctx: Arc<hub::Context>,
}

enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// A queue consumer, fed by polling its SQS queue as Lambda's event source mapping would.
struct Consumer {
    name: &'static str,
    handler: hub::functions::QueueHandler,
    ctx: Arc<hub::Context>,
    queue_url: String,
    queue_arn: String,
    batch_size: i32,
    /// The function's timeout: its invocations get Lambda's deadline.
    timeout_secs: i64,
}

/// A scheduled function, fired on demand (`POST /_local/schedules/{name}` or `devstack fire`).
struct Scheduled {
    name: &'static str,
    handler: hub::functions::ScheduleHandler,
    ctx: Arc<hub::Context>,
}

pub struct Gateway {
    routes: Vec<LocalRoute>,
    consumers: Vec<Consumer>,
    schedules: Vec<Scheduled>,
    sqs: aws_sdk_sqs::Client,
    /// Answers given, by status class (1xx..5xx).
    answered: [std::sync::atomic::AtomicUsize; 6],
}

/// How many answers the gateway gave, by status class (`by_class[5]`: server errors).
pub struct Stats {
    pub by_class: [usize; 6],
}

impl Stats {
    pub fn total(&self) -> usize {
        self.by_class.iter().sum()
    }
}

impl Gateway {
    /// Builds one context per function from its template environment, as Lambda would.
    pub fn new(template: &Template, stack: &LocalStack, sdk: &SdkConfig) -> anyhow::Result<Self> {
        let (mut routes, mut consumers, mut schedules) = (Vec::new(), Vec::new(), Vec::new());
        for def in template.functions()? {
            let function = hub::functions::by_name(&def.binary).with_context(|| {
                format!("template names binary {} but hub::functions has no such function", def.binary)
            })?;
            let env = stack.function_env(template, &def.logical_id)?;
            let config = hub::Config::from_lookup(|k| env.get(k).cloned())
                .with_context(|| format!("configuration of {}", def.logical_id))?;
            let ctx = Arc::new(hub::Context::new(config, sdk.clone()));
            match function.handler {
                Handler::Http(handler) => {
                    if def.routes.is_empty() {
                        bail!("{} is an HTTP function without an HttpApi event", def.logical_id);
                    }
                    for route in def.routes {
                        let segments = parse_path(&route.path);
                        routes.push(LocalRoute { route, segments, name: function.name, handler, ctx: ctx.clone() });
                    }
                }
                Handler::Queue(handler) => {
                    if def.queues.is_empty() {
                        bail!("{} is a queue consumer without an SQS event", def.logical_id);
                    }
                    for (queue, batch_size) in &def.queues {
                        consumers.push(Consumer {
                            name: function.name,
                            handler,
                            ctx: ctx.clone(),
                            queue_url: stack.refs.get(queue).with_context(|| format!("queue {queue}"))?.clone(),
                            queue_arn: stack.arns.get(queue).with_context(|| format!("queue {queue}"))?.clone(),
                            batch_size: *batch_size as i32,
                            timeout_secs: template.timeout(&def),
                        });
                    }
                }
                Handler::Schedule(handler) => {
                    // An event function runs on its schedule, or is a secret's rotation (run by provisioning).
                    if def.schedules.is_empty() && def.rotations.is_empty() {
                        bail!("{} is an event function without a Schedule event or a rotation", def.logical_id);
                    }
                    if !def.schedules.is_empty() {
                        schedules.push(Scheduled { name: function.name, handler, ctx: ctx.clone() });
                    }
                }
            }
        }
        Ok(Self { routes, consumers, schedules, sqs: aws_sdk_sqs::Client::new(sdk), answered: Default::default() })
    }

    /// (function, queue URL) of every consumer.
    pub fn consumers(&self) -> Vec<(&'static str, String)> {
        self.consumers.iter().map(|c| (c.name, c.queue_url.clone())).collect()
    }

    pub fn schedules(&self) -> Vec<&'static str> {
        self.schedules.iter().map(|s| s.name).collect()
    }

    /// Runs a scheduled function now with an EventBridge "Scheduled Event"; returns its summary.
    pub async fn fire(&self, name: &str) -> anyhow::Result<Value> {
        let s =
            self.schedules.iter().find(|s| s.name == name).with_context(|| format!("no scheduled function {name}"))?;
        let event = json!({
            "version": "0", "id": format!("local-{:016x}", rand::random::<u64>()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": crate::provision::ACCOUNT, "region": crate::provision::REGION,
            "time": "", "resources": [format!("arn:aws:events:us-east-1:{}:rule/{name}", crate::provision::ACCOUNT)],
            "detail": {},
        });
        let mut service = hub::entry::schedule_service(s.ctx.clone(), s.name, s.handler);
        service.call(LambdaEvent::new(event, lambda_context())).await.map_err(|e| anyhow::anyhow!(e.to_string()))
    }

    /// Polls every consumer's queue until the task is dropped.
    pub async fn poll_queues(self: Arc<Self>) {
        let polls = (0..self.consumers.len()).map(|i| {
            let gateway = self.clone();
            async move {
                loop {
                    if let Err(e) = gateway.poll_once(i, 1).await {
                        tracing::warn!(error = %e, "queue poll failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        futures_util::future::join_all(polls).await;
    }

    /// Receives one batch for the consumer function `name` (see [`Gateway::poll_once`]).
    pub async fn poll(&self, name: &str, wait_secs: i32) -> anyhow::Result<(usize, usize)> {
        let index =
            self.consumers.iter().position(|c| c.name == name).with_context(|| format!("no consumer {name}"))?;
        self.poll_once(index, wait_secs).await
    }

    /// Receives one batch for consumer `index` (long polling `wait_secs`), runs the function on it
    /// and deletes the messages it did not report as failed. Returns (received, failed).
    pub async fn poll_once(&self, index: usize, wait_secs: i32) -> anyhow::Result<(usize, usize)> {
        use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
        let c = &self.consumers[index];
        let out = self
            .sqs
            .receive_message()
            .queue_url(&c.queue_url)
            .max_number_of_messages(c.batch_size.clamp(1, 10))
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok((0, 0));
        }
        let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, &c.queue_arn)).collect();
        let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
        let mut service = hub::entry::queue_service(c.ctx.clone(), c.name, c.handler);
        let Ok(response) = service.call(LambdaEvent::new(event, lambda_context_until(c.timeout_secs))).await;
        let failed: std::collections::HashSet<&str> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id().unwrap_or_default()))
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
            })
            .collect::<Result<_, _>>()?;
        if !done.is_empty() {
            self.sqs.delete_message_batch().queue_url(&c.queue_url).set_entries(Some(done)).send().await?;
        }
        Ok((messages.len(), failed.len()))
    }

    pub fn stats(&self) -> Stats {
        Stats { by_class: std::array::from_fn(|i| self.answered[i].load(std::sync::atomic::Ordering::Relaxed)) }
    }

    pub fn routes(&self) -> Vec<(Route, &'static str)> {
        self.routes.iter().map(|r| (r.route.clone(), r.name)).collect()
    }

    /// Accepts connections until the listener fails or the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        while let Ok((stream, peer)) = listener.accept().await {
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let gateway = gateway.clone();
                    async move {
                        let response = gateway.handle(req, peer).await;
                        let class = (response.status().as_u16() / 100).min(5) as usize;
                        gateway.answered[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }

    async fn handle(&self, req: hyper::Request<Incoming>, peer: SocketAddr) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(413, "Request Entity Too Large"),
        };
        let path = parts.uri.path().to_string();
        let matched = self.routes.iter().find_map(|r| {
            let method_ok = r.route.method == "ANY" || r.route.method == parts.method.as_str();
            match_path(&r.segments, &path).filter(|_| method_ok).map(|params| (r, params))
        });
        // The API's contract, as partners import it (docs/openapi.json is the same document).
        if parts.method == http::Method::GET && path == "/openapi.json" {
            let mut response = hyper::Response::new(Full::new(Bytes::from(hub::api::openapi::document_json())));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            return response;
        }
        if parts.method == http::Method::POST
            && let Some(name) = path.strip_prefix("/_local/schedules/")
        {
            return match self.fire(name).await {
                Ok(summary) => json_response(200, &summary),
                Err(e) => json_response(404, &json!({ "message": e.to_string() })),
            };
        }
        let Some((route, params)) = matched else {
            return plain(404, "Not Found");
        };
        let event = to_event(&parts, &body, &route.route, &params, peer);
        let event_text = event.to_string();
        if event_text.len() > MAX_EVENT {
            return plain(413, "Request Entity Too Large");
        }
        let request: LambdaRequest = match serde_json::from_str(&event_text) {
            Ok(r) => r,
            Err(_) => return plain(400, "Bad Request"),
        };
        let request_id = event["requestContext"]["requestId"].as_str().unwrap_or_default().to_string();
        let mut lambda_ctx = lambda_context();
        lambda_ctx.request_id = request_id;
        let service = hub::entry::http_service(route.ctx.clone(), route.name, route.handler);
        let mut adapter = Adapter::from(service);
        match adapter.call(LambdaEvent::new(request, lambda_ctx)).await {
            Ok(response) => from_lambda_response(serde_json::to_value(response).unwrap_or(Value::Null)),
            Err(never) => match never {},
        }
    }
}

fn parse_path(path: &str) -> Vec<Segment> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if name.ends_with('+') => Segment::Greedy(name.trim_end_matches('+').to_string()),
            Some(name) => Segment::Param(name.to_string()),
            None => Segment::Literal(s.to_string()),
        })
        .collect()
}

fn match_path(segments: &[Segment], path: &str) -> Option<HashMap<String, String>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let mut params = HashMap::new();
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => {
                params.insert(name.clone(), percent_decode(parts.get(i)?));
            }
            Segment::Greedy(name) => {
                if i >= parts.len() {
                    return None;
                }
                params.insert(name.clone(), parts[i..].join("/"));
                return Some(params);
            }
        }
    }
    (parts.len() == segments.len()).then_some(params)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The payload-2.0 event API Gateway would send for this request.
fn to_event(
    parts: &http::request::Parts,
    body: &Bytes,
    route: &Route,
    params: &HashMap<String, String>,
    peer: SocketAddr,
) -> Value {
    let mut headers = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()));
            continue;
        }
        let entry = headers.entry(name.as_str().to_string()).or_insert(Value::String(String::new()));
        let joined = match entry.as_str() {
            Some("") => value,
            Some(prev) => format!("{prev},{value}"),
            None => value,
        };
        *entry = Value::String(joined);
    }
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let mut query: serde_json::Map<String, Value> = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        let entry = query.entry(k.into_owned()).or_insert(Value::Null);
        *entry = match entry.as_str() {
            Some(prev) => Value::String(format!("{prev},{v}")),
            None => Value::String(v.into_owned()),
        };
    }
    let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_text = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("x-www-form-urlencoded")
        || content_type.contains("javascript");
    let (body_value, base64) = if body.is_empty() {
        (Value::Null, false)
    } else if is_text && std::str::from_utf8(body).is_ok() {
        (Value::String(String::from_utf8_lossy(body).into_owned()), false)
    } else {
        (Value::String(B64.encode(body)), true)
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.key(),
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": crate::provision::ACCOUNT,
            "apiId": "local",
            "domainName": parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get(http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("local-{:016x}", rand::random::<u64>()),
            "routeKey": route.key(),
            "stage": "$default",
            "time": "",
            "timeEpoch": now.as_millis() as i64,
        },
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !params.is_empty() {
        event["pathParameters"] = json!(params);
    }
    if !body_value.is_null() {
        event["body"] = body_value;
    }
    event
}

/// Turns the function's payload-2.0 answer into the HTTP response API Gateway would send.
fn from_lambda_response(v: Value) -> hyper::Response<Full<Bytes>> {
    let status = v["statusCode"].as_u64().unwrap_or(500) as u16;
    let mut builder = hyper::Response::builder().status(status);
    if let Some(headers) = v["headers"].as_object() {
        for (k, val) in headers {
            if let Some(s) = val.as_str() {
                builder = builder.header(k, s);
            }
        }
    }
    for cookie in v["cookies"].as_array().into_iter().flatten() {
        if let Some(c) = cookie.as_str() {
            builder = builder.header(http::header::SET_COOKIE, c);
        }
    }
    let body = v["body"].as_str().unwrap_or("");
    let bytes = if v["isBase64Encoded"].as_bool() == Some(true) {
        B64.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    builder.body(Full::new(Bytes::from(bytes))).unwrap_or_else(|_| plain(502, "Internal Server Error"))
}

/// API Gateway's own answers (no route, body too large): `{"message": ...}`.
fn plain(status: u16, message: &str) -> hyper::Response<Full<Bytes>> {
    json_response(status, &json!({ "message": message }))
}

fn json_response(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// The invocation context Lambda passes, with a fresh request id.
/// An invocation's context with Lambda's deadline: `timeout_secs` from now.
fn lambda_context_until(timeout_secs: i64) -> lambda_http::Context {
    let mut ctx = lambda_context();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    ctx.deadline = now_ms + timeout_secs.max(1) as u64 * 1000;
    ctx
}

fn lambda_context() -> lambda_http::Context {
    let mut ctx = lambda_http::Context::default();
    ctx.request_id = format!("local-{:016x}", rand::random::<u64>());
    ctx
}

/// One SQS message as the Lambda event source mapping presents it.
fn sqs_record(m: &aws_sdk_sqs::types::Message, queue_arn: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = m
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone()))).collect())
        .unwrap_or_default();
    let message_attributes: serde_json::Map<String, Value> = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), json!({ "stringValue": v.string_value(), "dataType": v.data_type() })))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
        "attributes": attributes, "messageAttributes": message_attributes, "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": crate::provision::REGION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_literals_parameters_and_greedy_tails() {
        let p = parse_path("/api/webhooks/subscriptions/{id}");
        assert_eq!(match_path(&p, "/api/webhooks/subscriptions/a%20b").unwrap()["id"], "a b");
        assert!(match_path(&p, "/api/webhooks/subscriptions").is_none());
        assert!(match_path(&p, "/api/webhooks/subscriptions/1/extra").is_none());
        let g = parse_path("/files/{key+}");
        assert_eq!(match_path(&g, "/files/a/b/c").unwrap()["key"], "a/b/c");
        assert!(match_path(&parse_path("/health"), "/health").unwrap().is_empty());
    }
}
