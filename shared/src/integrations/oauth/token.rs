//! The token endpoint (authorization code, refresh token, client credentials), revocation
//! (RFC 7009), introspection (RFC 7662), and the check of partner tokens on our own API.

use lambda_http::Request;
use serde::Serialize;

use super::authorize::pkce_matches;
use super::clients::{self, Authenticated, Client};
use super::keys::{self, AccessTokenClaims};
use super::{ACCESS_TOKEN_TTL, AUDIENCE, OAuthError, REFRESH_TOKEN_TTL, issuer, parse_scope};
use crate::domain::auth::Role;
use crate::domain::auth::guard::{self, Principal};
use crate::runtime::ratelimit::{self, Rule};
use crate::store::oauth::{CodeUse, Grant, RefreshRecord, Rotation};
use crate::support::crypto::random_token;
use crate::{ApiError, Context};

/// Token and revocation requests per client per minute (counted once the client has authenticated),
/// and introspections (a resource server may introspect on every request it serves).
const PER_CLIENT: Rule = Rule { name: "oauth-token-client", limit: 300, window_secs: 60 };
const INTROSPECTIONS_PER_CLIENT: Rule = Rule { name: "oauth-introspect-client", limit: 1200, window_secs: 60 };
/// Failed client authentications and grants per source address.
const FAILURES: Rule = Rule { name: "oauth-failures", limit: 30, window_secs: 600 };

