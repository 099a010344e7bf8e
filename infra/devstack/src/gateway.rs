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

pub struct Gateway {
    routes: Vec<LocalRoute>,
}

impl Gateway {
    /// Builds one context per function from its template environment, as Lambda would.
    pub fn new(template: &Template, stack: &LocalStack, sdk: &SdkConfig) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        for def in template.functions()? {
            let function = hub::functions::by_name(&def.binary).with_context(|| {
                format!(
                    "template names binary {} but hub::functions has no such function",
                    def.binary
                )
            })?;
            let env = stack.function_env(template, &def.logical_id)?;
            let config = hub::Config::from_lookup(|k| env.get(k).cloned())
                .with_context(|| format!("configuration of {}", def.logical_id))?;
            let ctx = Arc::new(hub::Context::new(config, sdk.clone()));
            match function.handler {
                Handler::Http(handler) => {
                    if def.routes.is_empty() {
                        bail!(
                            "{} is an HTTP function without an HttpApi event",
                            def.logical_id
                        );
                    }
                    for route in def.routes {
                        let segments = parse_path(&route.path);
                        routes.push(LocalRoute {
                            route,
                            segments,
                            name: function.name,
                            handler,
                            ctx: ctx.clone(),
                        });
                    }
                }
            }
        }
        Ok(Self { routes })
    }

    pub fn routes(&self) -> Vec<(Route, &'static str)> {
        self.routes
            .iter()
            .map(|r| (r.route.clone(), r.name))
            .collect()
    }

    /// Accepts connections until the listener fails or the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        while let Ok((stream, peer)) = listener.accept().await {
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(413, "Request Entity Too Large"),
        };
        let path = parts.uri.path().to_string();
        let matched = self.routes.iter().find_map(|r| {
            let method_ok = r.route.method == "ANY" || r.route.method == parts.method.as_str();
            match_path(&r.segments, &path)
                .filter(|_| method_ok)
                .map(|params| (r, params))
        });
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
        let request_id = event["requestContext"]["requestId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut lambda_ctx = lambda_http::Context::default();
        lambda_ctx.request_id = request_id;
        let service = hub::entry::http_service(route.ctx.clone(), route.name, route.handler);
        let mut adapter = Adapter::from(service);
        match adapter.call(LambdaEvent::new(request, lambda_ctx)).await {
            Ok(response) => {
                from_lambda_response(serde_json::to_value(response).unwrap_or(Value::Null))
            }
            Err(never) => match never {},
        }
    }
}

fn parse_path(path: &str) -> Vec<Segment> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if name.ends_with('+') => {
                    Segment::Greedy(name.trim_end_matches('+').to_string())
                }
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(s.to_string()),
            },
        )
        .collect()
}

fn match_path(segments: &[Segment], path: &str) -> Option<HashMap<String, String>> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
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
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        let entry = headers
            .entry(name.as_str().to_string())
            .or_insert(Value::String(String::new()));
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
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_text = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("x-www-form-urlencoded")
        || content_type.contains("javascript");
    let (body_value, base64) = if body.is_empty() {
        (Value::Null, false)
    } else if is_text && std::str::from_utf8(body).is_ok() {
        (
            Value::String(String::from_utf8_lossy(body).into_owned()),
            false,
        )
    } else {
        (Value::String(B64.encode(body)), true)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
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
    builder
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| plain(502, "Internal Server Error"))
}

/// API Gateway's own answers (no route, body too large): `{"message": ...}`.
fn plain(status: u16, message: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            json!({ "message": message }).to_string(),
        )))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_literals_parameters_and_greedy_tails() {
        let p = parse_path("/api/webhooks/subscriptions/{id}");
        assert_eq!(
            match_path(&p, "/api/webhooks/subscriptions/a%20b").unwrap()["id"],
            "a b"
        );
        assert!(match_path(&p, "/api/webhooks/subscriptions").is_none());
        assert!(match_path(&p, "/api/webhooks/subscriptions/1/extra").is_none());
        let g = parse_path("/files/{key+}");
        assert_eq!(match_path(&g, "/files/a/b/c").unwrap()["key"], "a/b/c");
        assert!(
            match_path(&parse_path("/health"), "/health")
                .unwrap()
                .is_empty()
        );
    }
}
