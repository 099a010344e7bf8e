//! `/observers/accept`: the page an invitation email links to. It shows who invites whom and what
//! they will see; accepting (a CSRF-checked POST) links the observer and signs them in.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;

use super::sign_in::signed_in_page;
use crate::domain::auth::guard::authenticate;
use crate::domain::auth::sessions::session_cookies;
use crate::integrations::observers::invitations::{self, Preview};
use crate::runtime::ratelimit;
use crate::support::html::{Form, Page, csrf_field, csrf_token, escape, respond};
use crate::support::http::{ApiResult, query_param};
use crate::{ApiError, Context};

/// `GET|POST /observers/accept`.
pub async fn accept(ctx: Arc<Context>, req: Request) -> ApiResult {
    match req.method() == http::Method::POST {
        true => accept_submit(ctx, req).await,
        false => accept_form(ctx, req).await,
    }
}

/// Shows the invitation and an Accept button (nothing is used up by opening the link).
#[utoipa::path(get, path = "/observers/accept", tag = "pages",
    params(("code" = String, Query, description = "The code of the invitation email")),
    responses(
        (status = 200, description = "The invitation and an Accept button (HTML)", content_type = "text/html", body = String),
        (status = 404, description = "`invitation_not_found`: unknown code, or replaced by a newer email", content_type = "text/html", body = String),
        (status = 410, description = "`invitation_used`, `invitation_cancelled`, `invitation_expired`", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn accept_form(ctx: Arc<Context>, req: Request) -> ApiResult {
    let code = query_param(&req, "code").unwrap_or_default();
    let Preview { invitation: inv, student_name, .. } = match invitations::open(&ctx, &code).await {
        Ok(p) => p,
        Err(e) => return respond(Err(e)),
    };
    let mut can = vec!["their quests, XP and badges"];
    if inv.permissions.can_view_evidence {
        can.push("the work they hand in");
    }
    let comment = if inv.permissions.can_comment { "<li>You can leave them encouraging comments.</li>" } else { "" };
    let note = inv
        .message
        .as_deref()
        .map(|m| format!("<p>Their message:</p><p class=\"note\">{}</p>", escape(m)))
        .unwrap_or_default();
    let (token, cookie) = csrf_token(&req);
    let body = format!(
        "<h1>{name} invites you to follow their learning</h1>\
         <p>You are invited as their <strong>{rel}</strong>, at <strong>{email}</strong>.</p>\
         <ul><li>You will see {can}.</li>{comment}<li>They can change this or remove you at any time.</li></ul>{note}\
         <form method=\"post\" action=\"/observers/accept\">{csrf}<input type=\"hidden\" name=\"code\" value=\"{code}\">\
         <button type=\"submit\">Accept invitation</button></form>",
        name = escape(&student_name),
        rel = escape(&inv.relationship),
        email = escape(&inv.email),
        can = escape(&can.join(" and ")),
        csrf = csrf_field(&token),
        code = escape(&code),
    );
    let mut page = Page::new(StatusCode::OK, "Invitation", body);
    page.cookies.extend(cookie);
    page.into_response()
}

/// Accepts: links the observer (the signed-in account, whose address must be the invitation's, or
/// the invited address's account, created if needed) and sets the observer's session cookies.
#[utoipa::path(post, path = "/observers/accept", tag = "pages",
    request_body(content = super::CodeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Accepted and signed in (HTML); the session cookies are set", content_type = "text/html", body = String),
        (status = 401, description = "`sign_in_required`: the invited address has an account; a link to sign in", content_type = "text/html", body = String),
        (status = 403, description = "`invitation_email_mismatch` (signed in as another address) or CSRF check failed", content_type = "text/html", body = String),
        (status = 404, description = "`invitation_not_found`", content_type = "text/html", body = String),
        (status = 410, description = "`invitation_used`, `invitation_cancelled`, `invitation_expired`", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn accept_submit(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = async {
        let form = Form::parse(&req)?;
        let ip = crate::support::http::client_ip(&req);
        ratelimit::refuse_if_spent(&ctx, crate::domain::auth::email_sign_in::CODE_FAILURES, &ip).await?;
        // An expired session cookie is no session: the emailed code itself proves the address.
        let principal = authenticate(&ctx, &req).await.ok();
        match invitations::accept(&ctx, form.get("code").unwrap_or_default(), principal.as_ref()).await {
            Err(e) if e.code == "invitation_not_found" => {
                Err(ratelimit::count_failure(&ctx, crate::domain::auth::email_sign_in::CODE_FAILURES, &ip, e).await)
            }
            other => other,
        }
    }
    .await;
    let (accepted, _) = match outcome {
        Ok(a) => a,
        Err(e) if e.code == "sign_in_required" => {
            let body = format!(
                "<h1>Sign in first</h1><p class=\"error\" role=\"alert\" data-error=\"sign_in_required\">{}</p>\
                 <p><a href=\"/auth/sign-in\">Sign in</a>, then open the invitation link from your email again.</p>",
                escape(&e.message)
            );
            return Page::new(StatusCode::UNAUTHORIZED, "Sign in first", body).into_response();
        }
        Err(e) => return respond(Err::<Page, ApiError>(e)),
    };
    let lead = format!(
        "<p role=\"status\" data-student-id=\"{}\">You now follow {}'s learning as their {}.</p>",
        escape(&accepted.student_id),
        escape(&accepted.student_name),
        escape(&accepted.relationship)
    );
    let mut page = signed_in_page(&ctx, "Invitation accepted", &lead);
    page.cookies.extend(session_cookies(&accepted.tokens));
    page.into_response()
}