/// The token response (RFC 6749 §5.1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// A form's single value of a parameter; a repeated one is an error (RFC 6749 §3.2).
pub fn param<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(format!("{name} is repeated")));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// Authenticates the client, counting failures per source address.
pub async fn client_of(
    ctx: &Context,
    authorization: Option<&str>,
    form: &[(String, String)],
    ip: &str,
) -> Result<Authenticated, OAuthError> {
    ratelimit::refuse_if_spent(ctx, FAILURES, ip).await?;
    match clients::authenticate(ctx, authorization, form).await {
        Ok(c) => Ok(c),
        Err(e) if e.error == "invalid_client" => {
            ratelimit::count_failure(ctx, FAILURES, ip, ApiError::unauthorized("invalid_client", "")).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `POST /api/oauth/token`.
pub async fn token(
    ctx: &Context,
    authorization: Option<&str>,
    form: &[(String, String)],
    ip: &str,
) -> Result<TokenResponse, OAuthError> {
    let grant_type = param(form, "grant_type")?.ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    let auth = client_of(ctx, authorization, form, ip).await?;
    let keys = Keys::of(&auth, ip);
    ratelimit::refuse_if_spent(ctx, FAILURES, &keys.failures).await?;
    ratelimit::check(ctx, PER_CLIENT, &keys.limit).await?;
    if !auth.client.allows_grant(grant_type) {
        let known = clients::GRANT_TYPES.contains(&grant_type);
        return Err(match known {
            true => OAuthError::new(
                http::StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "This client may not use that grant",
            ),
            false => OAuthError::new(http::StatusCode::BAD_REQUEST, "unsupported_grant_type", "Unsupported grant_type"),
        });
    }
    let outcome = match grant_type {
        "authorization_code" => authorization_code(ctx, &auth.client, form).await,
        "refresh_token" => refresh(ctx, &auth.client, form).await,
        "client_credentials" if auth.confidential => client_credentials(ctx, &auth.client, form).await,
        _ => Err(OAuthError::new(
            http::StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "A public client cannot use that grant",
        )),
    };
    if let Err(e) = &outcome
        && e.status == http::StatusCode::BAD_REQUEST
    {
        ratelimit::count_failure(ctx, FAILURES, &keys.failures, ApiError::bad_request("refused", "")).await;
    }
    outcome
}

/// Whose budgets a request spends. A confidential client proved who it is: its own requests and
/// failures count against it alone, so nobody else can spend them. A public client's id is no
/// proof: its requests count per (client, address), its failures per address.
struct Keys {
    limit: String,
    failures: String,
}

impl Keys {
    fn of(auth: &Authenticated, ip: &str) -> Self {
        match auth.confidential {
            true => {
                Self { limit: auth.client.client_id.clone(), failures: format!("client:{}", auth.client.client_id) }
            }
            false => Self { limit: format!("{}@{ip}", auth.client.client_id), failures: ip.to_string() },
        }
    }
}

async fn authorization_code(
    ctx: &Context,
    client: &Client,
    form: &[(String, String)],
) -> Result<TokenResponse, OAuthError> {
    let code = param(form, "code")?.ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let redirect_uri = param(form, "redirect_uri")?;
    let verifier =
        param(form, "code_verifier")?.ok_or_else(|| OAuthError::invalid_request("code_verifier is missing (PKCE)"))?;
    let store = ctx.store();
    let now = ctx.clock.now();
    let record = match code.len() {
        1..=128 => store.consume_authorization_code(code, now).await?,
        _ => CodeUse::Unknown,
    };
    let record = match record {
        CodeUse::Fresh(r) => r,
        CodeUse::Reused { grant_id } => {
            // A code seen twice leaked: everything issued from it goes (RFC 6749 §4.1.2).
            store.revoke_grant(&grant_id, now).await?;
            tracing::warn!(client_id = client.client_id, grant_id, "authorization code reused: its grant is revoked");
            return Err(OAuthError::invalid_grant("The code was already used"));
        }
        CodeUse::Unknown => return Err(OAuthError::invalid_grant("Unknown code")),
    };
    let refuse = |why: &str| OAuthError::invalid_grant(why.to_string());
    let problem = if record.client_id != client.client_id {
        Some("The code was issued to another client")
    } else if record.expires_at <= now {
        Some("The code has expired")
    } else if redirect_uri.is_some_and(|uri| uri != record.redirect_uri)
        || (redirect_uri.is_none() && record.redirect_uri_given)
    {
        // RFC 6749 §4.1.3: named in the authorization request, it must be repeated, identically.
        Some("redirect_uri differs from the authorization request, or is missing")
    } else if !pkce_matches(verifier, &record.challenge) {
        Some("code_verifier does not match the code_challenge")
    } else {
        None
    };
    if let Some(why) = problem {
        // The code is used up; nothing was issued from it, and nothing will be.
        store.revoke_grant(&record.grant_id, now).await?;
        return Err(refuse(why));
    }
    let user = store.get_user(&record.user_id).await?.ok_or_else(|| refuse("The account no longer exists"))?;
    if !store.grant_stands(&record.grant_id, &client.client_id, Some(&user.id)).await? {
        return Err(refuse("The authorization was revoked"));
    }
    let grant = Grant {
        id: record.grant_id.clone(),
        client_id: client.client_id.clone(),
        user_id: Some(user.id.clone()),
        scope: record.scope.clone(),
        revoked: false,
        created_at: now,
        last_used_at: None,
    };
    issue(ctx, client, &grant, Some((user.role, user.org_id.clone())), &record.scope, true).await
}

async fn refresh(ctx: &Context, client: &Client, form: &[(String, String)]) -> Result<TokenResponse, OAuthError> {
    let token = param(form, "refresh_token")?.ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let store = ctx.store();
    let now = ctx.clock.now();
    let record = match token.len() {
        1..=128 => store.oauth_refresh_token(token).await?,
        _ => None,
    };
    let record = record
        .filter(|r| r.client_id == client.client_id)
        .ok_or_else(|| OAuthError::invalid_grant("Unknown refresh token"))?;
    if record.used {
        store.revoke_grant(&record.grant_id, now).await?;
        tracing::warn!(
            client_id = client.client_id,
            grant_id = record.grant_id,
            "refresh token reused: its grant is revoked"
        );
        return Err(OAuthError::invalid_grant("The refresh token was already used"));
    }
    if record.expires_at <= now {
        return Err(OAuthError::invalid_grant("The refresh token has expired"));
    }
    let scope = match param(form, "scope")? {
        None => record.scope.clone(),
        Some(s) => match parse_scope(s) {
            Ok(narrower) if !narrower.is_empty() && narrower.iter().all(|x| record.scope.contains(x)) => narrower,
            _ => {
                return Err(OAuthError::new(
                    http::StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "A refresh may only narrow the scope",
                ));
            }
        },
    };
    let grant =
        store.grant(&record.grant_id).await?.ok_or_else(|| OAuthError::invalid_grant("The grant was revoked"))?;
    if !store.grant_stands(&grant.id, &client.client_id, grant.user_id.as_deref()).await? {
        return Err(OAuthError::invalid_grant("The grant was revoked"));
    }
    // Scopes the client may no longer have are dropped.
    let scope: Vec<String> = scope.into_iter().filter(|s| client.allowed_scopes.contains(s)).collect();
    let user = match &grant.user_id {
        Some(id) => {
            Some(store.get_user(id).await?.ok_or_else(|| OAuthError::invalid_grant("The account no longer exists"))?)
        }
        None => None,
    };
    let new = random_token(32);
    // The next token keeps the grant's scope: a narrowed access token does not shrink the grant.
    let next = RefreshRecord {
        grant_id: grant.id.clone(),
        client_id: client.client_id.clone(),
        scope: record.scope.clone(),
        used: false,
        expires_at: now + REFRESH_TOKEN_TTL,
    };
    match store.rotate_oauth_refresh_token(token, &new, &next, now).await? {
        Rotation::Rotated => {}
        Rotation::Reused => {
            store.revoke_grant(&grant.id, now).await?;
            tracing::warn!(
                client_id = client.client_id,
                grant_id = grant.id,
                "refresh token reused concurrently: its grant is revoked"
            );
            return Err(OAuthError::invalid_grant("The refresh token was already used"));
        }
    }
    store.touch_grant(&grant.id, now).await?;
    let mut response = issue(ctx, client, &grant, user.map(|u| (u.role, u.org_id)), &scope, false).await?;
    response.refresh_token = Some(new);
    Ok(response)
}

async fn client_credentials(
    ctx: &Context,
    client: &Client,
    form: &[(String, String)],
) -> Result<TokenResponse, OAuthError> {
    let scope = match param(form, "scope")? {
        None => client.allowed_scopes.clone(),
        Some(s) => match parse_scope(s) {
            Ok(asked) if !asked.is_empty() && asked.iter().all(|x| client.allowed_scopes.contains(x)) => asked,
            _ => {
                return Err(OAuthError::new(
                    http::StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "The client may not have that scope",
                ));
            }
        },
    };
    let now = ctx.clock.now();
    let grant = Grant {
        id: format!("grt_{}", random_token(12)),
        client_id: client.client_id.clone(),
        user_id: None,
        scope: scope.clone(),
        revoked: false,
        created_at: now,
        last_used_at: Some(now),
    };
    ctx.store().put_client_grant(&grant, now).await?;
    issue(ctx, client, &grant, None, &scope, false).await
}

/// Signs the access token of a grant; with `with_refresh`, also stores and returns a refresh token.
async fn issue(
    ctx: &Context,
    client: &Client,
    grant: &Grant,
    user: Option<(Role, Option<String>)>,
    scope: &[String],
    with_refresh: bool,
) -> Result<TokenResponse, OAuthError> {
    let now = ctx.clock.now();
    let (sub, role, org) = match (&grant.user_id, user) {
        (Some(id), Some((role, org))) => (id.clone(), Some(role), org),
        _ => (format!("client:{}", client.client_id), None, Some(client.organization_id.clone())),
    };
    let claims = AccessTokenClaims {
        iss: issuer(ctx)?,
        aud: AUDIENCE.into(),
        sub,
        client_id: client.client_id.clone(),
        scope: scope.join(" "),
        grant: grant.id.clone(),
        org,
        role,
        iat: now,
        exp: now + ACCESS_TOKEN_TTL,
        jti: random_token(16),
    };
    let access_token = keys::sign(ctx, &claims).await?;
    let refresh_token = match with_refresh && client.allows_grant("refresh_token") {
        true => {
            let token = random_token(32);
            let record = RefreshRecord {
                grant_id: grant.id.clone(),
                client_id: client.client_id.clone(),
                scope: scope.to_vec(),
                used: false,
                expires_at: now + REFRESH_TOKEN_TTL,
            };
            ctx.store().put_oauth_refresh_token(&token, &record).await?;
            ctx.store().touch_grant(&grant.id, now).await?;
            Some(token)
        }
        false => None,
    };
    tracing::info!(client_id = client.client_id, grant_id = grant.id, "tokens issued");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_TTL,
        refresh_token,
        scope: scope.join(" "),
    })
}

/// What a token turns out to be, for revocation and introspection: the grant it belongs to.
enum Found {
    Access(AccessTokenClaims),
    Refresh(RefreshRecord),
    Nothing,
}

async fn find(ctx: &Context, token: &str) -> Result<Found, OAuthError> {
    if keys::is_partner_token(token) {
        return Ok(match keys::verify(ctx, token).await {
            Ok(claims) => Found::Access(claims),
            Err(e) if e.status.is_server_error() => return Err(e.into()),
            Err(_) => Found::Nothing,
        });
    }
    Ok(match token.len() {
        1..=128 => ctx.store().oauth_refresh_token(token).await?.map_or(Found::Nothing, Found::Refresh),
        _ => Found::Nothing,
    })
}

/// `POST /api/oauth/revoke`: revokes the token's whole grant, if the token is the client's. The
/// answer is the same whatever the token was (RFC 7009 §2.2).
pub async fn revoke(
    ctx: &Context,
    authorization: Option<&str>,
    form: &[(String, String)],
    ip: &str,
) -> Result<(), OAuthError> {
    let token = param(form, "token")?.ok_or_else(|| OAuthError::invalid_request("token is missing"))?.to_string();
    let auth = client_of(ctx, authorization, form, ip).await?;
    ratelimit::check(ctx, PER_CLIENT, &Keys::of(&auth, ip).limit).await?;
    let (grant_id, owner) = match find(ctx, &token).await? {
        Found::Access(c) => (c.grant, c.client_id),
        Found::Refresh(r) => (r.grant_id, r.client_id),
        Found::Nothing => return Ok(()),
    };
    // RFC 7009 §2.1: only the client a token was issued to may revoke it; another's request is refused.
    if owner != auth.client.client_id {
        return Err(OAuthError::invalid_request("The token was not issued to this client"));
    }
    ctx.store().revoke_grant(&grant_id, ctx.clock.now()).await?;
    tracing::info!(client_id = owner, grant_id, "grant revoked by its client");
    Ok(())
}

/// RFC 7662's answer: `active` and, when active, what the token is.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// `POST /api/oauth/introspect` (confidential clients, about their own tokens only).
pub async fn introspect(
    ctx: &Context,
    authorization: Option<&str>,
    form: &[(String, String)],
    ip: &str,
) -> Result<Introspection, OAuthError> {
    let token = param(form, "token")?.ok_or_else(|| OAuthError::invalid_request("token is missing"))?.to_string();
    let auth = client_of(ctx, authorization, form, ip).await?;
    if !auth.confidential {
        return Err(OAuthError::invalid_client());
    }
    ratelimit::check(ctx, INTROSPECTIONS_PER_CLIENT, &Keys::of(&auth, ip).limit).await?;
    let me = auth.client.client_id.as_str();
    let store = ctx.store();
    let now = ctx.clock.now();
    Ok(match find(ctx, &token).await? {
        Found::Access(c) if c.client_id == me && store.grant_stands(&c.grant, me, user_of(&c.sub)).await? => {
            Introspection {
                active: true,
                scope: Some(c.scope),
                client_id: Some(c.client_id),
                sub: Some(c.sub),
                token_type: Some("Bearer".into()),
                exp: Some(c.exp),
                iat: Some(c.iat),
                iss: Some(c.iss),
                aud: Some(c.aud),
                jti: Some(c.jti),
            }
        }
        Found::Refresh(r) if r.client_id == me && !r.used && r.expires_at > now => {
            let sub = store.grant(&r.grant_id).await?.and_then(|g| g.user_id);
            if !store.grant_stands(&r.grant_id, me, sub.as_deref()).await? {
                return Ok(Introspection::default());
            }
            Introspection {
                active: true,
                scope: Some(r.scope.join(" ")),
                client_id: Some(r.client_id),
                sub,
                token_type: Some("refresh_token".into()),
                exp: Some(r.expires_at),
                iss: Some(issuer(ctx)?),
                ..Default::default()
            }
        }
        _ => Introspection::default(),
    })
}

/// The user a token's subject names (`None` for a client acting for itself).
fn user_of(sub: &str) -> Option<&str> {
    (!sub.starts_with("client:")).then_some(sub)
}

/// Authenticates a session, or a partner (OAuth) access token that carries `scope` and whose grant
/// still stands (`403 insufficient_scope` when it lacks the scope).
pub async fn authenticate_for(ctx: &Context, req: &Request, scope: &str) -> Result<Principal, ApiError> {
    let token = guard::presented_token(req)?;
    match keys::is_partner_token(&token) {
        true => {
            let principal = partner_principal(ctx, &token, scope).await?;
            tracing::Span::current().record("user_id", principal.user_id.as_str());
            Ok(principal)
        }
        false => guard::session_principal(ctx, &token).await,
    }
}

/// A partner access token on our own API: valid, its grant and client still standing, and
/// carrying `scope`. The principal acts with the user's role (never above an organization admin)
/// in the token's organization; a client acting for itself is an admin of its own organization.
pub async fn partner_principal(ctx: &Context, token: &str, scope: &str) -> Result<Principal, ApiError> {
    let claims = keys::verify(ctx, token).await?;
    if !ctx.store().grant_stands(&claims.grant, &claims.client_id, user_of(&claims.sub)).await? {
        return Err(ApiError::unauthorized("invalid_token", "The token was revoked"));
    }
    if !claims.scope.split(' ').any(|s| s == scope) {
        return Err(insufficient_scope(scope));
    }
    let role = match claims.role {
        Some(Role::Admin) | None => Role::OrgAdmin,
        Some(role) => role,
    };
    Ok(Principal { user_id: claims.sub, email: None, role, org_id: claims.org, session_id: claims.grant })
}

/// `403 insufficient_scope` (RFC 6750 §3.1).
pub fn insufficient_scope(scope: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::FORBIDDEN,
        "insufficient_scope",
        format!("This needs a token with the {scope} scope"),
    )
}
