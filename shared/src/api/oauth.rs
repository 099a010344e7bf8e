//! The OAuth authorization server's HTTP endpoints (the consent page is in `pages::consent`):
//! metadata and keys, token, revocation, introspection, client registration, and the user's list
//! of apps they authorized.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::ErrorBody;
use crate::api::StatusBody;
use crate::domain::auth::guard::authenticate;
use crate::integrations::oauth::clients::{self, Client, ClientRegistration, ClientUpdate, ClientWithSecret};
use crate::integrations::oauth::keys::{self, Jwks};
use crate::integrations::oauth::token::{self, Introspection, TokenResponse};
use crate::integrations::oauth::{OAuthError, OAuthErrorBody, SCOPES, issuer};
use crate::support::http::{ApiResult, MAX_JSON_BODY, body_bytes, client_ip, json, json_body, path_param, query_id};
use crate::{ApiError, Context};

/// Form bodies of the token endpoints are a few parameters.
const MAX_FORM: usize = 8 * 1024;

/// RFC 8414 metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub jwks_uri: String,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
}

/// The authorization server's metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "Endpoints, scopes and methods", body = ServerMetadata)))]
pub async fn metadata(ctx: Arc<Context>, _req: Request) -> ApiResult {
    let base = issuer(&ctx)?;
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let doc = ServerMetadata {
        authorization_endpoint: format!("{base}/api/oauth/authorize"),
        token_endpoint: format!("{base}/api/oauth/token"),
        revocation_endpoint: format!("{base}/api/oauth/revoke"),
        introspection_endpoint: format!("{base}/api/oauth/introspect"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        issuer: base,
        scopes_supported: SCOPES.iter().map(|(s, _)| s.to_string()).collect(),
        response_types_supported: list(&["code"]),
        grant_types_supported: list(clients::GRANT_TYPES),
        code_challenge_methods_supported: list(&["S256"]),
        token_endpoint_auth_methods_supported: list(&["client_secret_basic", "client_secret_post", "none"]),
        revocation_endpoint_auth_methods_supported: list(&["client_secret_basic", "client_secret_post", "none"]),
        introspection_endpoint_auth_methods_supported: list(&["client_secret_basic", "client_secret_post"]),
        authorization_response_iss_parameter_supported: true,
    };
    cacheable(json(StatusCode::OK, &doc)?)
}

/// The public keys that verify our access tokens (current and previous).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth",
    responses(
        (status = 200, description = "Ed25519 keys (RFC 8037)", body = Jwks),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn jwks(ctx: Arc<Context>, _req: Request) -> ApiResult {
    cacheable(json(StatusCode::OK, &keys::jwks(&ctx).await?)?)
}

/// Public documents may be cached a few minutes (a rotation publishes the next key beside the old).
fn cacheable(mut response: Response<Body>) -> ApiResult {
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}

/// A form's parameters, in order, repeats included.
type FormParams = Vec<(String, String)>;

/// The form of a token-endpoint request, with its `Authorization` header.
fn form_request(req: &Request) -> Result<(Option<String>, FormParams), OAuthError> {
    let bytes = body_bytes(req);
    if bytes.len() > MAX_FORM {
        return Err(OAuthError::invalid_request("The body is too large"));
    }
    let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("Send the parameters as application/x-www-form-urlencoded"));
    }
    let authorization =
        req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((authorization, url::form_urlencoded::parse(bytes).into_owned().collect()))
}

/// An OAuth answer: JSON, never cached (RFC 6749 §5.1).
fn oauth_json<T: Serialize>(outcome: Result<T, OAuthError>) -> ApiResult {
    match outcome {
        Ok(value) => {
            let mut response = json(StatusCode::OK, &value)?;
            response.headers_mut().insert(http::header::PRAGMA, http::HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        Err(e) => Ok(e.into_response()),
    }
}

/// Tokens by authorization code (with PKCE), refresh token (rotated) or client credentials.
#[utoipa::path(post, path = "/api/oauth/token", tag = "oauth", security((), ("client_basic" = [])),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens (RFC 6749 §5.1)", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody),
        (status = 429, description = "`slow_down`: too many requests for this client, or failures from this address", body = OAuthErrorBody),
        (status = "default", description = "Error (RFC 6749 §5.2)", body = OAuthErrorBody)
    ))]
pub async fn token_endpoint(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = async {
        let (authorization, form) = form_request(&req)?;
        token::token(&ctx, authorization.as_deref(), &form, &client_ip(&req)).await
    }
    .await;
    oauth_json(outcome)
}

/// The parameters of the token endpoint, as the OpenAPI document describes them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    /// With `client_secret_post`, or alone for a public client.
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The parameters of revocation and introspection.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenParam {
    token: String,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Revokes a token of the client, with its whole grant (RFC 7009: the same answer whatever the token).
#[utoipa::path(post, path = "/api/oauth/revoke", tag = "oauth", security((), ("client_basic" = [])),
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (an unknown token)"),
        (status = 400, description = "`invalid_request`: no token, or a token issued to another client (RFC 7009 §2.1)", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody),
        (status = "default", description = "Error (RFC 6749 §5.2)", body = OAuthErrorBody)
    ))]
pub async fn revoke(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = async {
        let (authorization, form) = form_request(&req)?;
        token::revoke(&ctx, authorization.as_deref(), &form, &client_ip(&req)).await
    }
    .await;
    match outcome {
        Ok(()) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(Body::Empty)
            .map_err(ApiError::internal),
        Err(e) => Ok(e.into_response()),
    }
}

