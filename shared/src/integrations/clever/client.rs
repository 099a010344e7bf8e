//! A district's client of Clever's API: the district token, Data API pages and the Events API.
//!
//! - **Token**: `GET <oauth>/tokens?owner_type=district` with HTTP Basic (the app's client id and secret),
//!   as Clever issues district tokens; the token of our district is kept in the warm instance. A token
//!   that announces `expires_in` is replaced once `refresh_at` (75 %) of its lifetime has passed; any token
//!   is re-fetched once when Clever answers 401 (Clever rotates tokens), then the request is retried.
//! - **Retries**: 429 waits until `X-RateLimit-Reset` / `Retry-After`; 5xx, timeouts and connection
//!   errors back off exponentially (base, 2×base, 4×base... plus jitter), at most `max_retries` times;
//!   other 4xx (400, 404, 413...) are not retried.
//! - **Pages**: lists follow `links[rel=next]` with `limit` = the configured page size (10,000 by
//!   default: the fewest round trips). A page is kept as its raw bytes and each item is parsed and
//!   mapped in turn, so a 10,000-user page never exists as a whole JSON tree.
//!
//! Credentials and tokens are `secrecy` values: they cannot reach a log.

use std::time::{Duration, Instant};

pub use crate::support::config::CleverSettings;
use base64::Engine;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

/// A Clever app's credentials for one district (one Secrets Manager secret per district).
pub struct Credentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum CleverError {
    /// Clever refused our credentials or token even after a fresh token.
    #[error("Clever refused the credentials (HTTP {0})")]
    Unauthorized(u16),
    /// A 4xx that retrying cannot fix.
    #[error("Clever answered {status} for {path}: {message}")]
    Refused { status: u16, path: String, message: String },
    /// Retries exhausted on 429, 5xx or network errors.
    #[error("Clever unavailable for {path} after {attempts} attempts: {last}")]
    Unavailable { path: String, attempts: u32, last: String },
    #[error("unexpected answer from Clever: {0}")]
    Malformed(String),
}

struct Token {
    value: SecretString,
    fetched: Instant,
    /// Replace after this (a share of the announced lifetime); `None`: until Clever refuses it.
    refresh_after: Option<Duration>,
}

pub struct CleverClient {
    http: reqwest::Client,
    settings: CleverSettings,
    district_id: String,
    credentials: Credentials,
    token: Mutex<Option<Token>>,
    /// Requests sent to Clever (token requests included), for sync reports and benchmarks.
    requests: std::sync::atomic::AtomicU64,
}

