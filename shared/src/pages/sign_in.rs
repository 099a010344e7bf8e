//! The email sign-in pages: `/auth/sign-in` (enter your address, then "check your email") and
//! `/auth/sign-in/confirm` (the emailed link: a button that POSTs the code, so a mail scanner
//! following the link does not use it up).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;

use crate::domain::auth::email_sign_in::{self, CODE_TTL_SECS, valid_next};
use crate::domain::auth::login_binding;
use crate::domain::auth::sessions::session_cookies;
use crate::support::html::{Form, Page, csrf_field, csrf_token, escape, respond, see_other};
use crate::support::http::{ApiResult, client_ip, cookie, query_param};
use crate::{ApiError, Context};

/// `GET|POST /auth/sign-in`.
pub async fn sign_in(ctx: Arc<Context>, req: Request) -> ApiResult {
    match req.method() == http::Method::POST {
        true => sign_in_submit(ctx, req).await,
        false => sign_in_form(ctx, req).await,
    }
}

/// The sign-in form.
#[utoipa::path(get, path = "/auth/sign-in", tag = "pages",
    params(("next" = Option<String>, Query, description = "A path of this site to open once signed in")),
    responses(
        (status = 200, description = "The sign-in page (HTML): an email field", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn sign_in_form(_ctx: Arc<Context>, req: Request) -> ApiResult {
    let next = query_param(&req, "next").filter(|n| valid_next(n));
    let (token, cookie) = csrf_token(&req);
    let mut page = form_page(StatusCode::OK, &token, next.as_deref(), "", None);
    page.cookies.extend(cookie);
    page.into_response()
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SignInForm {
    email: String,
    csrf: String,
    next: Option<String>,
}

/// Sends the link (if the address has an account or an invitation) and says to check the mailbox.
#[utoipa::path(post, path = "/auth/sign-in", tag = "pages",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "\"Check your email\" (HTML), the same whether or not the address is known", content_type = "text/html", body = String),
        (status = 400, description = "The address is not valid: the form again, with the error", content_type = "text/html", body = String),
        (status = 403, description = "CSRF check failed", content_type = "text/html", body = String),
        (status = 429, description = "Too many links asked for", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn sign_in_submit(ctx: Arc<Context>, req: Request) -> ApiResult {
    let form = match Form::parse(&req) {
        Ok(f) => f,
        Err(e) => return respond(Err(e)),
    };
    let email = form.get("email").unwrap_or_default().trim().to_string();
    let next = form.get("next").filter(|n| valid_next(n));
    // The link leads to an app's authorization page only in this browser.
    let binding = login_binding::for_sign_in(cookie(&req, login_binding::SIGN_IN_COOKIE).as_deref());
    match email_sign_in::start(&ctx, &email, next, Some(&binding.digest), &client_ip(&req)).await {
        Ok(()) => {
            let body = format!(
                "<h1>Check your email</h1><p role=\"status\">If <strong>{}</strong> has an account or an invitation, \
                 we have sent it a sign-in link. The link works once, for {} minutes.</p>\
                 <p class=\"muted\">No email? Check your spam folder, or <a href=\"/auth/sign-in\">try again</a>.</p>",
                escape(&email),
                CODE_TTL_SECS / 60
            );
            let mut page = Page::new(StatusCode::OK, "Check your email", body);
            page.cookies.push(binding.set_cookie);
            page.into_response()
        }
        Err(e) if e.code == "invalid_email" => {
            let (token, _) = csrf_token(&req);
            form_page(StatusCode::BAD_REQUEST, &token, next, &email, Some(&e.message)).into_response()
        }
        Err(e) => respond(Err(e)),
    }
}

fn form_page(status: StatusCode, csrf: &str, next: Option<&str>, email: &str, error: Option<&str>) -> Page {
    let error = error
        .map(|m| format!("<p class=\"error\" id=\"email-error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let next =
        next.map(|n| format!("<input type=\"hidden\" name=\"next\" value=\"{}\">", escape(n))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1><p>We will email you a link to sign in. There is no password.</p>{error}\
         <form method=\"post\" action=\"/auth/sign-in\">{csrf}{next}\
         <label for=\"email\">Email address</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required value=\"{email}\" aria-describedby=\"email-error\">\
         <button type=\"submit\">Email me a sign-in link</button></form>",
        csrf = csrf_field(csrf),
        email = escape(email),
    );
    Page::new(status, "Sign in", body)
}

/// `GET|POST /auth/sign-in/confirm`.
pub async fn confirm(ctx: Arc<Context>, req: Request) -> ApiResult {
    match req.method() == http::Method::POST {
        true => confirm_submit(ctx, req).await,
        false => confirm_form(ctx, req).await,
    }
}

/// The page the emailed link opens: one button; the code is not used until it is pressed.
#[utoipa::path(get, path = "/auth/sign-in/confirm", tag = "pages",
    params(("code" = String, Query, description = "The code of the emailed link")),
    responses(
        (status = 200, description = "A \"Sign in\" button that posts the code (HTML)", content_type = "text/html", body = String),
        (status = 400, description = "`invalid_code`: no code, or one unknown, expired or used", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn confirm_form(ctx: Arc<Context>, req: Request) -> ApiResult {
    let Some(code) = query_param(&req, "code").filter(|c| c.len() <= 128) else {
        return respond(Err(ApiError::bad_request(
            "invalid_code",
            "This link is incomplete; open the one in your email",
        )));
    };
    // Which account the link opens, so nobody signs in as someone else by a link they were sent.
    let grant = match ctx.store().peek_code(&code, email_sign_in::PURPOSE).await {
        Ok(grant) => grant.filter(|g| g.expires_at > ctx.clock.now()),
        Err(e) => return respond(Err(e.into())),
    };
    let Some(address) = grant.and_then(|g| g.email) else {
        return respond(Err(ApiError::bad_request(
            "invalid_code",
            "This sign-in link is invalid, expired or already used",
        )));
    };
    let (token, cookie) = csrf_token(&req);
    let body = format!(
        "<h1>Sign in</h1><p>Continue to sign in as <strong id=\"account\">{}</strong> on this device.</p>\
         <form method=\"post\" action=\"/auth/sign-in/confirm\">{}<input type=\"hidden\" name=\"code\" value=\"{}\">\
         <button type=\"submit\">Sign in</button></form>",
        escape(&masked(&address)),
        csrf_field(&token),
        escape(&code)
    );
    let mut page = Page::new(StatusCode::OK, "Sign in", body);
    page.cookies.extend(cookie);
    page.into_response()
}

/// Uses the code up and opens the session (cookies), then goes to `next` or says so.
#[utoipa::path(post, path = "/auth/sign-in/confirm", tag = "pages",
    request_body(content = super::CodeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed in (HTML); the session cookies are set", content_type = "text/html", body = String),
        (status = 303, description = "Signed in; on to the `next` path of the link"),
        (status = 400, description = "`invalid_code`: unknown, expired or used", content_type = "text/html", body = String),
        (status = 403, description = "CSRF check failed", content_type = "text/html", body = String),
        (status = 429, description = "Too many wrong codes from this address", content_type = "text/html", body = String),
        (status = "default", description = "An error page (HTML)", content_type = "text/html", body = String)
    ))]
pub async fn confirm_submit(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = async {
        let form = Form::parse(&req)?;
        let browser = cookie(&req, login_binding::SIGN_IN_COOKIE);
        email_sign_in::verify(&ctx, form.get("code").unwrap_or_default(), &client_ip(&req), browser.as_deref()).await
    }
    .await;
    let signed_in = match outcome {
        Ok(s) => s,
        Err(e) => return respond(Err(e)),
    };
    let cookies = session_cookies(&signed_in.tokens);
    if let Some(next) = signed_in.next.as_deref().filter(|n| valid_next(n)) {
        return see_other(next, &cookies);
    }
    let mut page = signed_in_page(&ctx, "You are signed in", "");
    page.cookies.extend(cookies);
    page.into_response()
}

/// The end of a page flow: where to go next (the frontend, when there is one).
pub fn signed_in_page(ctx: &Context, title: &str, lead: &str) -> Page {
    let next = match &ctx.config.frontend_url {
        Some(url) => format!("<p><a href=\"{}\">Continue</a></p>", escape(url)),
        None => "<p class=\"muted\">You can close this page.</p>".to_string(),
    };
    Page::new(StatusCode::OK, title, format!("<h1>{}</h1>{lead}{next}", escape(title)))
}

/// An address as the confirm page shows it: enough to recognise, not to harvest (`a***@example.com`).
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_masked_but_recognisable() {
        assert_eq!(super::masked("ada@example.com"), "a***@example.com");
        assert_eq!(super::masked("x"), "***");
    }
}
