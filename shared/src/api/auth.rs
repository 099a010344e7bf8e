//! `POST /api/auth/refresh`, `GET /api/auth/me`, `POST /api/auth/logout`.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;

use crate::auth::guard::{ACCESS_COOKIE, REFRESH_COOKIE, REFRESH_COOKIE_PATH, authenticate};
use crate::auth::sessions::{self, TokenPair};
use crate::auth::tokens;
use crate::http::{ApiResult, MAX_JSON_BODY, client_ip, cookie, json, optional_json_body, secure_cookie, with_cookies};
use crate::ratelimit::{self, Rule};
use crate::{ApiError, Context};

/// Refreshing is cheap to attempt and each attempt costs a transaction: bound it per client IP.
const REFRESH_LIMIT: Rule = Rule { name: "auth-refresh", limit: 30, window_secs: 60 };

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: Option<String>,
}

/// Exchanges a refresh token (JSON body or cookie) for a new token pair.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body(content = Option<RefreshRequest>, description = "Or no body: the refresh cookie is used"),
    responses(
        (status = 200, description = "A new token pair (also set as cookies); the old refresh token is used up", body = crate::auth::sessions::TokenPair),
        (status = 401, description = "Missing, invalid, expired or reused refresh token (reuse revokes the session)", body = crate::api::openapi::ErrorBody),
        (status = 429, description = "Too many refreshes from this address", body = crate::api::openapi::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::api::openapi::ErrorBody)
    ))]
pub async fn refresh(ctx: Arc<Context>, req: Request) -> ApiResult {
    ratelimit::check(&ctx, REFRESH_LIMIT, &client_ip(&req)).await?;
    let body: Option<RefreshRequest> = optional_json_body(&req, MAX_JSON_BODY)?;
    let token = body
        .and_then(|b| b.refresh_token)
        .or_else(|| cookie(&req, REFRESH_COOKIE))
        .ok_or_else(|| ApiError::unauthorized("missing_token", "A refresh token is required"))?;
    let (pair, user) = sessions::refresh(&ctx, &token).await?;
    tracing::info!(user_id = user.id, "tokens refreshed");
    token_response(&pair)
}

/// The token pair as JSON and as cookies, for API clients and browsers alike.
pub fn token_response(pair: &TokenPair) -> ApiResult {
    let cookies = [
        secure_cookie(ACCESS_COOKIE, &pair.access_token, "/", pair.expires_in, "Lax"),
        secure_cookie(REFRESH_COOKIE, &pair.refresh_token, REFRESH_COOKIE_PATH, pair.refresh_expires_in, "Strict"),
    ];
    with_cookies(json(StatusCode::OK, pair)?, &cookies)
}

/// The caller's own profile.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = []), ("cookie" = [])), responses(
    (status = 200, description = "The caller", body = crate::auth::User),
    (status = 401, description = "No valid access token", body = crate::api::openapi::ErrorBody),
    (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::api::openapi::ErrorBody)
))]
pub async fn me(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let user = ctx
        .store()
        .get_user(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user_not_found", "The account no longer exists"))?;
    json(StatusCode::OK, &user)
}

/// Ends the caller's session (identified by access or refresh token) and clears the cookies.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = []), ("cookie" = [])),
    request_body(content = Option<RefreshRequest>, description = "Without an access token: the refresh token (or its cookie)"),
    responses(
        (status = 200, description = "`{\"status\": \"logged_out\"}`; cookies cleared", body = crate::api::StatusBody),
        (status = 401, description = "Neither token is valid", body = crate::api::openapi::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::api::openapi::ErrorBody)
    ))]
pub async fn logout(ctx: Arc<Context>, req: Request) -> ApiResult {
    // A malformed body is refused whichever token identifies the session.
    let body: Option<RefreshRequest> = optional_json_body(&req, MAX_JSON_BODY)?;
    let session_id = match authenticate(&ctx, &req).await {
        Ok(principal) => principal.session_id,
        Err(access_error) => {
            let Some(token) = body.and_then(|b| b.refresh_token).or_else(|| cookie(&req, REFRESH_COOKIE)) else {
                return Err(access_error);
            };
            tokens::verify_refresh(&ctx, &token).await?.sid
        }
    };
    sessions::end_session(&ctx, &session_id).await?;
    let cleared = [
        secure_cookie(ACCESS_COOKIE, "", "/", 0, "Lax"),
        secure_cookie(REFRESH_COOKIE, "", REFRESH_COOKIE_PATH, 0, "Strict"),
    ];
    with_cookies(json(StatusCode::OK, &crate::api::StatusBody { status: "logged_out".into() })?, &cleared)
}
