//! `POST /api/auth/refresh`, `GET /api/auth/me`, `POST /api/auth/logout`, and email sign-in
//! (`POST /api/auth/email/start`, `POST /api/auth/email/verify`).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;

use crate::domain::auth::guard::{ACCESS_COOKIE, REFRESH_COOKIE, REFRESH_COOKIE_PATH, authenticate};
use crate::domain::auth::sessions::session_cookies;
use crate::domain::auth::sessions::{self, TokenPair};
use crate::domain::auth::tokens;
use crate::domain::auth::{email_sign_in, login_binding};
use crate::integrations::oauth::token::authenticate_for;
use crate::runtime::ratelimit::{self, Rule};
use crate::support::http::{
    ApiResult, MAX_JSON_BODY, client_ip, cookie, json, json_body, optional_json_body, secure_cookie, with_cookies,
};
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
        (status = 200, description = "A new token pair (also set as cookies); the old refresh token is used up", body = crate::domain::auth::sessions::TokenPair),
        (status = 401, description = "Missing, invalid, expired or reused refresh token (reuse revokes the session)", body = crate::ErrorBody),
        (status = 429, description = "Too many refreshes from this address", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
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
    with_cookies(json(StatusCode::OK, pair)?, &session_cookies(pair))
}

/// The caller's own profile.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = []), ("cookie" = [])), responses(
    (status = 200, description = "The caller", body = crate::domain::auth::User),
    (status = 401, description = "No valid access token", body = crate::ErrorBody),
    (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
))]
pub async fn me(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "profile").await?;
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
        (status = 401, description = "Neither token is valid", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailStartRequest {
    pub email: String,
    /// The page the link's confirm page goes to once signed in: the invitation page
    /// (`/observers/accept?code=…`). An app's authorization page is only for the sign-in page.
    pub next: Option<String>,
}

/// `{"status": "sent_if_known"}`: the same answer for every address.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EmailStartAnswer {
    pub status: String,
    pub message: String,
}

/// Emails a single-use sign-in link (15 minutes) if the address has an account or a pending
/// invitation. The answer is the same either way.
#[utoipa::path(post, path = "/api/auth/email/start", tag = "auth",
    request_body = EmailStartRequest,
    responses(
        (status = 202, description = "Accepted; a link is sent if the address is known", body = EmailStartAnswer),
        (status = 400, description = "`invalid_email`, `invalid_next`, `invalid_json`", body = crate::ErrorBody),
        (status = 429, description = "Too many links for this address, or from this source address", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn email_start(ctx: Arc<Context>, req: Request) -> ApiResult {
    let body: EmailStartRequest = json_body(&req, MAX_JSON_BODY)?;
    email_sign_in::start(&ctx, &body.email, body.next.as_deref(), None, &client_ip(&req)).await?;
    json(
        StatusCode::ACCEPTED,
        &EmailStartAnswer {
            status: "sent_if_known".into(),
            message: "If this address has an account or an invitation, a sign-in link is on its way".into(),
        },
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailVerifyRequest {
    /// The code of the emailed link.
    pub code: String,
}

/// Exchanges the code of a sign-in link for a session (once).
#[utoipa::path(post, path = "/api/auth/email/verify", tag = "auth",
    request_body = EmailVerifyRequest,
    responses(
        (status = 200, description = "A token pair (also set as cookies), as `/api/auth/refresh` gives", body = crate::domain::auth::sessions::TokenPair),
        (status = 400, description = "`invalid_code`: unknown, expired or already used; `invalid_json`", body = crate::ErrorBody),
        (status = 403, description = "`account_link_refused`", body = crate::ErrorBody),
        (status = 429, description = "Too many wrong codes from this address", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn email_verify(ctx: Arc<Context>, req: Request) -> ApiResult {
    let body: EmailVerifyRequest = json_body(&req, MAX_JSON_BODY)?;
    let signed_in = email_sign_in::verify(&ctx, &body.code, &client_ip(&req), None).await?;
    token_response(&signed_in.tokens)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeExchange {
    /// The one-time code from the sign-in redirect.
    pub code: String,
}

/// Exchanges a one-time code issued by `purpose`'s flow (Spark SSO, LTI launches) for a token pair:
/// single use (a conditional delete), 60 s, and only in the browser that made the login (the cookie
/// [`login_binding`] set for this code). Refusals are counted under `invalid_rule` per browser (a
/// binding the hub issued), or per source address for any other request, and a spent budget is
/// refused before any code is touched: guesses from a school's shared address never lock out its
/// students' bound exchanges, and made-up bindings buy no extra tries.
pub async fn exchange_code(
    ctx: &Context,
    req: &Request,
    purpose: &str,
    invalid_rule: crate::runtime::ratelimit::Rule,
    again: &str,
) -> ApiResult {
    let body: CodeExchange = json_body(req, MAX_JSON_BODY)?;
    let secret = cookie(req, &login_binding::login_cookie_name(&body.code));
    let browser = secret.as_deref().map(login_binding::digest);
    // A binding the hub issued has a budget of its own; any other request (none, or a made-up one)
    // is counted by its address.
    let budget = match &browser {
        Some(digest) if ctx.store().binding_issued(digest, ctx.clock.now()).await? => format!("browser-{digest}"),
        _ => client_ip(req),
    };
    ratelimit::refuse_if_spent(ctx, invalid_rule, &budget).await?;
    let invalid = || {
        ApiError::bad_request("invalid_code", "The code is invalid, was already used, or belongs to another browser")
    };
    let grant = match (body.code.len(), &browser) {
        (1..=128, Some(browser)) => ctx.store().consume_code(&body.code, purpose, Some(browser)).await?,
        _ => None,
    };
    let Some(grant) = grant else {
        return Err(ratelimit::count_failure(ctx, invalid_rule, &budget, invalid()).await);
    };
    if grant.expires_at <= ctx.clock.now() {
        return Err(ApiError::bad_request("code_expired", format!("The code has expired; {again}")));
    }
    let user = ctx.store().get_user(&grant.user_id).await?.ok_or_else(invalid)?;
    let pair = crate::domain::auth::sessions::start_session(ctx, &user).await?;
    tracing::info!(user_id = user.id, purpose, "one-time code exchanged");
    let [access, refresh] = session_cookies(&pair);
    with_cookies(json(StatusCode::OK, &pair)?, &[access, refresh, login_binding::clear_login(&body.code)])
}