impl CleverClient {
    pub fn new(settings: CleverSettings, district_id: &str, credentials: Credentials) -> Result<Self, CleverError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CleverError::Malformed(e.to_string()))?;
        Ok(Self {
            http,
            settings,
            district_id: district_id.to_string(),
            credentials,
            token: Mutex::new(None),
            requests: Default::default(),
        })
    }

    pub fn requests_made(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a token can be obtained now; fetches one if none is held.
    pub async fn check_token(&self) -> Result<(), CleverError> {
        self.token(false).await.map(drop)
    }

    /// Asks Clever for the district's token now, whatever is held (health checks: a held token says
    /// nothing about credentials revoked since), and keeps the fresh one.
    pub async fn verify_credentials(&self) -> Result<(), CleverError> {
        self.token(true).await.map(drop)
    }

    /// The district token, fetched when absent, stale or `force`d (after a 401).
    async fn token(&self, force: bool) -> Result<SecretString, CleverError> {
        let mut held = self.token.lock().await;
        if !force
            && let Some(t) = held.as_ref()
            && t.refresh_after.is_none_or(|after| t.fetched.elapsed() < after)
        {
            return Ok(t.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *held = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, CleverError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.credentials.client_id,
            self.credentials.client_secret.expose_secret()
        ));
        // The list has one token per district that authorized the app, in pages: ours may be on any.
        let mut url = format!("{}?owner_type=district", self.settings.oauth_url);
        let mut pages = 0;
        let entry = loop {
            let bytes = self
                .send_with_retries("/oauth/tokens", || {
                    self.http.get(&url).header("authorization", format!("Basic {basic}"))
                })
                .await?;
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| CleverError::Malformed(e.to_string()))?;
            if let Some(ours) = body["data"]
                .as_array()
                .and_then(|tokens| tokens.iter().find(|t| t["owner"]["id"] == self.district_id.as_str()))
            {
                break ours.clone();
            }
            pages += 1;
            let next = body["links"].as_array().and_then(|links| {
                links.iter().find(|l| l["rel"] == "next").and_then(|l| l["uri"].as_str()).map(str::to_string)
            });
            match next {
                Some(next) if pages < MAX_TOKEN_PAGES => {
                    url = resolve_link(&self.settings.oauth_url, &next)
                        .ok_or_else(|| CleverError::Malformed("the token list links to another host".into()))?;
                }
                _ => return Err(CleverError::Malformed(format!("no token for district {}", self.district_id))),
            }
        };
        let value = entry["access_token"]
            .as_str()
            .ok_or_else(|| CleverError::Malformed("token without access_token".into()))?;
        let refresh_after =
            // An unrepresentable lifetime (an absurd `expires_in`) is treated as none announced.
            entry["expires_in"]
                .as_u64()
                .and_then(|secs| Duration::try_from_secs_f64(secs as f64 * self.settings.refresh_at).ok());
        tracing::info!(
            district_id = self.district_id,
            expires = refresh_after.is_some(),
            "Clever district token fetched"
        );
        Ok(Token { value: SecretString::from(value.to_string()), fetched: Instant::now(), refresh_after })
    }

    /// GET an API path (`/v3.0/...`, query included), with the token and every retry rule.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, CleverError> {
        let bytes = self.get_bytes(path_and_query).await?;
        serde_json::from_slice(&bytes).map_err(|e| CleverError::Malformed(e.to_string()))
    }

    async fn get_bytes(&self, path_and_query: &str) -> Result<Bytes, CleverError> {
        let url = format!("{}{path_and_query}", self.settings.api_url);
        let path = path_and_query.split('?').next().unwrap_or_default().to_string();
        let mut token = self.token(false).await?;
        let mut refreshed = false;
        loop {
            let result = self.send_with_retries(&path, || self.http.get(&url).bearer_auth(token.expose_secret())).await;
            match result {
                Err(CleverError::Unauthorized(status)) if !refreshed => {
                    tracing::info!(
                        district_id = self.district_id,
                        status,
                        "Clever refused the token; fetching a new one"
                    );
                    token = self.token(true).await?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// Every item of a list, following `next` links, each mapped by `map` as its page arrives (items
    /// `map` rejects are counted, not kept). Returns the items and how many were rejected.
    pub async fn list<T>(
        &self,
        path: &str,
        mut map: impl FnMut(Value) -> Option<T>,
    ) -> Result<(Vec<T>, usize), CleverError> {
        let mut pager = self.pages(path, self.settings.page_size);
        let (mut items, mut rejected) = (Vec::new(), 0);
        while let Some(page) = pager.next_page(&mut map).await? {
            rejected += page.rejected;
            items.extend(page.items);
        }
        Ok((items, rejected))
    }

    /// A list read one page of `page_size` at a time, for callers that finish with a page before
    /// asking for the next (the events feed: memory holds one page, whatever the feed's length).
    pub fn pages(&self, path: &str, page_size: usize) -> Pager<'_> {
        let separator = if path.contains('?') { '&' } else { '?' };
        Pager { client: self, path: path.to_string(), next: Some(format!("{path}{separator}limit={page_size}")) }
    }

    /// The newest event id of the district (the baseline of later incremental syncs), `None` when the
    /// feed is empty.
    pub async fn newest_event_id(&self) -> Result<Option<String>, CleverError> {
        let page = self.get("/v3.0/events?ending_before=last&limit=1").await?;
        Ok(page["data"].as_array().and_then(|d| d.last()).and_then(|e| e["data"]["id"].as_str()).map(str::to_string))
    }

    /// One event (`GET /v3.0/events/{id}`): whether a baseline is still in the feed. Clever refuses an
    /// event that left the feed (404 by its definition; any refusal means the same to us).
    pub async fn event(&self, id: &str) -> Result<Value, CleverError> {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        self.get(&format!("/v3.0/events/{id}")).await
    }

    /// The events concerning `school`, oldest first, after `after` (`None`: from the oldest the feed
    /// keeps), one page of `page_size` at a time.
    pub fn events(&self, school: &str, after: Option<&str>, page_size: usize) -> Pager<'_> {
        let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let mut path = format!("/v3.0/events?school={}", encode(school));
        if let Some(after) = after {
            path.push_str(&format!("&starting_after={}", encode(after)));
        }
        self.pages(&path, page_size)
    }

    /// One request with the retry rules; 401/403 come back as [`CleverError::Unauthorized`] /
    /// [`CleverError::Refused`] for the caller to decide.
    async fn send_with_retries(
        &self,
        path: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Bytes, CleverError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (wait, last) = match request().send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match status {
                        200..=299 => match response.bytes().await {
                            Ok(bytes) => return Ok(bytes),
                            // The answer broke off midway: as transient as a failed connection.
                            Err(_) => (self.backoff(attempt), "answer interrupted".to_string()),
                        },
                        401 => return Err(CleverError::Unauthorized(status)),
                        429 => {
                            let wait = rate_limit_wait(response.headers()).min(self.settings.max_rate_limit_wait);
                            tracing::warn!(
                                district_id = self.district_id,
                                path,
                                wait_ms = wait.as_millis() as u64,
                                "Clever rate limit; waiting for its reset"
                            );
                            (wait, "429 rate limited".to_string())
                        }
                        // Clever retries 500, 502 and 503 (and a gateway timeout); 501 and other
                        // statuses are answers, not outages.
                        500 | 502..=504 | 408 => (self.backoff(attempt), format!("HTTP {status}")),
                        _ => {
                            let message = response.text().await.unwrap_or_default();
                            let message = serde_json::from_str::<Value>(&message)
                                .ok()
                                .and_then(|v| v["message"].as_str().map(str::to_string))
                                .unwrap_or(message);
                            return Err(CleverError::Refused { status, path: path.to_string(), message });
                        }
                    }
                }
                Err(e) => (
                    self.backoff(attempt),
                    if e.is_timeout() { "timed out".into() } else { "connection failed".into() },
                ),
            };
            if attempt > self.settings.max_retries {
                return Err(CleverError::Unavailable { path: path.to_string(), attempts: attempt, last });
            }
            tracing::warn!(
                district_id = self.district_id,
                path,
                attempt,
                error = last,
                "Clever request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// `base × 2^(attempt-1)` plus up to 25 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self.settings.retry_base * 2u32.pow(attempt.saturating_sub(1).min(10));
        step + step.mul_f64(rand::random::<f64>() * 0.25)
    }
}

