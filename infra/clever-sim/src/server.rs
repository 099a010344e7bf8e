//! The simulator's HTTP side, shaped after Clever's API definitions (`shared/reference/clever/`):
//!
//! - `GET /oauth/tokens?owner_type=district` with HTTP Basic (the app's client id and secret): the
//!   district tokens of every district that authorized the app, paged like the Data API (`limit`,
//!   `starting_after`, `links`), `{"data": [{"id", "owner": {"type": "district", "id"}, "access_token",
//!   ...}], "links": [...]}`, with `expires_in` only when the district's tokens expire;
//! - `GET /v3.0/districts`, `/v3.0/schools`, `/v3.0/schools/{id}`, `/v3.0/schools/{id}/users?role=`,
//!   `/v3.0/schools/{id}/sections`: `{"data": [{"data": {...}, "uri"}], "links": [{"rel", "uri"}]}`, paged
//!   with `limit` (default 100, at most 10,000: above, 413 as Clever answers), `starting_after` and
//!   `ending_before` (ids, or `last`); the same under `/v3.1/`, whose links keep `/v3.1/`;
//! - `GET /v3.0/events?starting_after=&ending_before=&school=&limit=`: the district's feed, oldest first;
//!   a `starting_after` that left the feed answers 404 (the status Clever's definition documents; the
//!   `expired_cursor_status` fault picks another), a district without events 403 (`events_disabled_status`);
//! - `GET /v3.0/events/{id}`: one event, 404 once it left the feed;
//! - a real fixed-window rate limit per token (1,200 requests a minute, as Clever's), with
//!   `X-RateLimit-Limit`, `-Remaining`, `-Reset` and `-Bucket` on every API answer and `Retry-After` on 429s.
//!
//! Faults are injected through [`Faults`] (in-process) or `POST /_sim/faults` (a running simulator).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::world::{World, user_in_school};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Clever's fixed-window limit: requests per token per window.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    pub limit: u64,
    pub window_secs: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { limit: 1200, window_secs: 60 }
    }
}

/// Requests counted per token in the current window.
#[derive(Debug, Default)]
struct Windows {
    counts: std::collections::HashMap<String, (u64, u64)>,
}

