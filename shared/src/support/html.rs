//! HTML pages as the hub serves them (DESIGN.md §3b): one page shape with its strict
//! Content-Security-Policy, escaping, CSRF tokens and forms. The pages themselves are in `pages`
//! (sign-in, invitation, consent) and in the integrations that serve one (LTI).

use std::sync::LazyLock;

use base64::Engine;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};

use crate::support::http::{ApiResult, body_bytes, cookie, secure_cookie};
use crate::{ApiError, support::crypto};

/// The double-submit CSRF cookie: `__Host-` pins it to our origin; `SameSite=Strict` keeps it off
/// cross-site requests, so a form posted from elsewhere never carries a matching pair.
pub const CSRF_COOKIE: &str = "__Host-hub_csrf";
const CSRF_FIELD: &str = "csrf";
/// Form bodies of our pages are a few fields.
const MAX_FORM_BODY: usize = 8 * 1024;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}\
h1{font-size:1.4rem}label{display:block;font-weight:600;margin:.8rem 0 .3rem}\
input[type=email]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem;background:#1f5fbf;color:#fff;border:0;border-radius:.3rem;cursor:pointer}\
button:focus,a:focus{outline:3px solid #f5a623;outline-offset:2px}\
.error{color:#a40000;font-weight:600}.note{white-space:pre-wrap;border-left:3px solid #ccc;padding-left:1rem}\
.muted{color:#555;font-size:.9rem}";

/// The one script a page may run: it submits the page's form (a signed answer posted back to an LMS).
const AUTO_SUBMIT: &str = "document.forms[0].submit();";

/// `style-src` allows exactly our stylesheet, by its hash.
static STYLE_HASH: LazyLock<String> =
    LazyLock::new(|| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes())));

/// The page's policy: our stylesheet, no script, forms posted to us only (plus, for a form whose
/// answer redirects elsewhere, that origin: browsers apply `form-action` to the redirect too).
fn csp(form_action_extra: Option<&str>, frame_ancestors: Option<&str>, auto_submit: bool) -> String {
    let script = if auto_submit {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(AUTO_SUBMIT.as_bytes()));
        format!("script-src 'sha256-{hash}'; ")
    } else {
        String::new()
    };
    format!(
        "default-src 'none'; {script}style-src 'sha256-{}'; img-src 'self'; form-action 'self'{}; \
         frame-ancestors {}; base-uri 'none'",
        STYLE_HASH.as_str(),
        form_action_extra.map(|o| format!(" {o}")).unwrap_or_default(),
        frame_ancestors.unwrap_or("'none'")
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page: status, title and body markup (already escaped), and cookies to set.
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub body: String,
    pub cookies: Vec<String>,
    /// An origin the page's form may end up at (the OAuth consent redirects to the client).
    pub form_action: Option<String>,
    /// Who may frame the page (CSP `frame-ancestors`); none by default. LTI pages are framed by LMSs.
    pub frame_ancestors: Option<String>,
    /// The page submits its form at once (the button stays for browsers without script).
    pub auto_submit: bool,
}

impl Page {
    pub fn new(status: StatusCode, title: &str, body: String) -> Self {
        Self {
            status,
            title: title.into(),
            body,
            cookies: Vec::new(),
            form_action: None,
            frame_ancestors: None,
            auto_submit: false,
        }
    }

    /// A page saying why a request failed, with the error's status.
    pub fn error(e: &ApiError) -> Self {
        let title = match e.status.as_u16() {
            429 => "Too many attempts",
            500..=599 => "Something went wrong",
            _ => "This did not work",
        };
        Self::new(
            e.status,
            title,
            format!(
                "<h1>{}</h1><p class=\"error\" role=\"alert\" data-error=\"{}\">{}</p>",
                escape(title),
                e.code,
                escape(&e.message)
            ),
        )
    }

    pub fn into_response(self) -> ApiResult {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head><body><main>{}</main>{}</body></html>\n",
            escape(&self.title),
            self.body,
            if self.auto_submit { format!("<script>{AUTO_SUBMIT}</script>") } else { String::new() }
        );
        let mut b = Response::builder()
            .status(self.status)
            .header(CONTENT_TYPE, "text/html; charset=utf-8")
            .header(CACHE_CONTROL, "no-store")
            .header(
                "content-security-policy",
                csp(self.form_action.as_deref(), self.frame_ancestors.as_deref(), self.auto_submit),
            )
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer");
        if self.frame_ancestors.is_none() {
            b = b.header("x-frame-options", "DENY");
        }
        for c in &self.cookies {
            b = b.header(http::header::SET_COOKIE, c);
        }
        b.body(Body::from(html)).map_err(ApiError::internal)
    }
}

