//! Calling a platform's LTI Advantage services (AGS, NRPS): an access token from the platform's
//! token endpoint by the OAuth 2.0 client credentials grant with a signed client assertion (RFC 7523,
//! a JWT from our client id to the token URL, signed by the tool key), cached per instance per
//! registration and scope until a minute before it expires. A service that answers 401 gets the call
//! again once with a new token ([`call`]).
//!
//! Every URL (token endpoint, line items, memberships) goes through the SSRF guard, and none is logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::registration::Registration;
use crate::support::outbound::OutboundClient;
use crate::{Context, support::crypto};

/// Outbound calls to a platform wait this long at most.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A token answer larger than this is not a token answer.
const MAX_TOKEN_ANSWER: usize = 16 * 1024;

/// Why a service call did not happen; `retryable` when a later attempt may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub retryable: bool,
    pub message: String,
}

impl ServiceError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self { retryable: true, message: message.into() }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self { retryable: false, message: message.into() }
    }
    /// The outcome an HTTP status means (408, 429 and 5xx are worth retrying).
    pub fn of_status(status: u16, what: &str) -> Self {
        let message = format!("{what} answered {status}");
        if crate::support::outbound::retryable_status(status) { Self::retry(message) } else { Self::refused(message) }
    }
}

/// Access tokens of this instance, per registration and scope.
#[derive(Default)]
pub struct ServiceTokens {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl ServiceTokens {
    /// A token for `scope` at the registration's platform: the cached one, or a new one.
    pub async fn get(&self, ctx: &Context, registration: &Registration, scope: &str) -> Result<String, ServiceError> {
        let key = (registration.id.clone(), scope.to_string());
        if let Some((token, until)) = self.tokens.lock().await.get(&key)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = request_token(ctx, registration, scope).await?;
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        self.tokens.lock().await.insert(key, (token.clone(), until));
        Ok(token)
    }

    /// Drops a token the platform no longer accepts.
    pub async fn forget(&self, registration: &Registration, scope: &str) {
        self.tokens.lock().await.remove(&(registration.id.clone(), scope.to_string()));
    }
}

/// The client assertion: from our client id, to the platform's token URL, for 5 minutes, once (`jti`).
pub fn client_assertion_claims(registration: &Registration, now: i64) -> Value {
    json!({
        "iss": registration.client_id,
        "sub": registration.client_id,
        "aud": registration.token_url,
        "iat": now,
        "exp": now + 300,
        "jti": crypto::random_token(16),
    })
}

/// An SSRF-guarded client for one URL that came from a registration or a launch.
pub fn client_for(ctx: &Context, url: &str) -> Result<OutboundClient, ServiceError> {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| ServiceError::refused("a service URL is not a URL"))?;
    ctx.outbound(Some(vec![host])).map_err(|e| ServiceError::retry(e.to_string()))
}

/// Calls a platform service at `url` with a token for `scope`; `build` makes the request from the
/// SSRF-guarded client. A 401 makes the cached token be forgotten and the call made once more with a new
/// one; the answer of that second call is the caller's (a 401 again included).
pub async fn call(
    ctx: &Context,
    registration: &Registration,
    scope: &str,
    url: &str,
    build: impl Fn(&OutboundClient) -> Result<reqwest::RequestBuilder, crate::support::outbound::OutboundError>,
) -> Result<reqwest::Response, ServiceError> {
    let client = client_for(ctx, url)?;
    let send = |token: String| {
        let request = build(&client);
        async move {
            request
                .map_err(|_| ServiceError::refused("a service URL is refused by the outbound guard"))?
                .bearer_auth(token)
                .timeout(TIMEOUT)
                .send()
                .await
                .map_err(|e| ServiceError::retry(format!("service request failed: {}", e.without_url())))
        }
    };
    let tokens = ctx.kept::<ServiceTokens>();
    let response = send(tokens.get(ctx, registration, scope).await?).await?;
    if response.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(response);
    }
    tokens.forget(registration, scope).await;
    send(tokens.get(ctx, registration, scope).await?).await
}

async fn request_token(
    ctx: &Context,
    registration: &Registration,
    scope: &str,
) -> Result<(String, Duration), ServiceError> {
    let key = super::tool_key::current(ctx).await.map_err(|e| ServiceError::retry(e.message))?;
    let assertion = key.sign(&client_assertion_claims(registration, ctx.clock.now()));
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        .append_pair("client_assertion", &assertion)
        .append_pair("scope", scope)
        .finish();
    let request = client_for(ctx, &registration.token_url)?.post(&registration.token_url).map_err(|_| {
        tracing::warn!(registration_id = registration.id, "LTI token URL refused by the outbound guard");
        ServiceError::refused("the platform's token URL is refused by the outbound guard")
    })?;
    let response = request
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .timeout(TIMEOUT)
        .body(form)
        .send()
        .await
        .map_err(|e| ServiceError::retry(format!("token request failed: {}", e.without_url())))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        tracing::warn!(registration_id = registration.id, status, "LTI platform refused a service token");
        return Err(ServiceError::of_status(status, "the platform's token endpoint"));
    }
    let body = crate::support::outbound::read_capped(response, MAX_TOKEN_ANSWER)
        .await
        .map_err(|_| ServiceError::retry("the token answer was too large or cut"))?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|_| ServiceError::retry("the token answer is not JSON"))?;
    let token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(|| ServiceError::retry("the token answer has no access_token"))?;
    let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(300).clamp(60, 86_400));
    Ok((token.to_string(), lifetime))
}