impl Windows {
    /// Counts one request of `token`; returns how many remain in its window and when the window ends
    /// (unix seconds), or `None` remaining when the request is over the limit.
    fn take(&mut self, token: &str, rate: RateLimit, now: u64) -> (Option<u64>, u64) {
        let window = now / rate.window_secs.max(1);
        let reset = (window + 1) * rate.window_secs.max(1);
        let entry = self.counts.entry(token.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= rate.limit {
            return (None, reset);
        }
        entry.1 += 1;
        (Some(rate.limit - entry.1), reset)
    }
}

/// Misbehaviour to inject, consumed request by request.
#[derive(Debug, Default)]
pub struct Faults {
    /// Statuses the next API requests answer, one each (a 429 carries `Retry-After` and `X-RateLimit-Reset`).
    pub statuses: VecDeque<u16>,
    /// Seconds until the rate-limit window resets, announced by 429s.
    pub rate_limit_reset_secs: u64,
    /// The next `.0` API requests are held `.1` before answering (client timeouts).
    pub stall: Option<(u32, Duration)>,
    /// After this many more Data API pages, every Data API request answers 500 (a sync failing midway).
    pub fail_after_pages: Option<usize>,
    /// Schools whose Data API requests all answer 500 (one school failing while others succeed).
    pub failing_schools: std::collections::HashSet<String>,
    /// Page size of the token list when the request names none (an app authorized by many districts
    /// reads several pages).
    pub token_page_size: Option<usize>,
    /// The status of an events request whose `starting_after` left the feed (default 404).
    pub expired_cursor_status: Option<u16>,
    /// The status of an events request of a district without events (default 403).
    pub events_disabled_status: Option<u16>,
    /// After this many more events pages, events requests answer 500 (an incremental sync failing midway).
    pub fail_events_after_pages: Option<usize>,
    /// The fixed-window rate limit (Clever's 1,200 a minute per token by default).
    pub rate_limit: RateLimit,
    /// `/schools` lists nothing while `/schools/{id}` still answers (an incident on Clever's side).
    pub empty_school_listing: bool,
}

/// A running simulator.
#[derive(Clone)]
pub struct Simulator {
    pub base_url: String,
    pub world: Arc<Mutex<World>>,
    pub faults: Arc<Mutex<Faults>>,
    /// Every request's path and query, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Every API answer's status and the path it answered, in order.
    pub answers: Arc<Mutex<Vec<(u16, String)>>>,
    windows: Arc<Mutex<Windows>>,
}

impl Simulator {
    /// Serves `world` on a loopback port (0: any free port).
    pub async fn start(world: World, port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let sim = Self {
            base_url: format!("http://{}", listener.local_addr()?),
            world: Arc::new(Mutex::new(world)),
            faults: Default::default(),
            requests: Default::default(),
            answers: Default::default(),
            windows: Default::default(),
        };
        let server = sim.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sim = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let sim = sim.clone();
                        async move { Ok::<_, std::convert::Infallible>(sim.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(sim)
    }

    /// How many requests reached a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(prefix)).count()
    }

    /// How many API answers had `status`.
    pub fn answered(&self, status: u16) -> usize {
        self.answers.lock().unwrap().iter().filter(|(s, _)| *s == status).count()
    }

    async fn handle(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let response = self.route(req).await;
        self.answers.lock().unwrap().push((response.status().as_u16(), path));
        response
    }

    async fn route(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query: Vec<(String, String)> = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        self.requests.lock().unwrap().push(format!("{path}?{}", parts.uri.query().unwrap_or("")));
        let auth =
            parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if path == "/_sim/faults" && parts.method == http::Method::POST {
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return self.configure(&body);
        }
        if path == "/oauth/tokens" {
            return self.tokens(&auth, &query);
        }
        // Clever serves every API version from the same data; links keep the version asked for.
        let Some(version) = ["/v3.0", "/v3.1"].into_iter().find(|v| path.starts_with(&format!("{v}/"))) else {
            return answer(404, &json!({"message": "not found"}), &[]);
        };
        // Faults first, as a real outage would answer before looking at the request.
        let (status, stall) = {
            let mut f = self.faults.lock().unwrap();
            let stall = match &mut f.stall {
                Some((n, d)) if *n > 0 => {
                    *n -= 1;
                    Some(*d)
                }
                _ => None,
            };
            (f.statuses.pop_front(), stall)
        };
        if let Some(d) = stall {
            tokio::time::sleep(d).await;
        }
        let (injected_reset, rate) = {
            let f = self.faults.lock().unwrap();
            (f.rate_limit_reset_secs, f.rate_limit)
        };
        if let Some(code) = status {
            let reset_at = now() + injected_reset;
            let mut headers = vec![
                ("x-ratelimit-limit", rate.limit.to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", reset_at.to_string()),
            ];
            if code == 429 {
                headers.push(("retry-after", injected_reset.to_string()));
                return answer(429, &json!({"message": "rate limit exceeded"}), &headers);
            }
            return answer(code, &json!({"message": "injected failure"}), &headers);
        }
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return answer(401, &json!({"message": "missing bearer token"}), &[]);
        };
        // Clever's fixed window: every API request of a token counts, refused ones too.
        let now = now();
        let (remaining, reset_at) = self.windows.lock().unwrap().take(token, rate, now);
        let mut world = self.world.lock().unwrap();
        let bucket =
            world.district_by_token(token).map_or_else(|| "unknown".to_string(), |d| format!("district-{}", d.id));
        let limits = [
            ("x-ratelimit-limit", rate.limit.to_string()),
            ("x-ratelimit-remaining", remaining.unwrap_or(0).to_string()),
            ("x-ratelimit-reset", reset_at.to_string()),
            ("x-ratelimit-bucket", bucket),
        ];
        if remaining.is_none() {
            let mut headers = limits.to_vec();
            headers.push(("retry-after", reset_at.saturating_sub(now).max(1).to_string()));
            return answer(429, &json!({"message": "rate limit exceeded"}), &headers);
        }
        let Some(district) = world.district_by_token(token) else {
            return answer(401, &json!({"message": "invalid or rotated token"}), &limits);
        };
        if district.token_lifetime.is_some_and(|life| district.token_issued_at.elapsed().as_secs() >= life) {
            return answer(401, &json!({"message": "token expired"}), &limits);
        }
        let district_id = district.id.clone();
        let events_enabled = district.events_enabled;
        let rest = &path[version.len() + 1..];
        if let Some(school) = rest.strip_prefix("schools/").and_then(|p| p.split('/').next())
            && self.faults.lock().unwrap().failing_schools.contains(school)
        {
            return answer(500, &json!({"message": "internal error"}), &limits);
        }
        {
            let mut f = self.faults.lock().unwrap();
            let budget =
                if rest.starts_with("events") { &mut f.fail_events_after_pages } else { &mut f.fail_after_pages };
            if let Some(left) = budget {
                if *left == 0 {
                    return answer(500, &json!({"message": "internal error"}), &limits);
                }
                *left -= 1;
            }
        }
        let (expired_status, disabled_status) = {
            let f = self.faults.lock().unwrap();
            (f.expired_cursor_status.unwrap_or(404), f.events_disabled_status.unwrap_or(403))
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let result = match segments.as_slice() {
            ["districts"] => {
                let d = json!({"id": district_id, "name": world.districts.iter().find(|d| d.id == district_id).map(|d| d.name.clone())});
                Ok(json!({"data": [{"data": d, "uri": format!("{version}/districts/{district_id}")}], "links": []}))
            }
            ["schools"] if self.faults.lock().unwrap().empty_school_listing => Ok(json!({"data": [], "links": []})),
            ["schools"] => page(
                world.schools.iter().filter(|(_, s)| s["district"] == district_id.as_str()),
                &query,
                &path,
                version,
                "schools",
            ),
            ["schools", id] => match world.schools.get(*id).filter(|s| s["district"] == district_id.as_str()) {
                Some(s) => Ok(json!({"data": s, "links": []})),
                None => Err((404, "school not found".into())),
            },
            ["schools", id, "users"] => {
                let role = param(&query, "role").unwrap_or("student").to_string();
                if world.schools.get(*id).is_none_or(|s| s["district"] != district_id.as_str()) {
                    Err((404, "school not found".into()))
                } else {
                    page(
                        world.users.iter().filter(|(_, u)| user_in_school(u, id, &role)),
                        &query,
                        &path,
                        version,
                        "users",
                    )
                }
            }
            ["schools", id, "sections"] => {
                if world.schools.get(*id).is_none_or(|s| s["district"] != district_id.as_str()) {
                    Err((404, "school not found".into()))
                } else {
                    world.term_epoch += 1;
                    let rendered: Vec<(String, Value)> = world
                        .sections
                        .iter()
                        .filter(|(_, s)| s["school"] == *id)
                        .map(|(sid, s)| (sid.clone(), world.render_section(s)))
                        .collect();
                    page(rendered.iter().map(|(k, v)| (k, v)), &query, &path, version, "sections")
                }
            }
            ["events", id] if !events_enabled => {
                let _ = id;
                Err((disabled_status, "events are not enabled for this district".into()))
            }
            ["events", id] => match world.events.get(*id).filter(|e| e.district == district_id) {
                Some(e) => {
                    Ok(json!({"data": e.body, "links": [{"rel": "self", "uri": format!("{version}/events/{id}")}]}))
                }
                None => Err((404, "event not found".into())),
            },
            ["events"] => {
                if !events_enabled {
                    Err((disabled_status, "events are not enabled for this district".into()))
                } else if param(&query, "starting_after").is_some_and(|after| {
                    !world.events.contains_key(after)
                        && world.events_retained_after.as_deref().is_some_and(|cut| after <= cut)
                }) {
                    Err((expired_status, "starting_after is no longer in the events feed (30 days)".into()))
                } else {
                    let school = param(&query, "school").map(str::to_string);
                    let events: Vec<(&String, &Value)> = world
                        .events
                        .iter()
                        .filter(|(_, e)| e.district == district_id)
                        .filter(|(_, e)| school.as_ref().is_none_or(|s| e.schools.contains(s)))
                        .map(|(id, e)| (id, &e.body))
                        .collect();
                    page(events.into_iter(), &query, &path, version, "events")
                }
            }
            _ => Err((404, "not found".into())),
        };
        match result {
            Ok(body) => answer(200, &body, &limits),
            Err((status, message)) => answer(status, &json!({"message": message}), &limits),
        }
    }

    fn tokens(&self, auth: &str, query: &[(String, String)]) -> hyper::Response<Full<Bytes>> {
        let credentials = auth
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some((id, secret)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
            return answer(401, &json!({"error": "invalid_client"}), &[]);
        };
        let world = self.world.lock().unwrap();
        let tokens: Vec<(String, Value)> = world
            .districts
            .iter()
            .filter(|d| d.client_id == id && d.client_secret == secret)
            .map(|d| {
                let mut token = json!({"id": format!("tok-{}", d.id), "created": "2026-08-15T12:00:00.000Z",
                    "owner": {"type": "district", "id": d.id}, "access_token": d.token,
                    "scopes": ["read:district_admins", "read:school_admins", "read:students", "read:teachers", "read:sections"]});
                if let Some(life) = d.token_lifetime {
                    token["expires_in"] = json!(life.saturating_sub(d.token_issued_at.elapsed().as_secs()));
                }
                (format!("tok-{}", d.id), token)
            })
            .collect();
        if tokens.is_empty() {
            return answer(401, &json!({"error": "invalid_client"}), &[]);
        }
        let mut query = query.to_vec();
        if let Some(size) = self.faults.lock().unwrap().token_page_size
            && param(&query, "limit").is_none()
        {
            query.push(("limit".into(), size.to_string()));
        }
        let mut sorted = tokens;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        match page(sorted.iter().map(|(id, v)| (id, v)), &query, "/oauth/tokens", "", "tokens") {
            // Token entries are listed as they are, not wrapped like Data API records.
            Ok(mut listed) => {
                let entries: Vec<Value> =
                    listed["data"].as_array().unwrap().iter().map(|e| e["data"].clone()).collect();
                listed["data"] = json!(entries);
                answer(200, &listed, &[])
            }
            Err((status, message)) => answer(status, &json!({"message": message}), &[]),
        }
    }

    /// `POST /_sim/faults` with any of `{"statuses": [429, 500], "rate_limit_reset_secs", "stall": [n, ms],
    /// "fail_after_pages", "fail_events_after_pages", "rate_limit": [limit, window_secs],
    /// "expired_cursor_status", "events_disabled_status", "events_enabled": bool,
    /// "rotate_token": district index, "expire_events": true}`.
    fn configure(&self, body: &[u8]) -> hyper::Response<Full<Bytes>> {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return answer(400, &json!({"message": "JSON expected"}), &[]);
        };
        let mut f = self.faults.lock().unwrap();
        if let Some(list) = v["statuses"].as_array() {
            f.statuses.extend(list.iter().filter_map(|s| s.as_u64()).map(|s| s as u16));
        }
        if let Some(secs) = v["rate_limit_reset_secs"].as_u64() {
            f.rate_limit_reset_secs = secs;
        }
        if let (Some(n), Some(ms)) = (v["stall"][0].as_u64(), v["stall"][1].as_u64()) {
            f.stall = Some((n as u32, Duration::from_millis(ms)));
        }
        if let Some(n) = v["fail_after_pages"].as_u64() {
            f.fail_after_pages = Some(n as usize);
        }
        if let Some(n) = v["fail_events_after_pages"].as_u64() {
            f.fail_events_after_pages = Some(n as usize);
        }
        if let (Some(limit), Some(window_secs)) = (v["rate_limit"][0].as_u64(), v["rate_limit"][1].as_u64()) {
            f.rate_limit = RateLimit { limit, window_secs };
        }
        if let Some(status) = v["expired_cursor_status"].as_u64() {
            f.expired_cursor_status = Some(status as u16);
        }
        if let Some(status) = v["events_disabled_status"].as_u64() {
            f.events_disabled_status = Some(status as u16);
        }
        let mut world = self.world.lock().unwrap();
        if let Some(on) = v["events_enabled"].as_bool() {
            world.districts.iter_mut().for_each(|d| d.events_enabled = on);
        }
        if let Some(d) = v["rotate_token"].as_u64()
            && (d as usize) < world.districts.len()
        {
            world.rotate_token(d as usize);
        }
        if v["expire_events"] == true {
            world.expire_events();
        }
        answer(204, &Value::Null, &[])
    }
}

/// One page of `items` (in id order) as Clever lists them, with `self`, `next` and `prev` links
/// (item `uri`s under `version`).
fn page<'a>(
    items: impl Iterator<Item = (&'a String, &'a Value)>,
    query: &[(String, String)],
    path: &str,
    version: &str,
    kind: &str,
) -> Result<Value, (u16, String)> {
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Ok(n) if n > MAX_LIMIT => return Err((413, format!("limit must be at most {MAX_LIMIT}"))),
            _ => return Err((400, format!("limit must be between 1 and {MAX_LIMIT}"))),
        },
    };
    let all: Vec<(&String, &Value)> = items.collect();
    let (start, end) = match (param(query, "starting_after"), param(query, "ending_before")) {
        (Some(after), _) => {
            let start = all.partition_point(|(id, _)| id.as_str() <= after);
            (start, (start + limit).min(all.len()))
        }
        (None, Some(before)) => {
            let end = if before == "last" { all.len() } else { all.partition_point(|(id, _)| id.as_str() < before) };
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(all.len())),
    };
    let slice = &all[start..end];
    let uri = |id: &str| format!("{version}/{kind}/{id}");
    let data: Vec<Value> = slice.iter().map(|(id, v)| json!({"data": v, "uri": uri(id)})).collect();
    let others: String = query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "starting_after" | "ending_before" | "limit"))
        .map(|(k, v)| format!("&{k}={v}"))
        .collect();
    let mut links = vec![json!({"rel": "self", "uri": format!("{path}?limit={limit}{others}")})];
    if end < all.len() && !slice.is_empty() {
        links.push(json!({"rel": "next", "uri": format!("{path}?limit={limit}{others}&starting_after={}", slice[slice.len() - 1].0)}));
    }
    if start > 0 && !slice.is_empty() {
        links.push(json!({"rel": "prev", "uri": format!("{path}?limit={limit}{others}&ending_before={}", slice[0].0)}));
    }
    Ok(json!({"data": data, "links": links}))
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn answer(status: u16, body: &Value, headers: &[(&str, String)]) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(status).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let bytes = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    b.body(Full::new(bytes)).expect("valid response")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
