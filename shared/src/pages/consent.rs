//! `/api/oauth/authorize`: the OAuth consent page. A partner app sends the user here; signed out,
//! they sign in by email first and come back; then they see which app (and which organization's)
//! asks for what, in plain words, and Allow or Deny. A consent already given for these scopes is
//! not asked again. Never framed; the form may only end at the app's registered redirect URI.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, Response};

use crate::domain::auth::User;
use crate::domain::auth::guard::{ACCESS_COOKIE, authenticate};
use crate::integrations::oauth::authorize::{self, AuthorizationRequest, Refusal};
use crate::integrations::oauth::issuer;
use crate::runtime::ratelimit::{self, Rule};
use crate::support::html::{Form, Page, csrf_field, csrf_token, escape, respond};
use crate::support::http::{ApiResult, client_ip};
use crate::{ApiError, Context};

/// Authorization requests per source address per minute (each reads the client, maybe the consent).
const PER_IP: Rule = Rule { name: "oauth-authorize", limit: 60, window_secs: 60 };
/// The authorization parameters the consent form carries over to its POST.
const CARRIED: &[&str] =
    &["response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"];

/// `GET|POST /api/oauth/authorize`.
pub async fn authorize(ctx: Arc<Context>, req: Request) -> ApiResult {
    match req.method() == http::Method::POST {
        true => decide(ctx, req).await,
        false => ask(ctx, req).await,
    }
}

