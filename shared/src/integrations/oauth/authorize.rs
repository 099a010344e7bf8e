//! The authorization endpoint: checks a partner's request, signs the user in (email link) when
//! there is no session, asks for consent (remembered per user, client and scopes), and sends the
//! browser back to the client with a single-use code, `state` and `iss` (RFC 9207).
//!
//! Until the client and its redirect URI are known to match a registration exactly, errors are
//! shown on our own page and never redirected: an attacker cannot use us as an open redirect.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::clients::Client;
use super::{CODE_TTL, SCOPES, issuer, parse_scope};
use crate::domain::auth::User;
use crate::store::oauth::CodeRecord;
use crate::support::crypto::random_token;
use crate::{ApiError, Context};

/// Scopes that act on an organization, not on the user's own data: only a member of the client's
/// organization may grant them.
const ORGANIZATION_SCOPES: &[&str] = &["quests:read", "webhooks:manage"];

/// A checked authorization request.
#[derive(Clone, Debug)]
pub struct AuthorizationRequest {
    pub client: Client,
    pub redirect_uri: String,
    /// Whether the request named its `redirect_uri` (RFC 6749 §4.1.3: then the token request must
    /// repeat it), rather than leaving the client's only one implied.
    pub redirect_uri_given: bool,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub code_challenge: String,
}

/// Why a request fails: before the redirect URI is trusted (shown on our page), or after (sent
/// back to the client, RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub enum Refusal {
    Page(ApiError),
    Redirect { redirect_uri: String, state: Option<String>, error: &'static str, description: String },
}

/// Checks the request's parameters (`params` as sent: a repeated parameter is an error).
pub async fn check(ctx: &Context, params: &[(String, String)]) -> Result<AuthorizationRequest, Refusal> {
    let page = |code: &'static str, m: &str| Refusal::Page(ApiError::bad_request(code, m.to_string()));
    let one = |name: &str| -> Result<Option<&str>, Refusal> {
        let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(page("invalid_request", &format!("{name} is repeated"))),
            None => Ok(first.filter(|v| !v.is_empty())),
        }
    };
    let client_id = one("client_id")?.ok_or_else(|| page("invalid_client", "client_id is missing"))?;
    let stored = match client_id.len() {
        1..=64 => ctx.store().oauth_client(client_id).await.map_err(|e| Refusal::Page(e.into()))?,
        _ => None,
    };
    let client = stored.ok_or_else(|| page("invalid_client", "This app is not registered"))?.client;
    let named = one("redirect_uri")?;
    let redirect_uri_given = named.is_some();
    let redirect_uri = match named {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_string(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        _ => return Err(page("invalid_redirect_uri", "The redirect URI is not one this app registered")),
    };
    let state = one("state")?.map(str::to_string);
    let back = |error: &'static str, description: &str| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_string(),
    };
    if state.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(back("invalid_request", "state is longer than 1024 characters"));
    }
    if one("response_type")? != Some("code") {
        return Err(back("unsupported_response_type", "Only response_type=code is supported"));
    }
    if !client.allows_grant("authorization_code") {
        return Err(back("unauthorized_client", "This app may not use the authorization code grant"));
    }
    let Some(challenge) = one("code_challenge")? else {
        return Err(back("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256"));
    };
    if one("code_challenge_method")? != Some("S256") {
        return Err(back("invalid_request", "code_challenge_method must be S256"));
    }
    if challenge.len() != 43 || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(back("invalid_request", "code_challenge is not a base64url SHA-256"));
    }
    let scope = match parse_scope(one("scope")?.unwrap_or_default()) {
        Ok(s) if s.is_empty() => return Err(back("invalid_scope", "Name the scopes the app needs")),
        Ok(s) if s.iter().all(|x| client.allowed_scopes.contains(x)) => s,
        _ => return Err(back("invalid_scope", "The app asked for a scope it may not have")),
    };
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        redirect_uri_given,
        scope,
        state,
        code_challenge: challenge.to_string(),
    })
}

/// Whether the user may grant these scopes at all: organization scopes only within the client's
/// organization (a token never reaches across organizations).
pub fn may_grant(user: &User, request: &AuthorizationRequest) -> bool {
    let organization_level = request.scope.iter().any(|s| ORGANIZATION_SCOPES.contains(&s.as_str()));
    !organization_level || user.org_id.as_deref() == Some(request.client.organization_id.as_str())
}

/// Whether the user already consented to (at least) these scopes for this client.
pub async fn consented(ctx: &Context, user: &User, request: &AuthorizationRequest) -> Result<bool, ApiError> {
    let given = ctx.store().consent(&user.id, &request.client.client_id).await?.unwrap_or_default();
    Ok(!given.scope.is_empty() && request.scope.iter().all(|s| given.scope.contains(s)))
}

/// Records the consent (adding to what was given before) and issues a code: the URL to send the
/// browser to.
pub async fn approve(ctx: &Context, user: &User, request: &AuthorizationRequest) -> Result<String, ApiError> {
    let store = ctx.store();
    let now = ctx.clock.now();
    let mut scope = store.consent(&user.id, &request.client.client_id).await?.unwrap_or_default().scope;
    scope.extend(request.scope.iter().cloned());
    scope.sort();
    scope.dedup();
    store.put_consent(&user.id, &request.client.client_id, &scope, now).await?;
    let code = random_token(32);
    let record = CodeRecord {
        client_id: request.client.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_given: request.redirect_uri_given,
        scope: request.scope.clone(),
        challenge: request.code_challenge.clone(),
        grant_id: format!("grt_{}", random_token(12)),
        expires_at: now + CODE_TTL,
    };
    store.put_authorization_code(&code, &record, now).await.map_err(|e| match e {
        crate::store::WriteError::Conflict => ApiError::conflict("conflict", "Retry"),
        crate::store::WriteError::Store(e) => e.into(),
    })?;
    tracing::info!(
        user_id = user.id,
        client_id = request.client.client_id,
        grant_id = record.grant_id,
        "authorization code issued"
    );
    Ok(redirect_to(&request.redirect_uri, &[("code", &code)], request.state.as_deref(), &issuer(ctx)?))
}

/// The client's redirect URI with our parameters, `state` and `iss` added to its query.
pub fn redirect_to(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, iss: &str) -> String {
    let mut url = url::Url::parse(redirect_uri).expect("registered redirect URIs are absolute URLs");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", iss);
    }
    url.to_string()
}

/// The words of each scope, for the consent page.
pub fn describe(scope: &[String]) -> Vec<&'static str> {
    scope.iter().filter_map(|s| SCOPES.iter().find(|(k, _)| k == s).map(|(_, d)| *d)).collect()
}

/// PKCE (RFC 7636) S256: the challenge of a verifier (its SHA-256, base64url).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether a verifier is well formed and matches the challenge (constant time).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    valid && crate::support::crypto::constant_time_eq(pkce_challenge(verifier).as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_follows_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!pkce_matches("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn redirects_keep_the_client_query_and_add_state_and_issuer() {
        let url = redirect_to("https://app.example/cb?x=1", &[("code", "c1")], Some("s t"), "https://hub.example");
        assert_eq!(url, "https://app.example/cb?x=1&code=c1&state=s+t&iss=https%3A%2F%2Fhub.example");
    }
}
