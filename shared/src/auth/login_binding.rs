//! One-time login codes bound to the browser that made the login (DESIGN.md §3a).
//!
//! Spark SSO and LTI launches end with a one-time code handed to the frontend
//! (`/auth/callback?code=…`), which exchanges it for a session. Without a binding, a code from an
//! attacker's own login, sent to a victim within its 60 s, would sign the victim into the attacker's
//! account (login CSRF) and the victim's work would land there. So the redirect that carries the code
//! also sets a random `__Host-hub_login` cookie, the code is stored with the cookie's SHA-256, and the
//! exchange consumes the code only together with that cookie (one conditional delete).
//!
//! The cookie is `SameSite=None; Partitioned`: the frontend's exchange is a credentialed `fetch` to
//! the hub from the frontend's page, which must be on the hub's *site* (for example `app.school.org`
//! and `hub.school.org`), and inside an LMS frame the cookie lives in that LMS's partition, where the
//! frontend's request in the same frame finds it. A frontend on another site cannot exchange codes.

use crate::crypto;

/// The cookie that carries the browser's secret.
pub const COOKIE: &str = "__Host-hub_login";
/// It outlives the code (60 s) a little, for a slow frontend.
const TTL_SECS: i64 = 120;

/// A new login's binding: the cookie to set, and the digest to store with its code.
pub struct Binding {
    pub set_cookie: String,
    pub digest: String,
}

pub fn new() -> Binding {
    let secret = crypto::random_token(32);
    Binding {
        set_cookie: format!(
            "{COOKIE}={secret}; Path=/; Max-Age={TTL_SECS}; HttpOnly; Secure; SameSite=None; Partitioned"
        ),
        digest: digest(&secret),
    }
}

/// The `Set-Cookie` that removes the binding once its code is exchanged.
pub fn clear() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None; Partitioned")
}

/// The digest under which a browser's secret (this cookie's, or another per-browser secret such as
/// the CSRF cookie) is stored.
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

    #[test]
    fn a_binding_matches_its_own_browser_only() {
        let binding = new();
        let secret = binding.set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        assert!(binding.set_cookie.starts_with("__Host-hub_login=") && binding.set_cookie.contains("Secure"));
        assert!(same_browser(Some(&secret), Some(&binding.digest)));
        assert!(!same_browser(Some("another"), Some(&binding.digest)));
        assert!(!same_browser(None, Some(&binding.digest)));
        assert!(!same_browser(Some(&secret), None));
    }
}
