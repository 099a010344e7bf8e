//! `GET /spark/sso?token=<jwt>` and `POST /spark/token`.
//!
//! SSO turns Spark's signed token into a one-time code (60 s, single use) and sends the browser to
//! `<FRONTEND_URL>/auth/callback?code=...`; the frontend exchanges the code for our tokens. Errors go
//! to the same callback as `?error=<code>` when a frontend is configured, or answer JSON otherwise.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;

use crate::domain::auth::guard::authenticate;
use crate::domain::auth::login_binding;
use crate::domain::auth::provisioning::provision_user;
use crate::integrations::spark::pending::{self, PendingPage};
use crate::integrations::spark::sso;
use crate::runtime::ratelimit::{self, Rule};
use crate::store::codes::CodeGrant;
use crate::store::{Item, WriteError, n, s};
use crate::support::http::{ApiResult, client_ip, json, query_id, query_limit, query_param, with_cookies};
use crate::{ApiError, Context, support::crypto};

/// Valid SSO tokens per Spark user (a whole class behind one school address signs in freely).
const SSO_PER_USER: Rule = Rule { name: "spark-sso-user", limit: 10, window_secs: 60 };
/// Invalid SSO tokens per source address.
const SSO_INVALID_PER_ADDRESS: Rule = Rule { name: "spark-sso-invalid", limit: 10, window_secs: 60 };
/// Invalid or used codes per source address (valid codes are single-use, random and short-lived).
const TOKEN_INVALID_PER_ADDRESS: Rule = Rule { name: "spark-token-invalid", limit: 20, window_secs: 60 };
/// Webhook requests whose signature did not verify, per source address.
const WEBHOOK_UNVERIFIED_PER_ADDRESS: Rule = Rule { name: "spark-webhook-unverified", limit: 30, window_secs: 60 };
/// One-time codes live this long.
const CODE_TTL_SECS: i64 = 60;
/// The purpose recorded with codes issued here; the exchange accepts only these.
const PURPOSE: &str = "spark_sso";
/// LMS sessions are kept this long for audit.
const LMS_SESSION_TTL_SECS: i64 = 30 * 24 * 3600;

/// A one-time code for a signed-in Spark user, when no frontend is configured (API-only deployments).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SsoCode {
    pub code: String,
    pub expires_in: i64,
}

#[utoipa::path(get, path = "/spark/sso", tag = "spark",
    params(("token" = String, Query, description = "Spark's signed SSO token (HS256 JWT, at most 10 minutes, single use)")),
    responses(
        (status = 302, description = "To `<FrontendUrl>/auth/callback?code=...` (60 s, single use), or `?error=<code>`",
            headers(("Location" = String, description = "The frontend's callback"))),
        (status = 200, description = "Without a frontend: the code as JSON", body = SsoCode),
        (status = 400, description = "`missing_token`", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn sso(ctx: Arc<Context>, req: Request) -> ApiResult {
    let token = crate::support::http::query_param(&req, "token").unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request("missing_token", "The token query parameter is required"));
    }
    match (&ctx.config.frontend_url, login(&ctx, &req, &token).await) {
        (Some(frontend), Ok((code, binding))) => {
            redirect(&format!("{frontend}/auth/callback?code={code}"), &binding.set_cookie)
        }
        (None, Ok((code, binding))) => {
            with_cookies(json(StatusCode::OK, &SsoCode { code, expires_in: CODE_TTL_SECS })?, &[binding.set_cookie])
        }
        (Some(frontend), Err(e)) if e.status != StatusCode::INTERNAL_SERVER_ERROR => {
            crate::support::http::redirect_no_referrer(&format!("{frontend}/auth/callback?error={}", e.code), &[])
        }
        (_, Err(e)) => Err(e),
    }
}

/// Verifies the token and provisions its user: a one-time code, and the binding that ties it to this
/// browser.
async fn login(ctx: &Context, req: &Request, token: &str) -> Result<(String, login_binding::Binding), ApiError> {
    let address = client_ip(req);
    let refused = |e: ApiError| ratelimit::count_failure(ctx, SSO_INVALID_PER_ADDRESS, &address, e);
    let login = match sso::verify(ctx, token).await {
        Ok(login) => login,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(refused(e).await),
        Err(e) => return Err(e),
    };
    // A replay is refused before it counts against its student or touches the account.
    if ctx.store().token_used(&login.fingerprint).await? {
        return Err(refused(replayed()).await);
    }
    ratelimit::check(ctx, SSO_PER_USER, &login.profile.external_id).await?;
    let (user, provisioned) = provision_user(ctx, &login.profile).await?;
    let now = ctx.clock.now();
    let code = crypto::random_token(32);
    let binding = login_binding::for_login(&code);
    let grant = CodeGrant {
        user_id: user.id.clone(),
        purpose: PURPOSE.into(),
        expires_at: now + CODE_TTL_SECS,
        email: None,
        next: None,
        browser: Some(binding.digest.clone()),
    };
    let lms_session = Item::from([
        ("pk".into(), s(format!("LMS_SESSION#{}", crypto::new_id()))),
        ("sk".into(), s("LMS_SESSION")),
        ("user_id".into(), s(&user.id)),
        ("provider".into(), s(sso::PROVIDER)),
        ("external_id".into(), s(&login.profile.external_id)),
        ("created_at".into(), n(now)),
        ("expires_at".into(), n(now + LMS_SESSION_TTL_SECS)),
    ]);
    match ctx.store().record_sso(&login.fingerprint, login.expires_at, &code, &grant, lms_session).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => {
            tracing::warn!(user_id = user.id, "Spark SSO token replayed");
            return Err(replayed());
        }
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(user_id = user.id, ?provisioned, "Spark SSO login");
    Ok((code, binding))
}