/// Whether a token of the calling (confidential) client is active, and what it is (RFC 7662).
#[utoipa::path(post, path = "/api/oauth/introspect", tag = "oauth", security(("client_basic" = [])),
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`{\"active\": false}` for anything not an active token of the caller", body = Introspection),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client` (public clients may not introspect)", body = OAuthErrorBody),
        (status = "default", description = "Error (RFC 6749 §5.2)", body = OAuthErrorBody)
    ))]
pub async fn introspect(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = async {
        let (authorization, form) = form_request(&req)?;
        token::introspect(&ctx, authorization.as_deref(), &form, &client_ip(&req)).await
    }
    .await;
    oauth_json(outcome)
}

/// Registers a partner app; its secret is in the answer, once.
#[utoipa::path(post, path = "/api/oauth/clients", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    request_body = ClientRegistration,
    responses(
        (status = 201, description = "The client and (confidential clients) its `client_secret`, shown once", body = ClientWithSecret),
        (status = 400, description = "`invalid_client_metadata`, `invalid_redirect_uri`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "Not an admin of that organization", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn create_client(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: ClientRegistration = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::CREATED, &clients::register(&ctx, &principal, body).await?)
}

/// An organization's apps.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientList {
    pub organization_id: String,
    pub clients: Vec<Client>,
}

/// The organization's apps (never a secret).
#[utoipa::path(get, path = "/api/oauth/clients", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    params(("organization_id" = Option<String>, Query, description = "Platform admins: which organization")),
    responses(
        (status = 200, description = "Newest first", body = ClientList),
        (status = 403, description = "Not an admin of that organization", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn list_clients(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let organization_id = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let clients = ctx.store().oauth_clients_of(&organization_id).await?;
    json(StatusCode::OK, &ClientList { organization_id, clients })
}

/// One app.
#[utoipa::path(get, path = "/api/oauth/clients/{client_id}", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    params(("client_id" = String, Path, description = "The app (`cli_...`)")),
    responses(
        (status = 200, description = "The app (never its secret)", body = Client),
        (status = 404, description = "`client_not_found` (also another organization's)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn get_client(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &clients::administered(&ctx, &principal, &path_param(&req, "client_id")).await?.client)
}

/// Changes an app, or rotates its secret (the new one shown once; the old one works 24 hours more).
#[utoipa::path(put, path = "/api/oauth/clients/{client_id}", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    params(("client_id" = String, Path, description = "The app (`cli_...`)")),
    request_body = ClientUpdate,
    responses(
        (status = 200, description = "The app, and `client_secret` after a rotation", body = ClientWithSecret),
        (status = 400, description = "`invalid_client_metadata`, `invalid_redirect_uri`, `invalid_json`", body = ErrorBody),
        (status = 404, description = "`client_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn update_client(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: ClientUpdate = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::OK, &clients::update(&ctx, &principal, &path_param(&req, "client_id"), body).await?)
}

/// Deletes an app: every token it holds stops working at once.
#[utoipa::path(delete, path = "/api/oauth/clients/{client_id}", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    params(("client_id" = String, Path, description = "The app (`cli_...`)")),
    responses(
        (status = 200, description = "`{\"status\": \"deleted\"}`", body = StatusBody),
        (status = 404, description = "`client_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn delete_client(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    clients::delete(&ctx, &principal, &path_param(&req, "client_id")).await?;
    json(StatusCode::OK, &StatusBody { status: "deleted".into() })
}

/// An app the caller authorized.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Authorization {
    pub client_id: String,
    /// The app's name (absent when the app was deleted since).
    pub name: Option<String>,
    pub organization_id: Option<String>,
    pub scopes: Vec<String>,
    pub granted_at: i64,
    /// When the app last got tokens with this authorization.
    pub last_used_at: Option<i64>,
}

/// The apps the caller authorized, their scopes and last use.
#[utoipa::path(get, path = "/api/me/authorizations", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Authorized apps", body = [Authorization]),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn my_authorizations(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let store = ctx.store();
    let mut out = Vec::new();
    for (client_id, scopes, granted_at) in store.consents_of(&principal.user_id).await? {
        let client = store.oauth_client(&client_id).await?.map(|c| c.client);
        let last_used_at =
            store.user_grants(&principal.user_id, &client_id).await?.iter().filter_map(|g| g.last_used_at).max();
        out.push(Authorization {
            name: client.as_ref().map(|c| c.name.clone()),
            organization_id: client.map(|c| c.organization_id),
            client_id,
            scopes,
            granted_at,
            last_used_at,
        });
    }
    json(StatusCode::OK, &out)
}

/// Withdraws the caller's consent to an app and revokes every token the app holds for them.
#[utoipa::path(delete, path = "/api/me/authorizations/{client_id}", tag = "oauth", security(("bearer" = []), ("cookie" = [])),
    params(("client_id" = String, Path, description = "The app (`cli_...`)")),
    responses(
        (status = 200, description = "`{\"status\": \"revoked\"}`", body = StatusBody),
        (status = 404, description = "`authorization_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn revoke_authorization(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let client_id = path_param(&req, "client_id");
    let store = ctx.store();
    let now = ctx.clock.now();
    // The withdrawal itself kills every grant given until now (each use checks it); revoking the
    // grants the index lists as well is for the record.
    if client_id.is_empty() || !store.withdraw_consent(&principal.user_id, &client_id, now).await? {
        return Err(ApiError::not_found("authorization_not_found", "You have not authorized this app"));
    }
    let grants = store.user_grants(&principal.user_id, &client_id).await?;
    for grant in grants.iter().filter(|g| !g.revoked) {
        store.revoke_grant(&grant.id, now).await?;
    }
    tracing::info!(user_id = principal.user_id, client_id, grants = grants.len(), "authorization withdrawn");
    json(StatusCode::OK, &StatusBody { status: "revoked".into() })
}
