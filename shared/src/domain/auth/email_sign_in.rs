//! Passwordless sign-in by email (DESIGN.md §3a): a single-use link, valid 15 minutes, sent only to
//! an address that has an account or a pending observer invitation.
//!
//! `start` answers the same whatever the address (no account enumeration): it only counts the
//! request against its limits and queues the email; the worker decides whether there is anything
//! to send. The link opens a page whose button POSTs the code, so mail scanners that follow links
//! do not use it up.
//!
//! The link is our own proof of the mailbox: it opens only an account whose address is *proven*
//! (DESIGN.md §3a), or creates one for a pending invitation; never one whose address a provider
//! merely asserted. Where it leads afterwards (`next`) is limited to pages that show what they do
//! before they act, and a page that acts for a third party (an app's authorization request) only in
//! the browser that asked for the link: otherwise anyone could have the hub mail a genuine link that
//! ends on the consent page of an app they registered.

use serde_json::json;

use super::sessions::{TokenPair, start_session};
use super::{Role, User, email_key};
use crate::runtime::email::jobs::{self, EmailJob};
use crate::runtime::email::{self, templates};
use crate::runtime::events::{self, DomainEvent};
use crate::runtime::ratelimit::{self, Rule};
use crate::store::WriteError;
use crate::store::codes::CodeGrant;
use crate::{ApiError, Context, support::crypto};

/// The purpose of sign-in codes (a code is accepted only by its own flow).
pub const PURPOSE: &str = "email_sign_in";
/// How long a link works.
pub const CODE_TTL_SECS: i64 = 15 * 60;
/// The provider of accounts created by email (observers who have no school account).
pub const PROVIDER: &str = "email";

/// Sign-in emails per source address, and per destination address (so nobody floods a mailbox).
const START_PER_IP: Rule = Rule { name: "email-start-ip", limit: 10, window_secs: 600 };
const START_PER_ADDRESS: Rule = Rule { name: "email-start-address", limit: 5, window_secs: 3600 };
/// Wrong or used codes per source address before it must wait.
pub const CODE_FAILURES: Rule = Rule { name: "email-code-failures", limit: 20, window_secs: 600 };

/// Checks an address well enough to send to it: ASCII only (an international domain in its punycode
/// form), one `@`, a dotted domain, no spaces, control characters or list punctuation, SES's length
/// limits. ASCII matters: accounts are matched by [`super::email_key`], which folds look-alikes
/// (`ß`, full-width letters) onto plain letters, so a non-ASCII address could name someone else's
/// account while mail goes to another mailbox.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    let Some((local, domain)) = e.rsplit_once('@') else { return false };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && e.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'(' | b')' | b';' | b'"' | b'\\'))
}

/// Pages a sign-in link may lead to: each shows what it does before it acts.
const NEXT_PAGES: [&str; 2] = ["/observers/accept", OAUTH_AUTHORIZE];
/// The one that acts for a third party (an app asking for access): only in the browser that asked.
const OAUTH_AUTHORIZE: &str = "/api/oauth/authorize";

