//! The platforms' signing keys: each registration's JWKS, fetched through the SSRF guard (the URL came
//! from a registration form), cached per instance for an hour, and fetched again when a launch names a
//! `kid` the cache does not know (the platform rotated its key), at most once per [`REFETCH_EVERY`] per
//! JWKS: a flood of launches with made-up `kid`s costs the platform one request, not one each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::Value;
use tokio::sync::Mutex;

use super::LtiError;
use crate::Context;

/// How long fetched keys are used without asking again.
const FRESH_FOR: Duration = Duration::from_secs(3600);
/// The least time between two fetches of one JWKS for an unknown `kid`.
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// A JWKS is small; anything bigger is refused.
const MAX_JWKS_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

const UNAVAILABLE: LtiError = LtiError::new("jwks_unavailable", "the platform's keys could not be fetched");
const UNKNOWN_KID: LtiError = LtiError::new("unknown_kid", "the platform's keys do not include the token's kid");

#[derive(Default)]
pub struct PlatformKeys {
    cache: Mutex<HashMap<String, Fetched>>,
    /// When a JWKS fetch last failed, remembered [`REFETCH_EVERY`]: a platform that is down is not asked
    /// at every launch.
    failed: Mutex<HashMap<String, Instant>>,
}

struct Fetched {
    keys: HashMap<String, DecodingKey>,
    at: Instant,
    /// The last fetch caused by an unknown `kid` (the one the rate limit counts).
    refetched: Option<Instant>,
}

impl PlatformKeys {
    /// The RS256 key `kid` of the JWKS at `jwks_url`.
    pub async fn key(&self, ctx: &Context, jwks_url: &str, kid: &str) -> Result<DecodingKey, LtiError> {
        let mut cache = self.cache.lock().await;
        let mut refetched = None;
        if let Some(fetched) = cache.get(jwks_url)
            && fetched.at.elapsed() < FRESH_FOR
        {
            if let Some(key) = fetched.keys.get(kid) {
                return Ok(key.clone());
            }
            if fetched.refetched.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
                return Err(UNKNOWN_KID);
            }
            refetched = Some(Instant::now());
        }
        if self.failed.lock().await.get(jwks_url).is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return Err(UNAVAILABLE);
        }
        let keys = match fetch(ctx, jwks_url).await {
            Ok(keys) => keys,
            Err(e) => {
                self.failed.lock().await.insert(jwks_url.to_string(), Instant::now());
                return Err(e);
            }
        };
        let key = keys.get(kid).cloned();
        cache.insert(jwks_url.to_string(), Fetched { keys, at: Instant::now(), refetched });
        key.ok_or(UNKNOWN_KID)
    }
}

async fn fetch(ctx: &Context, jwks_url: &str) -> Result<HashMap<String, DecodingKey>, LtiError> {
    let client = super::services::client_for(ctx, jwks_url).map_err(|_| UNAVAILABLE)?;
    // Logged without the URL or the address (DESIGN.md §6: no outside URL in logs and errors).
    let request = client.get(jwks_url).map_err(|_| {
        tracing::warn!("LTI platform JWKS URL refused by the outbound guard");
        UNAVAILABLE
    })?;
    let response = request.header("accept", "application/json").timeout(TIMEOUT).send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "LTI platform JWKS unreachable");
        UNAVAILABLE
    })?;
    if !response.status().is_success() {
        tracing::warn!(status = response.status().as_u16(), "LTI platform JWKS answered an error");
        return Err(UNAVAILABLE);
    }
    let body = crate::support::outbound::read_capped(response, MAX_JWKS_BYTES).await.map_err(|_| UNAVAILABLE)?;
    let jwks: Value = serde_json::from_slice(&body).map_err(|_| UNAVAILABLE)?;
    Ok(rsa_keys(&jwks))
}

/// The RS256 signing keys of a JWKS, by `kid` (keys for other algorithms or for encryption are left out).
pub fn rsa_keys(jwks: &Value) -> HashMap<String, DecodingKey> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "RSA" && k["use"].as_str().is_none_or(|u| u == "sig"))
        .filter(|k| k["alg"].as_str().is_none_or(|a| a == "RS256"))
        .filter_map(|k| {
            let key = DecodingKey::from_rsa_components(k["n"].as_str()?, k["e"].as_str()?).ok()?;
            Some((k["kid"].as_str()?.to_string(), key))
        })
        .collect()
}