/// A list being read page by page ([`CleverClient::pages`]).
pub struct Pager<'a> {
    client: &'a CleverClient,
    path: String,
    next: Option<String>,
}

/// One page's items, mapped, and how many the mapping rejected.
pub struct MappedPage<T> {
    pub items: Vec<T>,
    pub rejected: usize,
}

impl Pager<'_> {
    /// The next page, each item parsed and mapped in turn (the page's raw bytes are dropped before
    /// this returns); `None` after the last page.
    pub async fn next_page<T>(
        &mut self,
        mut map: impl FnMut(Value) -> Option<T>,
    ) -> Result<Option<MappedPage<T>>, CleverError> {
        let Some(current) = self.next.take() else { return Ok(None) };
        let bytes = self.client.get_bytes(&current).await?;
        let page: Page =
            serde_json::from_slice(&bytes).map_err(|e| CleverError::Malformed(format!("{}: {e}", self.path)))?;
        let (mut items, mut rejected) = (Vec::with_capacity(page.data.len()), 0);
        for entry in &page.data {
            let object: Value =
                serde_json::from_str(entry.data.get()).map_err(|e| CleverError::Malformed(e.to_string()))?;
            match map(object) {
                Some(item) => items.push(item),
                None => rejected += 1,
            }
        }
        self.next = next_link(&page.links)?;
        Ok(Some(MappedPage { items, rejected }))
    }
}

/// A list page as Clever sends it; items stay raw until they are mapped one by one.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    data: Vec<Entry<'a>>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Link {
    rel: String,
    uri: String,
}