fn replayed() -> ApiError {
    ApiError::unauthorized("token_replayed", "This SSO token was already used")
}

/// Exchanges a one-time code for a token pair (JSON body and cookies).
#[utoipa::path(post, path = "/spark/token", tag = "spark",
    request_body = crate::api::auth::CodeExchange,
    responses(
        (status = 200, description = "A token pair, as `/api/auth/refresh` (also set as cookies)", body = crate::domain::auth::sessions::TokenPair),
        (status = 400, description = "`invalid_code` (unknown, used, or without the `__Host-hub_login` cookie of the browser that made the login), `code_expired`, `invalid_json`", body = crate::ErrorBody),
        (status = 429, description = "Too many invalid codes from this address", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn token(ctx: Arc<Context>, req: Request) -> ApiResult {
    crate::api::auth::exchange_code(&ctx, &req, PURPOSE, TOKEN_INVALID_PER_ADDRESS, "sign in from Spark again").await
}

/// A 302 that keeps the SSO token out of the `Referer` the frontend would receive, and binds the
/// code to this browser.
fn redirect(location: &str, binding_cookie: &str) -> ApiResult {
    crate::support::http::redirect_no_referrer(location, &[binding_cookie.to_string()])
}

/// `POST /spark/webhook/submission`: a signed Spark submission becomes evidence, completion and XP.
/// The signature is verified first (an HMAC costs less than the limit's read): requests whose
/// signature does not verify are then counted and limited per source address, verified ones count
/// against Spark's own limit only, so forgeries from Spark's own egress address never refuse Spark.
#[utoipa::path(post, path = "/spark/webhook/submission", tag = "spark",
    security(("spark_signature" = [])),
    request_body(description = "The submission (JSON, files by URL), or multipart/form-data with a signed `metadata` field and one part per file",
        content(
            (crate::integrations::spark::webhook::SubmissionPayload = "application/json"),
            (String = "multipart/form-data"),
        )),
    responses(
        (status = 200, description = "Recorded (or recorded before: the same completion)", body = SubmissionAnswer),
        (status = 202, description = "`processing` (files by URL: the worker fetches them) or `pending` (no quest maps the assignment yet)", body = SubmissionAnswer),
        (status = 400, description = "`invalid_json`, `invalid_payload`, `invalid_timestamp`, `stale_timestamp`, `invalid_multipart`, `file_hash_mismatch`", body = crate::ErrorBody),
        (status = 401, description = "`missing_signature`, `invalid_signature`", body = crate::ErrorBody),
        (status = 404, description = "`user_not_found`, `quest_not_found`", body = crate::ErrorBody),
        (status = 413, description = "`payload_too_large`, `file_too_large`", body = crate::ErrorBody),
        (status = 415, description = "`unsupported_media_type`, `unsupported_file_type`", body = crate::ErrorBody),
        (status = 422, description = "`submission_failed` (its files were refused earlier)", body = crate::ErrorBody),
        (status = 429, description = "Spark's limit, or too many unverifiable requests from this address", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn submission(ctx: Arc<Context>, req: Request) -> ApiResult {
    use crate::integrations::spark::webhook::{self, Outcome, SubmissionPayload};
    let address = client_ip(&req);
    let raw = crate::support::http::body_bytes(&req);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let content_type = header("content-type").unwrap_or("").to_string();
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    // JSON: the whole body is signed. Multipart: the `metadata` field is signed and lists each
    // file part's SHA-256, so the signature covers the files too.
    let (signed, parts) = match media.as_str() {
        "application/json" => {
            if raw.len() > webhook::MAX_JSON_BYTES {
                return Err(ApiError::payload_too_large(webhook::MAX_JSON_BYTES));
            }
            (bytes::Bytes::copy_from_slice(raw), Vec::new())
        }
        "multipart/form-data" => {
            if raw.len() > webhook::MAX_MULTIPART_BYTES {
                return Err(ApiError::payload_too_large(webhook::MAX_MULTIPART_BYTES));
            }
            match webhook::parse_multipart(&content_type, raw).await {
                Ok(parsed) => parsed,
                Err(e) => return Err(unverified(&ctx, &address, e).await),
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the submission as application/json, or multipart/form-data with a metadata field",
            ));
        }
    };
    if let Err(e) = webhook::verify_signature(&ctx, &signed, header(webhook::SIGNATURE_HEADER)).await {
        if e.status != StatusCode::UNAUTHORIZED {
            return Err(e);
        }
        return Err(unverified(&ctx, &address, e).await);
    }
    if signed.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("invalid_json", "The submission must be a JSON object"));
    }
    let payload: SubmissionPayload = serde_json::from_slice(&signed).map_err(|e| {
        // serde's text may quote a value (a file URL is a credential): only the position is told.
        ApiError::bad_request(
            "invalid_json",
            format!("Invalid submission at line {} column {} ({:?} error)", e.line(), e.column(), e.classify()),
        )
    })?;
    // A captured body replayed later is refused before it can spend Spark's own quota.
    if let Err(stale) = webhook::check_timestamp(ctx.clock.now(), &payload.submitted_at) {
        return Err(ratelimit::count_failure(&ctx, WEBHOOK_UNVERIFIED_PER_ADDRESS, &address, stale).await);
    }
    let partner = Rule { name: "spark-webhook", limit: ctx.config.spark_webhook_rate_limit, window_secs: 60 };
    ratelimit::check(&ctx, partner, sso::PROVIDER).await?;
    webhook::validate(&payload)?;
    let by_url = payload.submission_files.iter().filter(|f| f.url.is_some()).count();
    if parts.is_empty() && by_url < payload.submission_files.len() {
        return Err(ApiError::bad_request("invalid_payload", "JSON submissions carry files by url"));
    }
    if !parts.is_empty() && by_url > 0 {
        return Err(ApiError::bad_request("invalid_payload", "a multipart submission carries its files as parts"));
    }
    let answer = |status: &str| SubmissionAnswer { status: status.into(), ..Default::default() };
    match crate::integrations::spark::submissions::accept(&ctx, &payload, &parts).await? {
        Outcome::Recorded(r) => {
            json(StatusCode::OK, &SubmissionAnswer { completion_id: Some(r.completion_id), ..answer("ok") })
        }
        Outcome::Processing { submission_id } => json(
            StatusCode::ACCEPTED,
            &SubmissionAnswer {
                submission_id: Some(submission_id),
                message: Some(
                    "Verified and recorded; its files are being fetched and the task completes when they are stored"
                        .into(),
                ),
                ..answer("processing")
            },
        ),
        Outcome::Pending => json(
            StatusCode::ACCEPTED,
            &SubmissionAnswer {
                message: Some(
                    "No quest maps this assignment yet; the submission is kept and processed when one does".into(),
                ),
                ..answer("pending")
            },
        ),
    }
}

/// A request that could not be verified, counted against its source address: a spent address is
/// answered 429 with one read, others are counted and answered `refusal`.
async fn unverified(ctx: &Context, address: &str, refusal: ApiError) -> ApiError {
    if let Err(limited) = ratelimit::refuse_if_spent(ctx, WEBHOOK_UNVERIFIED_PER_ADDRESS, address).await {
        return limited;
    }
    ratelimit::count_failure(ctx, WEBHOOK_UNVERIFIED_PER_ADDRESS, address, refusal).await
}

/// What became of a submission: `ok` with its completion, `processing` with its id, or `pending`.
#[derive(Default, serde::Serialize, utoipa::ToSchema)]
pub struct SubmissionAnswer {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Submissions kept for Spark assignments no quest maps yet, oldest first (the first to expire): an
/// organization admin maps their assignments to quests before they are forgotten (30 days).
#[utoipa::path(get, path = "/api/spark/pending-submissions", tag = "spark", security(("bearer" = []), ("cookie" = [])),
    params(
        ("organization_id" = Option<String>, Query, description = "Platform admins: whose submissions (organization admins: their own)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100 (default 25)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the organization's kept submissions, oldest first", body = PendingPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`, `missing_organization`", body = crate::ErrorBody),
        (status = 401, description = "No valid access token", body = crate::ErrorBody),
        (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn pending_submissions(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let organization = query_id(&req, "organization_id")?;
    let limit = query_limit(&req, 25, 100)?;
    let page =
        pending::list(&ctx, &principal, organization.as_deref(), limit, query_param(&req, "cursor").as_deref()).await?;
    json(StatusCode::OK, &page)
}
