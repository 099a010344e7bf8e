//! Partner apps (OAuth clients): registration by an organization's admins, and client
//! authentication at the token, revocation and introspection endpoints.
//!
//! A confidential client's secret is 32 random bytes, shown once and stored as its SHA-256 (a
//! secret that random needs no slow hash); after a rotation the previous secret keeps working for
//! 24 hours so a partner can roll it out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{OAuthError, SCOPES, parse_scope};
use crate::domain::auth::guard::Principal;
use crate::store::WriteError;
use crate::store::oauth::StoredClient;
use crate::support::config::Stage;
use crate::support::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::{ApiError, Context};

/// A rotated secret keeps working this long.
const PREVIOUS_SECRET_SECS: i64 = 24 * 3600;
/// The grant types a client may be allowed.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

pub use crate::store::oauth::Client;

/// A client's registration, as created or updated.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistration {
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// Any of `profile`, `progress:read`, `quests:read`, `webhooks:manage`.
    pub allowed_scopes: Vec<String>,
    /// Any of `authorization_code`, `refresh_token`, `client_credentials` (default: the first two).
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub public: bool,
    /// Platform admins name the organization; organization admins get their own.
    pub organization_id: Option<String>,
}

/// A change to a client (any field), and the secret rotation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientUpdate {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub allowed_scopes: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    /// A new secret, shown once in the answer; the previous one keeps working for 24 hours.
    #[serde(default)]
    pub rotate_secret: bool,
    /// The previous secret stops working now (with or without a rotation): for a leaked secret.
    #[serde(default)]
    pub revoke_previous: bool,
}

/// A client with, once, its new secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientWithSecret {
    #[serde(flatten)]
    pub client: Client,
    /// Shown once (creation, rotation); only its hash is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

pub async fn register(
    ctx: &Context,
    principal: &Principal,
    r: ClientRegistration,
) -> Result<ClientWithSecret, ApiError> {
    let organization_id = principal.administered_organization(r.organization_id.as_deref())?;
    let grant_types = r.grant_types.unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    let now = ctx.clock.now();
    let client = Client {
        client_id: format!("cli_{}", random_token(12)),
        name: valid_name(&r.name)?,
        organization_id,
        redirect_uris: valid_redirect_uris(ctx, &r.redirect_uris)?,
        allowed_scopes: valid_scopes(&r.allowed_scopes)?,
        grant_types: valid_grant_types(&grant_types, r.public)?,
        public: r.public,
        created_at: now,
        updated_at: now,
    };
    let secret = (!client.public).then(new_secret);
    let stored = StoredClient {
        client: client.clone(),
        secret_hash: secret.as_deref().map(|s| sha256_hex(s.as_bytes())),
        previous_secret_hash: None,
        previous_until: None,
    };
    ctx.store().put_oauth_client(&stored, None).await.map_err(write_error)?;
    tracing::info!(client_id = client.client_id, organization_id = client.organization_id, "OAuth client registered");
    Ok(ClientWithSecret { client, client_secret: secret })
}

/// A client the caller administers (another organization's is not found).
pub async fn administered(ctx: &Context, principal: &Principal, client_id: &str) -> Result<StoredClient, ApiError> {
    let not_found = || ApiError::not_found("client_not_found", "No such client");
    let stored = ctx.store().oauth_client(client_id).await?.ok_or_else(not_found)?;
    principal.require_org_admin(&stored.client.organization_id).map_err(|_| not_found())?;
    Ok(stored)
}

pub async fn update(
    ctx: &Context,
    principal: &Principal,
    client_id: &str,
    u: ClientUpdate,
) -> Result<ClientWithSecret, ApiError> {
    let mut stored = administered(ctx, principal, client_id).await?;
    let seen = stored.client.updated_at;
    let c = &mut stored.client;
    if let Some(name) = &u.name {
        c.name = valid_name(name)?;
    }
    if let Some(uris) = &u.redirect_uris {
        c.redirect_uris = valid_redirect_uris(ctx, uris)?;
    }
    if let Some(scopes) = &u.allowed_scopes {
        c.allowed_scopes = valid_scopes(scopes)?;
    }
    if let Some(types) = &u.grant_types {
        c.grant_types = valid_grant_types(types, c.public)?;
    }
    let now = ctx.clock.now().max(seen + 1);
    c.updated_at = now;
    let mut secret = None;
    if u.rotate_secret {
        if stored.client.public {
            return Err(ApiError::bad_request("invalid_client", "A public client has no secret"));
        }
        let new = new_secret();
        // After a leak the old secret must die now; otherwise it works a day more for the roll-out.
        match u.revoke_previous {
            true => (stored.previous_secret_hash, stored.previous_until) = (None, None),
            false => {
                stored.previous_secret_hash = stored.secret_hash.take();
                stored.previous_until = Some(now + PREVIOUS_SECRET_SECS);
            }
        }
        stored.secret_hash = Some(sha256_hex(new.as_bytes()));
        secret = Some(new);
    }
    if u.revoke_previous && !u.rotate_secret {
        (stored.previous_secret_hash, stored.previous_until) = (None, None);
    }
    ctx.store().put_oauth_client(&stored, Some(seen)).await.map_err(write_error)?;
    tracing::info!(client_id, rotated = u.rotate_secret, "OAuth client updated");
    Ok(ClientWithSecret { client: stored.client, client_secret: secret })
}

pub async fn delete(ctx: &Context, principal: &Principal, client_id: &str) -> Result<(), ApiError> {
    administered(ctx, principal, client_id).await?;
    ctx.store().delete_oauth_client(client_id).await?;
    tracing::info!(client_id, "OAuth client deleted: its tokens stop working");
    Ok(())
}