/// The `next` link of a page, as a path and query.
fn next_link(links: &[Link]) -> Result<Option<String>, CleverError> {
    let Some(next) = links.iter().find(|l| l.rel == "next") else { return Ok(None) };
    // Clever's links are paths of its API (`/v3.0/...`, `/v3.1/...`); an absolute link is reduced to its
    // path, so requests stay on the configured host. A `next` link we cannot follow is an error: ending
    // there would read a list cut short as complete, and a full sync would delete the rest.
    match next.uri.find("/v3.") {
        Some(i) => Ok(Some(next.uri[i..].to_string())),
        None => Err(CleverError::Malformed("a next link that is not a Clever API path".into())),
    }
}

/// Pages of the token list read at most (1,000 districts at Clever's default page size).
const MAX_TOKEN_PAGES: usize = 10;

/// A `links` URI (a path on Clever's host, or absolute) made absolute against `base`; `None` when it
/// points at another origin (the app's credentials go with the request: never off Clever's host).
fn resolve_link(base: &str, link: &str) -> Option<String> {
    let base = url::Url::parse(base).ok()?;
    let next = base.join(link).ok()?;
    (next.origin() == base.origin()).then(|| next.to_string())
}

/// How long a 429 asks us to wait: until `X-RateLimit-Reset` (unix seconds) or `Retry-After`, whichever
/// is later; one second when neither says.
fn rate_limit_wait(headers: &http::HeaderMap) -> Duration {
    let number =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let until_reset = number("x-ratelimit-reset").map(|reset| reset.saturating_sub(now));
    let retry_after = number("retry-after");
    Duration::from_secs(until_reset.max(retry_after).unwrap_or(1).max(1))
}

#[cfg(test)]
mod tests {

    #[test]
    fn token_list_links_stay_on_clever_s_host() {
        let base = "https://clever.com/oauth/tokens";
        assert_eq!(
            resolve_link(base, "/oauth/tokens?owner_type=district&starting_after=t1").as_deref(),
            Some("https://clever.com/oauth/tokens?owner_type=district&starting_after=t1")
        );
        assert_eq!(resolve_link(base, "https://evil.example/oauth/tokens"), None);
        assert_eq!(resolve_link(base, "//evil.example/x"), None);
    }

    use super::*;
    use serde_json::json;

    fn links(v: Value) -> Vec<Link> {
        let text = json!({"data": [], "links": v}).to_string();
        serde_json::from_str::<Page>(&text).unwrap().links
    }

    #[test]
    fn next_links_are_followed_as_paths() {
        let page = links(json!([{"rel": "self", "uri": "/v3.0/users?limit=2"},
                                {"rel": "next", "uri": "/v3.0/users?limit=2&starting_after=abc"}]));
        assert_eq!(next_link(&page).unwrap().as_deref(), Some("/v3.0/users?limit=2&starting_after=abc"));
        let absolute = links(json!([{"rel": "next", "uri": "https://api.clever.com/v3.0/users?starting_after=x"}]));
        assert_eq!(next_link(&absolute).unwrap().as_deref(), Some("/v3.0/users?starting_after=x"));
        assert_eq!(next_link(&links(json!([{"rel": "self", "uri": "/v3.0/users"}]))).unwrap(), None);
        // Another API version is followed; a link that is no API path fails the list instead of ending it.
        let v31 = links(json!([{"rel": "next", "uri": "/v3.1/users?starting_after=y"}]));
        assert_eq!(next_link(&v31).unwrap().as_deref(), Some("/v3.1/users?starting_after=y"));
        assert!(next_link(&links(json!([{"rel": "next", "uri": "/users?starting_after=z"}]))).is_err());
    }

    #[test]
    fn a_429_waits_for_the_later_of_reset_and_retry_after() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-reset", (now + 7).to_string().parse().unwrap());
        assert!((6..=7).contains(&rate_limit_wait(&h).as_secs()));
        h.insert("retry-after", "20".parse().unwrap());
        assert_eq!(rate_limit_wait(&h).as_secs(), 20);
        assert_eq!(rate_limit_wait(&http::HeaderMap::new()).as_secs(), 1);
    }
}
