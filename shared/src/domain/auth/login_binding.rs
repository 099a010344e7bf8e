//! What binds a flow to the browser that started it (DESIGN.md §3a): a random secret in a cookie, its
//! SHA-256 stored with the flow's code, compared in constant time.
//!
//! - **One-time login codes.** Spark SSO and LTI launches end with a code handed to the frontend
//!   (`/auth/callback?code=…`), which exchanges it for a session. Without a binding, a code from an
//!   attacker's own login, sent to a victim within its 60 s, would sign the victim into the attacker's
//!   account (login CSRF) and the victim's work would land there. The redirect that carries the code
//!   also sets `__Host-hub_login_<xx>` (`xx` from the code's digest: two tool frames on one page
//!   rarely share a name), and the exchange consumes the code only with it (one
//!   conditional delete). The cookie is `SameSite=None; Partitioned`: the frontend's exchange is a
//!   credentialed `fetch` from a page on the hub's *site* (`app.school.org` beside `hub.school.org`),
//!   and inside an LMS frame the cookie lives in that LMS's partition, where the frame's request finds
//!   it. A frontend on another site cannot exchange codes.
//! - **Email sign-in's `next`.** The sign-in form sets `__Host-hub_signin` (`SameSite=Lax`, so the
//!   emailed link opened from a webmail still carries it); a link leads to an app's authorization page
//!   only in the browser holding it.

use crate::support::crypto;

/// The email sign-in form's binding cookie.
pub const SIGN_IN_COOKIE: &str = "__Host-hub_signin";
/// A login code's cookie outlives the code (60 s) a little, for a slow frontend.
const LOGIN_TTL_SECS: i64 = 120;
/// A sign-in link lives 15 minutes; its binding a little longer.
const SIGN_IN_TTL_SECS: i64 = 20 * 60;

/// A binding: the cookie to set, and the digest to store with the flow's code.
pub struct Binding {
    pub set_cookie: String,
    pub digest: String,
}

/// The cookie that binds the login code `code` to its browser: one of 256 names (two tool frames on
/// one page rarely share one; the 120 s lifetime bounds how many pile up).
pub fn login_cookie_name(code: &str) -> String {
    format!("__Host-hub_login_{}", &crypto::sha256_hex(code.as_bytes())[..2])
}

/// A new binding for the one-time login code `code`.
pub fn for_login(code: &str) -> Binding {
    let secret = crypto::random_token(32);
    Binding { set_cookie: login_cookie(code, &secret, LOGIN_TTL_SECS), digest: digest(&secret) }
}

/// The `Set-Cookie` that removes a login code's binding once the code is exchanged.
pub fn clear_login(code: &str) -> String {
    login_cookie(code, "", 0)
}

fn login_cookie(code: &str, value: &str, max_age: i64) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=None; Partitioned",
        login_cookie_name(code)
    )
}

/// The sign-in form's binding: the browser's existing secret when it has one (a second request for a
/// link keeps the first link working there too), else a new one; the cookie is set again either way.
pub fn for_sign_in(existing: Option<&str>) -> Binding {
    let secret = existing
        .filter(|s| s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map_or_else(|| crypto::random_token(32), str::to_string);
    Binding {
        set_cookie: format!(
            "{SIGN_IN_COOKIE}={secret}; Path=/; Max-Age={SIGN_IN_TTL_SECS}; HttpOnly; Secure; SameSite=Lax"
        ),
        digest: digest(&secret),
    }
}

/// The digest under which a browser's secret is stored.
pub fn digest(secret: &str) -> String {
    crypto::sha256_hex(secret.as_bytes())
}

/// Whether the browser holding `secret` is the one whose digest was stored.
pub fn same_browser(secret: Option<&str>, stored: Option<&str>) -> bool {
    match (secret, stored) {
        (Some(secret), Some(stored)) => crypto::constant_time_eq(digest(secret).as_bytes(), stored.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
    }

    #[test]
    fn a_login_binding_matches_its_own_browser_only() {
        let binding = for_login("code-1");
        assert!(binding.set_cookie.starts_with(&format!("{}=", login_cookie_name("code-1"))));
        assert!(binding.set_cookie.contains("Secure") && binding.set_cookie.contains("Partitioned"));
        let secret = value(&binding.set_cookie);
        assert!(same_browser(Some(&secret), Some(&binding.digest)));
        assert!(!same_browser(Some("another"), Some(&binding.digest)));
        assert!(!same_browser(None, Some(&binding.digest)));
        assert!(!same_browser(Some(&secret), None));
        assert!(clear_login("code-1").contains("Max-Age=0"));
    }

    #[test]
    fn the_sign_in_binding_keeps_a_browsers_secret_and_replaces_a_malformed_one() {
        let first = for_sign_in(None);
        assert!(first.set_cookie.contains("SameSite=Lax"), "a link opened from a webmail still carries it");
        let again = for_sign_in(Some(&value(&first.set_cookie)));
        assert_eq!(again.digest, first.digest);
        assert_ne!(for_sign_in(Some("short; Domain=evil")).digest, digest("short; Domain=evil"));
    }
}