/// A page of ours a sign-in link may go to: one of [`NEXT_PAGES`] (with its query), no `//host`
/// (an open redirect), short, no control characters.
pub fn valid_next(next: &str) -> bool {
    let path = next.split(['?', '#']).next().unwrap_or_default();
    NEXT_PAGES.contains(&path) && next.len() <= 2048 && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// Whether `next` leads where only the browser that asked for the link may go.
fn browser_bound(next: &str) -> bool {
    next.split(['?', '#']).next() == Some(OAUTH_AUTHORIZE)
}

/// `POST /api/auth/email/start` and the sign-in page: counts and queues; answers nothing about the
/// address. `browser`: the digest of the asking browser's sign-in binding (the sign-in form sets it).
pub async fn start(
    ctx: &Context,
    email: &str,
    next: Option<&str>,
    browser: Option<&str>,
    client_ip: &str,
) -> Result<(), ApiError> {
    if !valid_email(email) {
        return Err(ApiError::bad_request("invalid_email", "Enter a valid email address"));
    }
    if next.is_some_and(|n| !valid_next(n) || (browser_bound(n) && browser.is_none())) {
        return Err(ApiError::bad_request(
            "invalid_next",
            "next must be the invitation page, or an app's authorization page when asked from the sign-in page",
        ));
    }
    ratelimit::check(ctx, START_PER_IP, client_ip).await?;
    ratelimit::check(ctx, START_PER_ADDRESS, &crypto::sha256_hex(email_key(email).as_bytes())).await?;
    let job = EmailJob::SignIn {
        email: email.trim().to_string(),
        next: next.map(str::to_string),
        browser: browser.map(str::to_string),
    };
    jobs::enqueue(ctx, &job).await
}

/// Worker: sends a sign-in link when the address is an account's proven address or has a pending
/// invitation, to the address as the account (or the invitation) has it.
pub async fn send_link(ctx: &Context, email: &str, next: Option<&str>, browser: Option<&str>) -> Result<(), ApiError> {
    let store = ctx.store();
    let now = ctx.clock.now();
    let (user_id, to) = match account_of(ctx, email).await?.and_then(|u| Some((u.id, u.email?))) {
        Some(known) => known,
        None => match pending_invitation_address(ctx, email, now).await? {
            Some(invited) => (String::new(), invited),
            None => {
                tracing::info!("sign-in link not sent: no account or invitation for the address");
                return Ok(());
            }
        },
    };
    let code = crypto::random_token(32);
    let grant = CodeGrant {
        user_id,
        purpose: PURPOSE.into(),
        expires_at: now + CODE_TTL_SECS,
        email: Some(to.clone()),
        next: next.map(str::to_string),
        browser: browser.map(str::to_string),
    };
    store.put_code(&code, &grant).await?;
    let link = format!("{}/auth/sign-in/confirm?code={code}", public_base_url(ctx)?);
    email::send(ctx, &templates::sign_in(&to, &link, CODE_TTL_SECS / 60)).await.map_err(ApiError::unavailable)?;
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
/// `browser`: the confirming browser's sign-in binding secret, which a browser-bound `next` needs.
pub async fn verify(ctx: &Context, code: &str, client_ip: &str, browser: Option<&str>) -> Result<SignedIn, ApiError> {
    ratelimit::refuse_if_spent(ctx, CODE_FAILURES, client_ip).await?;
    let invalid = || ApiError::bad_request("invalid_code", "This sign-in link is invalid, expired or already used");
    let grant = match code.len() {
        1..=128 => ctx.store().consume_code(code, PURPOSE, None).await?,
        _ => None,
    };
    let now = ctx.clock.now();
    let Some(grant) = grant.filter(|g| g.expires_at > now) else {
        return Err(ratelimit::count_failure(ctx, CODE_FAILURES, client_ip, invalid()).await);
    };
    let email = grant.email.clone().unwrap_or_default();
    let user = match grant.user_id.as_str() {
        // No account when the link was sent: an invited observer's first sign-in creates one (or, if
        // one was made meanwhile for this address, signs into it: the link went to that mailbox).
        "" if pending_invitation_address(ctx, &email, now).await?.is_none() => return Err(invalid()),
        "" => match create_observer(ctx, &email).await? {
            Some(user) => user,
            None => account_of(ctx, &email).await?.ok_or_else(invalid)?,
        },
        id => ctx.store().get_user(id).await?.ok_or_else(invalid)?,
    };
    // The account's address changed since the link was sent: the link proves nothing about it.
    if !user.has_proven(&email) {
        return Err(invalid());
    }
    let tokens = start_session(ctx, &user).await?;
    tracing::info!(user_id = user.id, "signed in by email");
    let next = grant.next.filter(|n| {
        valid_next(n) && (!browser_bound(n) || super::login_binding::same_browser(browser, grant.browser.as_deref()))
    });
    Ok(SignedIn { user, tokens, next })
}

/// Creates the account of someone who proved they own `email` (the address is proven) and has
/// none: an observer of no organization. It has no external identity to look it up by (the address is the only key, and it
/// moves with the account), so nobody who later receives this address inherits the account.
/// `None`: the address belongs to an account already.
pub async fn create_observer(ctx: &Context, email: &str) -> Result<Option<User>, ApiError> {
    let now = ctx.clock.now();
    let user = User {
        id: crypto::new_id(),
        email: Some(email.trim().to_string()),
        email_proven: true,
        email_indexed: true,
        given_name: None,
        family_name: None,
        role: Role::Observer,
        org_id: None,
        created_at: now,
        updated_at: now,
    };
    let registered = DomainEvent::new(
        events::USER_REGISTERED,
        None,
        json!({ "user_id": user.id, "email": user.email, "role": user.role, "provider": PROVIDER }),
        now,
    );
    match ctx.store().create_user(&user, PROVIDER, &user.id, &registered).await {
        Ok(()) => {
            tracing::info!(user_id = user.id, provider = PROVIDER, "user created");
            events::publish(ctx, &[registered]).await;
            Ok(Some(user))
        }
        Err(WriteError::Conflict) => Ok(None),
        Err(WriteError::Store(e)) => Err(e.into()),
    }
}

/// The account whose proven address this is, if any (never one whose address was only asserted).
pub async fn account_of(ctx: &Context, email: &str) -> Result<Option<User>, ApiError> {
    let store = ctx.store();
    let Some(id) = store.user_id_by_proven_email(email).await? else { return Ok(None) };
    // Reading it migrates an account of before the rules: it may lose the key on the way.
    Ok(store.get_user(&id).await?.filter(|u| u.has_proven(email)))
}

/// The address, as the student typed it, of a pending invitation to `email` (if there is one).
async fn pending_invitation_address(ctx: &Context, email: &str, now: i64) -> Result<Option<String>, ApiError> {
    Ok(ctx.store().invitations_for_email(email).await?.into_iter().find(|i| i.valid_until > now).map(|i| i.email))
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
    fn next_is_a_page_that_shows_before_it_acts() {
        assert!(valid_next("/api/oauth/authorize?client_id=x"));
        assert!(valid_next("/observers/accept?code=abc"));
        assert!(browser_bound("/api/oauth/authorize?client_id=x") && !browser_bound("/observers/accept?code=a"));
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/observers/accept?\nb",
            "/api/observers/invitations",
            "/auth/sign-in/confirm?code=x",
            "/api/oauth/authorize/../token",
        ] {
            assert!(!valid_next(bad), "{bad:?}");
        }
    }
}
