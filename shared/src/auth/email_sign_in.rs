//! Passwordless sign-in by email (DESIGN.md §3a): a single-use link, valid 15 minutes, sent only to
//! an address that has an account or a pending observer invitation.
//!
//! `start` answers the same whatever the address (no account enumeration): it only counts the
//! request against its limits and queues the email; the worker decides whether there is anything
//! to send. The link opens a page whose button POSTs the code, so mail scanners that follow links
//! do not use it up.

use super::provisioning::{ExternalProfile, provision_user};
use super::sessions::{TokenPair, start_session};
use super::{Role, User, email_key};
use crate::email::jobs::{self, EmailJob};
use crate::email::{self, templates};
use crate::ratelimit::{self, Rule};
use crate::store::codes::CodeGrant;
use crate::{ApiError, Context, crypto};

/// The purpose of sign-in codes (a code is accepted only by its own flow).
pub const PURPOSE: &str = "email_sign_in";
/// How long a link works.
pub const CODE_TTL_SECS: i64 = 15 * 60;
/// The identity provider of accounts created by email (observers who have no school account).
pub const PROVIDER: &str = "email";

/// Sign-in emails per source address, and per destination address (so nobody floods a mailbox).
const START_PER_IP: Rule = Rule { name: "email-start-ip", limit: 10, window_secs: 600 };
const START_PER_ADDRESS: Rule = Rule { name: "email-start-address", limit: 5, window_secs: 3600 };
/// Wrong or used codes per source address before it must wait.
pub const CODE_FAILURES: Rule = Rule { name: "email-code-failures", limit: 20, window_secs: 600 };

/// Checks an address well enough to send to it: one `@`, no spaces or control characters, SES's
/// length limits.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    let Some((local, domain)) = e.rsplit_once('@') else { return false };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
}

/// A path of ours to go to after signing in: absolute path, not `//host` (an open redirect), short.
pub fn valid_next(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 512
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// `POST /api/auth/email/start` and the sign-in page: counts and queues; answers nothing about the address.
pub async fn start(ctx: &Context, email: &str, next: Option<&str>, client_ip: &str) -> Result<(), ApiError> {
    if !valid_email(email) {
        return Err(ApiError::bad_request("invalid_email", "Enter a valid email address"));
    }
    if next.is_some_and(|n| !valid_next(n)) {
        return Err(ApiError::bad_request("invalid_next", "next must be a path of this site"));
    }
    ratelimit::check(ctx, START_PER_IP, client_ip).await?;
    ratelimit::check(ctx, START_PER_ADDRESS, &crypto::sha256_hex(email_key(email).as_bytes())).await?;
    jobs::enqueue(ctx, &EmailJob::SignIn { email: email.trim().to_string(), next: next.map(str::to_string) }).await
}

/// Worker: sends a sign-in link when the address has an account or a pending invitation.
pub async fn send_link(ctx: &Context, email: &str, next: Option<&str>) -> Result<(), ApiError> {
    let store = ctx.store();
    let now = ctx.clock.now();
    let user_id = match store.user_id_by_email(email).await? {
        Some(id) => id,
        None if has_pending_invitation(ctx, email, now).await? => String::new(),
        None => {
            tracing::info!("sign-in link not sent: no account or invitation for the address");
            return Ok(());
        }
    };
    let code = crypto::random_token(32);
    let grant = CodeGrant {
        user_id,
        purpose: PURPOSE.into(),
        expires_at: now + CODE_TTL_SECS,
        email: Some(email.to_string()),
        next: next.map(str::to_string),
    };
    store.put_code(&code, &grant).await?;
    let link = format!("{}/auth/sign-in/confirm?code={code}", public_base_url(ctx)?);
    email::send(ctx, &templates::sign_in(email, &link, CODE_TTL_SECS / 60)).await.map_err(ApiError::unavailable)?;
    tracing::info!(user_id = grant.user_id, "sign-in link sent");
    Ok(())
}

/// What a sign-in link opened.
pub struct SignedIn {
    pub user: User,
    pub tokens: TokenPair,
    pub next: Option<String>,
}

/// `POST /api/auth/email/verify` and the confirm page: uses the code up and opens a session.
pub async fn verify(ctx: &Context, code: &str, client_ip: &str) -> Result<SignedIn, ApiError> {
    ratelimit::refuse_if_spent(ctx, CODE_FAILURES, client_ip).await?;
    let invalid = || ApiError::bad_request("invalid_code", "This sign-in link is invalid, expired or already used");
    let grant = match code.len() {
        1..=128 => ctx.store().consume_code(code, PURPOSE).await?,
        _ => None,
    };
    let now = ctx.clock.now();
    let Some(grant) = grant.filter(|g| g.expires_at > now) else {
        return Err(ratelimit::count_failure(ctx, CODE_FAILURES, client_ip, invalid()).await);
    };
    let email = grant.email.clone().unwrap_or_default();
    let user = if grant.user_id.is_empty() {
        // No account when the link was sent: an invited observer's first sign-in creates one.
        if !has_pending_invitation(ctx, &email, now).await? {
            return Err(invalid());
        }
        observer_account(ctx, &email).await?
    } else {
        let user = ctx.store().get_user(&grant.user_id).await?.ok_or_else(invalid)?;
        // The account's address changed since the link was sent: the link proves nothing about it.
        if user.email.as_deref().map(email_key) != Some(email_key(&email)) {
            return Err(invalid());
        }
        user
    };
    let tokens = start_session(ctx, &user).await?;
    tracing::info!(user_id = user.id, "signed in by email");
    Ok(SignedIn { user, tokens, next: grant.next })
}

/// The account of someone who proved they own `email` and has none: an observer of no organization.
pub async fn observer_account(ctx: &Context, email: &str) -> Result<User, ApiError> {
    let profile = ExternalProfile {
        provider: PROVIDER.into(),
        external_id: email_key(email),
        email: Some(email.trim().to_string()),
        email_verified: true,
        given_name: None,
        family_name: None,
        role: Role::Observer,
        org_id: None,
    };
    Ok(provision_user(ctx, &profile).await?.0)
}

async fn has_pending_invitation(ctx: &Context, email: &str, now: i64) -> Result<bool, ApiError> {
    Ok(ctx.store().invitations_for_email(email).await?.iter().any(|(_, _, until)| *until > now))
}

/// The public address of the hub, for links in emails.
pub fn public_base_url(ctx: &Context) -> Result<&str, ApiError> {
    ctx.config.public_base_url.as_deref().ok_or_else(|| ApiError::internal("PUBLIC_BASE_URL is not set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_before_anything_is_sent() {
        assert!(valid_email("ada@example.com"));
        assert!(valid_email(" Ada.Lovelace+hub@example.co.uk "));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@example.com\r\nBcc: x@y.z",
            "<ada@example.com>",
            "a,b@example.com",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(!valid_email(&format!("{}@example.com", "a".repeat(65))));
    }

    #[test]
    fn next_is_a_path_of_this_site() {
        assert!(valid_next("/api/oauth/authorize?client_id=x"));
        for bad in ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "/a\nb"] {
            assert!(!valid_next(bad), "{bad:?}");
        }
    }
}
