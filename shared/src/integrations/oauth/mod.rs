//! The OAuth 2.0 authorization server of partner apps (RFC 6749 with the RFC 9700 security best
//! practice): authorization code with PKCE (`S256` only) and a consent page, refresh tokens rotated
//! on each use (a reused one revokes its whole grant), client credentials for a partner's own
//! organization, revocation (RFC 7009), introspection (RFC 7662), metadata (RFC 8414) and the `iss`
//! response parameter (RFC 9207).
//!
//! Every token belongs to a **grant**: one authorization of one client (by one user, or by the
//! client itself). Revoking anything revokes its grant, and every use of a token checks its grant
//! and its client, so a revocation or a deleted client takes effect at once everywhere.
//!
//! Access tokens are EdDSA (Ed25519) JWTs (RFC 9068 shape), verifiable by partners with the JWKS at
//! `/.well-known/jwks.json`; refresh tokens and codes are random strings stored only as hashes.

pub mod authorize;
pub mod clients;
pub mod keys;
pub mod token;

use http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::Context;

/// The scopes partners may ask for, in plain words for the consent page.
pub const SCOPES: &[(&str, &str)] = &[
    ("profile", "See your name, email address and role"),
    ("progress:read", "See your quests, XP and badges"),
    ("quests:read", "See your organization's quests"),
    ("webhooks:manage", "Manage your organization's webhook subscriptions and see their deliveries"),
];

/// Access tokens live this long (seconds); refresh tokens as long as a session.
pub const ACCESS_TOKEN_TTL: i64 = 3600;
pub use crate::store::oauth::REFRESH_TOKEN_TTL;
/// Authorization codes live this long.
pub const CODE_TTL: i64 = 600;
/// The audience of our access tokens: this hub's API.
pub const AUDIENCE: &str = "hub-api";

/// A scope string (`"a b c"`) as a sorted, de-duplicated list; `Err` names an unknown scope.
pub fn parse_scope(scope: &str) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !SCOPES.iter().any(|(known, _)| *known == s) {
            return Err(s.chars().take(40).collect());
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    scopes.sort();
    Ok(scopes)
}

/// The issuer: this hub's public origin (`iss` of tokens, RFC 8414 and RFC 9207). Without
/// `PUBLIC_BASE_URL` the OAuth server refuses to work (a wrong issuer would be signed into tokens).
pub fn issuer(ctx: &Context) -> Result<String, crate::ApiError> {
    ctx.config.public_base_url.clone().ok_or_else(|| crate::ApiError::internal("PUBLIC_BASE_URL is not set"))
}

/// An error of the OAuth endpoints, in RFC 6749 §5.2 form.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`, `slow_down`...
    pub error: &'static str,
    pub description: String,
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// The RFC 6749 error code.
    pub error: String,
    pub error_description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into(), retry_after: None }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }
    pub fn invalid_client() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed")
    }

    pub fn into_response(self) -> Response<Body> {
        let body =
            serde_json::to_string(&OAuthErrorBody { error: self.error.into(), error_description: self.description })
                .expect("strings serialize");
        let mut b = Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "no-store")
            .header(http::header::PRAGMA, "no-cache");
        if self.status == StatusCode::UNAUTHORIZED {
            b = b.header(http::header::WWW_AUTHENTICATE, "Basic realm=\"oauth\"");
        }
        if let Some(secs) = self.retry_after {
            b = b.header(http::header::RETRY_AFTER, secs.to_string());
        }
        b.body(Body::from(body)).expect("static response parts are valid")
    }
}

/// Errors of our own plumbing (a store outage, a rate limit) as OAuth errors.
impl From<crate::ApiError> for OAuthError {
    fn from(e: crate::ApiError) -> Self {
        let error = match e.status.as_u16() {
            429 => "slow_down",
            503 => "temporarily_unavailable",
            400 => "invalid_request",
            _ => "server_error",
        };
        Self { status: e.status, error, description: e.message, retry_after: e.retry_after }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        crate::ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_known_sorted_and_unique() {
        assert_eq!(parse_scope("webhooks:manage profile profile").unwrap(), ["profile", "webhooks:manage"]);
        assert_eq!(parse_scope("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_scope("profile admin").unwrap_err(), "admin");
    }
}