/// Renders a page handler's outcome: its page, or its error as a page.
pub fn respond(outcome: Result<Page, ApiError>) -> ApiResult {
    outcome.unwrap_or_else(|e| Page::error(&e)).into_response()
}

/// The CSRF token for a form: the browser's current one, or a new one with its cookie.
pub fn csrf_token(req: &Request) -> (String, Option<String>) {
    match cookie(req, CSRF_COOKIE)
        .filter(|t| t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        Some(token) => (token, None),
        None => {
            let token = crypto::random_token(32);
            let set = secure_cookie(CSRF_COOKIE, &token, "/", 3600, "Strict");
            (token, Some(set))
        }
    }
}

/// The hidden form field carrying the CSRF token.
pub fn csrf_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">", escape(token))
}

/// A posted form (`application/x-www-form-urlencoded`), checked against the CSRF cookie.
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses the body and requires the CSRF field to match the cookie (constant time).
    pub fn parse(req: &Request) -> Result<Self, ApiError> {
        let bytes = body_bytes(req);
        if bytes.len() > MAX_FORM_BODY {
            return Err(ApiError::payload_too_large(MAX_FORM_BODY));
        }
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the form as a browser does",
            ));
        }
        let form = Self(url::form_urlencoded::parse(bytes).into_owned().collect());
        let expected = cookie(req, CSRF_COOKIE).unwrap_or_default();
        let given = form.get(CSRF_FIELD).unwrap_or_default();
        if expected.is_empty() || !crypto::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "This form is out of date or did not come from this site; go back, reload the page and try again",
            ));
        }
        Ok(form)
    }

    /// A field's value (the first, when repeated); `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// A `303 See Other` to a path of ours (after a form), setting cookies.
pub fn see_other(location: &str, cookies: &[String]) -> ApiResult {
    let mut b = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(http::header::LOCATION, location)
        .header(CACHE_CONTROL, "no-store")
        .header("referrer-policy", "no-referrer");
    for c in cookies {
        b = b.header(http::header::SET_COOKIE, c);
    }
    b.body(Body::Empty).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_element_and_attribute_contexts() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_policy_allows_our_stylesheet_and_no_script_or_framing() {
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        let policy = csp(None, None, false);
        assert!(policy.contains(&format!("'sha256-{expected}'")));
        assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
        assert!(!policy.contains("script-src") && !policy.contains("unsafe"));
        assert!(csp(Some("https://app.example"), None, false).contains("form-action 'self' https://app.example;"));
        assert!(csp(None, Some("https:"), false).contains("frame-ancestors https:;"), "LTI pages are framed by LMSs");
        let submitting = csp(None, None, true);
        assert!(submitting.contains("script-src 'sha256-") && !submitting.contains("unsafe"), "{submitting}");
    }

    fn form_request(cookie: Option<&str>, body: &str) -> Request {
        let mut b = http::Request::builder().header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header(http::header::COOKIE, format!("{CSRF_COOKIE}={c}"));
        }
        b.body(Body::from(body)).unwrap()
    }

    #[test]
    fn forms_need_the_matching_csrf_pair() {
        let token = crypto::random_token(32);
        let ok = Form::parse(&form_request(Some(&token), &format!("csrf={token}&email=a%40b.example"))).unwrap();
        assert_eq!(ok.get("email"), Some("a@b.example"));
        for (cookie, body) in [
            (None, format!("csrf={token}")),
            (Some(token.as_str()), "csrf=other".to_string()),
            (Some(token.as_str()), String::new()),
        ] {
            assert_eq!(Form::parse(&form_request(cookie, &body)).err().unwrap().code, "csrf_failed");
        }
    }
}