/// Checks the request; signs in, asks for consent, or (consent given before) answers at once.
#[utoipa::path(get, path = "/api/oauth/authorize", tag = "oauth",
    params(
        ("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query, description = "The app"),
        ("redirect_uri" = Option<String>, Query, description = "Exactly one of the app's registered URIs (optional when it has one)"),
        ("scope" = String, Query, description = "Space-separated scopes"),
        ("state" = Option<String>, Query, description = "Echoed back"),
        ("code_challenge" = String, Query, description = "PKCE: base64url SHA-256 of the verifier"),
        ("code_challenge_method" = String, Query, description = "`S256`")
    ),
    responses(
        (status = 200, description = "The consent page (HTML)", content_type = "text/html", body = String),
        (status = 302, description = "Back to the app: `code`, `state`, `iss`; or `error`, `error_description`, `state`, `iss`"),
        (status = 303, description = "Signed out: to the email sign-in, which comes back here"),
        (status = 400, description = "Unknown app or redirect URI mismatch: an error page, never a redirect", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn ask(ctx: Arc<Context>, req: Request) -> ApiResult {
    if let Err(e) = ratelimit::check(&ctx, PER_IP, &client_ip(&req)).await {
        return respond(Err(e));
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let request = match authorize::check(&ctx, &params).await {
        Ok(r) => r,
        Err(refusal) => return refuse(&ctx, refusal, StatusCode::FOUND),
    };
    let Some(user) = signed_in_user(&ctx, &req).await else {
        let here = format!("/api/oauth/authorize?{}", req.uri().query().unwrap_or(""));
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return redirect(StatusCode::SEE_OTHER, &format!("/auth/sign-in?next={next}"));
    };
    if !authorize::may_grant(&user, &request) {
        return refuse(
            &ctx,
            denied(&request, "Only a member of the app's organization may grant these scopes"),
            StatusCode::FOUND,
        );
    }
    // A public client's id is no secret: its requests are never answered without the user (RFC 6749 §10.2).
    let remembered = match request.client.public {
        true => Ok(false),
        false => authorize::consented(&ctx, &user, &request).await,
    };
    match remembered {
        Ok(true) => match authorize::approve(&ctx, &user, &request).await {
            Ok(url) => redirect(StatusCode::FOUND, &url),
            Err(e) => respond(Err(e)),
        },
        Ok(false) => consent_page(&req, &user, &request),
        Err(e) => respond(Err(e)),
    }
}

/// Allow or Deny, posted by the consent page (CSRF-checked); answers with the redirect to the app.
#[utoipa::path(post, path = "/api/oauth/authorize", tag = "oauth",
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the app: `code` (Allow) or `error=access_denied` (Deny), with `state` and `iss`"),
        (status = 400, description = "The carried request no longer checks out (an error page)", content_type = "text/html", body = String),
        (status = 401, description = "No session (an error page)", content_type = "text/html", body = String),
        (status = 403, description = "CSRF check failed", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn decide(ctx: Arc<Context>, req: Request) -> ApiResult {
    let form = match Form::parse(&req) {
        Ok(f) => f,
        Err(e) => return respond(Err(e)),
    };
    let params: Vec<(String, String)> =
        CARRIED.iter().filter_map(|k| form.get(k).map(|v| (k.to_string(), v.to_string()))).collect();
    let request = match authorize::check(&ctx, &params).await {
        Ok(r) => r,
        Err(refusal) => return refuse(&ctx, refusal, StatusCode::SEE_OTHER),
    };
    let Some(user) = signed_in_user(&ctx, &req).await else {
        return respond(Err(ApiError::unauthorized(
            "sign_in_required",
            "Your session ended; start again from the app",
        )));
    };
    if form.get("decision") != Some("allow") || !authorize::may_grant(&user, &request) {
        tracing::info!(user_id = user.id, client_id = request.client.client_id, "authorization denied");
        return refuse(&ctx, denied(&request, "The user denied the request"), StatusCode::SEE_OTHER);
    }
    match authorize::approve(&ctx, &user, &request).await {
        Ok(url) => redirect(StatusCode::SEE_OTHER, &url),
        Err(e) => respond(Err(e)),
    }
}

/// The consent form, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConsentForm {
    csrf: String,
    /// `allow` or `deny`.
    decision: String,
    response_type: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    code_challenge: String,
    code_challenge_method: String,
}

/// The user of the browser's session (the access cookie); none when it is missing or expired.
async fn signed_in_user(ctx: &Context, req: &Request) -> Option<User> {
    crate::support::http::cookie(req, ACCESS_COOKIE)?;
    let principal = authenticate(ctx, req).await.ok()?;
    ctx.store().get_user(&principal.user_id).await.ok().flatten()
}

fn denied(request: &AuthorizationRequest, why: &str) -> Refusal {
    Refusal::Redirect {
        redirect_uri: request.redirect_uri.clone(),
        state: request.state.clone(),
        error: "access_denied",
        description: why.into(),
    }
}

fn refuse(ctx: &Context, refusal: Refusal, status: StatusCode) -> ApiResult {
    match refusal {
        Refusal::Page(e) => respond(Err(e)),
        Refusal::Redirect { redirect_uri, state, error, description } => {
            let iss = match issuer(ctx) {
                Ok(iss) => iss,
                Err(e) => return respond(Err(e)),
            };
            let params = [("error", error), ("error_description", description.as_str())];
            redirect(status, &authorize::redirect_to(&redirect_uri, &params, state.as_deref(), &iss))
        }
    }
}

fn redirect(status: StatusCode, location: &str) -> ApiResult {
    Response::builder()
        .status(status)
        .header(http::header::LOCATION, location)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("referrer-policy", "no-referrer")
        .body(Body::Empty)
        .map_err(ApiError::internal)
}

fn consent_page(req: &Request, user: &User, request: &AuthorizationRequest) -> ApiResult {
    let (token, cookie) = csrf_token(req);
    let values = [
        ("response_type", Some("code".to_string())),
        ("client_id", Some(request.client.client_id.clone())),
        // Only as the app sent it: the consent's POST is the same request (RFC 6749 §4.1.3).
        ("redirect_uri", request.redirect_uri_given.then(|| request.redirect_uri.clone())),
        ("scope", Some(request.scope.join(" "))),
        ("state", request.state.clone()),
        ("code_challenge", Some(request.code_challenge.clone())),
        ("code_challenge_method", Some("S256".to_string())),
    ];
    let hidden: String = values
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape(v)))
        })
        .collect();
    let scopes: String =
        authorize::describe(&request.scope).iter().map(|d| format!("<li>{}</li>", escape(d))).collect();
    let who = user.email.as_deref().unwrap_or("your account");
    let body = format!(
        "<h1><span id=\"app\">{app}</span> wants to access your account</h1>\
         <p>An app of the organization <strong>{org}</strong>. You are signed in as <strong>{who}</strong>.</p>\
         <p>It will be able to:</p><ul id=\"scopes\">{scopes}</ul>\
         <form method=\"post\" action=\"/api/oauth/authorize\">{csrf}{hidden}\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>\
         <p class=\"muted\">You can withdraw this at any time from your account (authorized apps).</p>",
        app = escape(&request.client.name),
        org = escape(&request.client.organization_id),
        who = escape(who),
        csrf = csrf_field(&token),
    );
    let mut page = Page::new(StatusCode::OK, "Authorize an app", body);
    page.cookies.extend(cookie);
    page.form_action = url::Url::parse(&request.redirect_uri).ok().map(|u| u.origin().ascii_serialization());
    page.into_response()
}