fn new_secret() -> String {
    format!("cs_{}", random_token(32))
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    match crate::support::text::clean_text(name, 100) {
        Ok(Some(n)) if !n.contains('\n') => Ok(n),
        _ => Err(ApiError::bad_request("invalid_client_metadata", "name is 1 to 100 characters on one line")),
    }
}

fn valid_scopes(scopes: &[String]) -> Result<Vec<String>, ApiError> {
    let joined = scopes.join(" ");
    parse_scope(&joined).map_err(|unknown| {
        let known: Vec<&str> = SCOPES.iter().map(|(s, _)| *s).collect();
        ApiError::bad_request(
            "invalid_client_metadata",
            format!("Unknown scope {unknown:?}; use any of {}", known.join(", ")),
        )
    })
}

fn valid_grant_types(types: &[String], public: bool) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request("invalid_client_metadata", m));
    if types.is_empty() {
        return bad("grant_types is empty".into());
    }
    let mut out: Vec<String> = Vec::new();
    for t in types {
        if !GRANT_TYPES.contains(&t.as_str()) {
            return bad(format!("Unknown grant type; use any of {}", GRANT_TYPES.join(", ")));
        }
        if public && t == "client_credentials" {
            return bad("A public client cannot use client_credentials".into());
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Redirect URIs: absolute, no fragment, no credentials, https (plain http only to loopback, and
/// only in the local stage); compared later character for character.
fn valid_redirect_uris(ctx: &Context, uris: &[String]) -> Result<Vec<String>, ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request("invalid_redirect_uri", m.to_string()));
    if uris.is_empty() || uris.len() > 10 {
        return bad("Register 1 to 10 redirect URIs");
    }
    for uri in uris {
        let Ok(url) = url::Url::parse(uri) else { return bad("A redirect URI is not an absolute URL") };
        if uri.len() > 2000 || url.fragment().is_some() || uri.contains('#') {
            return bad("A redirect URI has no fragment and is at most 2000 characters");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad("A redirect URI carries no credentials");
        }
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        let allowed = match url.scheme() {
            "https" => url.host_str().is_some(),
            "http" => loopback && ctx.config.stage == Stage::Local,
            _ => false,
        };
        if !allowed {
            return bad("A redirect URI must be https");
        }
    }
    Ok(uris.to_vec())
}

/// How the client authenticated at the token, revocation or introspection endpoint.
pub struct Authenticated {
    pub client: Client,
    /// `true` for a confidential client that proved its secret; `false` for a public client.
    pub confidential: bool,
}

/// Client authentication: `client_secret_basic` (the id and secret form-url-decoded, RFC 6749
/// §2.3.1), `client_secret_post`, or `none` (a public client naming itself). Exactly one method.
pub async fn authenticate(
    ctx: &Context,
    authorization: Option<&str>,
    form: &[(String, String)],
) -> Result<Authenticated, OAuthError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (client_id, secret) = match (authorization, field("client_secret")) {
        (Some(header), None) => {
            let (id, secret) = basic_credentials(header).ok_or_else(OAuthError::invalid_client)?;
            if field("client_id").is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request("client_id differs from the authenticated client"));
            }
            (id, Some(secret))
        }
        (None, Some(secret)) => {
            (field("client_id").ok_or_else(OAuthError::invalid_client)?.to_string(), Some(secret.to_string()))
        }
        (None, None) => (field("client_id").ok_or_else(OAuthError::invalid_client)?.to_string(), None),
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("Use one client authentication method")),
    };
    if client_id.is_empty() || client_id.len() > 64 {
        return Err(OAuthError::invalid_client());
    }
    let stored = ctx.store().oauth_client(&client_id).await?.ok_or_else(OAuthError::invalid_client)?;
    match (stored.client.public, secret) {
        (true, None) => Ok(Authenticated { client: stored.client, confidential: false }),
        (false, Some(secret)) if secret_matches(ctx, &stored, &secret) => {
            Ok(Authenticated { client: stored.client, confidential: true })
        }
        _ => Err(OAuthError::invalid_client()),
    }
}

fn secret_matches(ctx: &Context, stored: &StoredClient, secret: &str) -> bool {
    let given = sha256_hex(secret.as_bytes());
    let current = stored.secret_hash.as_deref().is_some_and(|h| constant_time_eq(h.as_bytes(), given.as_bytes()));
    let previous = stored.previous_until.is_some_and(|until| until > ctx.clock.now())
        && stored.previous_secret_hash.as_deref().is_some_and(|h| constant_time_eq(h.as_bytes(), given.as_bytes()));
    current | previous
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`, decoded both ways.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(value.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // Form-url-decoding (`+` is a space, `%XX` a byte); a raw `&` or `=` is kept as itself.
    let unescape = |s: &str| -> Option<String> {
        let escaped = format!("v={}", s.replace('&', "%26").replace('=', "%3D"));
        url::form_urlencoded::parse(escaped.as_bytes()).next().map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Conflict => ApiError::conflict("conflict", "The client changed or was deleted meanwhile; retry"),
        WriteError::Store(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_url_decoded() {
        let header = format!("Basic {}", STANDARD.encode("cli%3Aone:s%2Bcr%20et+x"));
        assert_eq!(basic_credentials(&header), Some(("cli:one".into(), "s+cr et x".into())));
        assert_eq!(basic_credentials(&format!("basic {}", STANDARD.encode("a:b"))), Some(("a".into(), "b".into())));
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials(&format!("Basic {}", STANDARD.encode("no-colon"))), None);
    }
}
