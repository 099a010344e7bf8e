//! The hub's HTML pages in a real headless Chromium (DESIGN.md §3b): the observer's walk from the
//! invitation email to the portfolio, and email sign-in from the form to a session. Each page is
//! photographed into `target/test-artifacts/screenshots/<test>/`.

use serde_json::json;

use crate::browser::Browser;
use crate::observers::Family;

#[tokio::test]
async fn an_invited_parent_walks_from_the_email_to_the_portfolio() {
    let f = Family::new("page-walk").await;
    let (_, mail) = f.invite(&f.address("mum"), true, true).await;
    let browser = Browser::start("observer_walk").await;

    browser.goto(&mail.link(&f.t.base, "/observers/accept")).await;
    browser.screenshot("invitation").await;
    assert_eq!(browser.text("h1").await, "Ada Lovelace invites you to follow their learning");
    assert!(browser.text(".note").await.contains("Look at my <volcano> & more!"), "the note is shown as text");
    browser.click("button[type=submit]").await;
    browser.wait_for_text("[role=status]", "You now follow Ada Lovelace's learning as their grandparent").await;
    browser.screenshot("accepted").await;

    // Signed in by the accept page's cookies: the API answers the browser as the observer.
    let me = browser.open_json(&f.t.url("/api/auth/me")).await;
    assert_eq!((me["role"].as_str(), me["email"].as_str()), (Some("observer"), Some(f.address("mum").as_str())));
    let portfolio = browser.open_json(&f.t.url(&format!("/api/observers/students/{}/portfolio", f.student.id))).await;
    browser.screenshot("portfolio").await;
    assert_eq!(portfolio["quests"][0]["title"], "Volcanoes");
    assert_eq!(portfolio["quests"][0]["tasks"][0]["evidence"][0]["text"], "My volcano erupts!");

    // The link again, in the same browser: used.
    browser.goto(&mail.link(&f.t.base, "/observers/accept")).await;
    browser.wait_for_text("[role=alert]", "already accepted").await;
    browser.screenshot("used").await;
    assert!(browser.text("[role=alert]").await.contains("already accepted"));
}

#[tokio::test]
async fn email_sign_in_pages_lead_from_the_form_to_a_session() {
    let f = Family::new("page-sign-in").await;
    let browser = Browser::start("email_sign_in").await;

    browser.goto(&f.t.url("/auth/sign-in")).await;
    browser.screenshot("sign-in").await;
    browser.fill("#email", "not-an-address@").await;
    // The field's own validation would stop the browser; the server's answer is what is tested.
    browser.client.execute("document.querySelector('form').noValidate = true", vec![]).await.unwrap();
    browser.click("button[type=submit]").await;
    browser.wait_for_text("#email-error", "Enter a valid email address").await;
    browser.screenshot("invalid-address").await;
    assert_eq!(browser.find("#email").await.prop("value").await.unwrap().as_deref(), Some("not-an-address@"));
    browser.goto(&f.t.url("/auth/sign-in")).await;
    browser.fill("#email", &f.address("ada")).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("h1", "Check your email").await;
    browser.screenshot("check-your-email").await;

    let mail = f.t.deliver_emails_to(&f.address("ada")).await.pop().expect("a sign-in email");
    browser.goto(&mail.link(&f.t.base, "/auth/sign-in/confirm")).await;
    browser.screenshot("confirm").await;
    let masked = f.address("ada").replacen("ada@", "a***@", 1);
    assert_eq!(browser.text("#account").await, masked, "the page says which account the link opens");
    browser.click("button[type=submit]").await;
    browser.wait_for_text("h1", "You are signed in").await;
    browser.screenshot("signed-in").await;
    let me = browser.open_json(&f.t.url("/api/auth/me")).await;
    assert_eq!(me["id"], f.student.id.as_str());
}

#[tokio::test]
async fn pages_are_never_framed_cached_or_posted_from_elsewhere() {
    let f = Family::new("page-headers").await;
    let page = f.t.http.get(f.t.url("/auth/sign-in")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("default-src 'none'")
            && csp.contains("form-action 'self'")
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["set-cookie"].to_str().unwrap().starts_with("__Host-hub_csrf="));
    assert!(h["set-cookie"].to_str().unwrap().contains("SameSite=Strict"));

    // A form posted without the matching cookie (from another site) does nothing.
    let forged = post_form(&f, "/auth/sign-in", &[("email", &f.address("ada")), ("csrf", &"x".repeat(43))]).await;
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("data-error=\"csrf_failed\""));
    let forged = post_form(&f, "/observers/accept", &[("code", "abc")]).await;
    assert_eq!(forged.status(), 403);
    assert!(f.t.deliver_emails_to(&f.address("ada")).await.is_empty(), "no email for a forged form");
    // JSON to a form endpoint, and an oversized form.
    let wrong = f.t.http.post(f.t.url("/auth/sign-in")).json(&json!({"email": "a@b.example"})).send().await.unwrap();
    assert_eq!(wrong.status(), 415);
    let big = post_form(&f, "/auth/sign-in", &[("email", &"a".repeat(9000))]).await;
    assert_eq!(big.status(), 413);
    // A confirm link without its code, an unknown invitation.
    assert_eq!(f.t.http.get(f.t.url("/auth/sign-in/confirm")).send().await.unwrap().status(), 400);
    assert_eq!(f.t.http.get(f.t.url("/auth/sign-in/confirm?code=unknown")).send().await.unwrap().status(), 400);
    assert_eq!(f.t.http.get(f.t.url("/observers/accept?code=nope")).send().await.unwrap().status(), 404);
}

/// A form POST as a browser sends it, without the page's CSRF cookie.
async fn post_form(f: &Family, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    f.t.http
        .post(f.t.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_partner_app_sends_the_user_through_sign_in_and_consent_and_gets_a_code() {
    use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, Scope, TokenResponse};

    use crate::oauth::{Partner, http_client, query};

    let p = Partner::new("page-oauth").await;
    // The app's callback: a local server answering every request with a page.
    let (callback, _) = crate::common::server(|_| (200, None, b"<p>back at the app</p>".to_vec())).await;
    let redirect_uri = format!("http://{callback}/callback");
    let app = p
        .register(json!({"name": "Reading Buddy", "redirect_uris": [redirect_uri], "allowed_scopes": ["profile", "progress:read"]}))
        .await;
    let (student, _) = p.user("lee@page-oauth.example", hub::domain::auth::Role::Student, None).await;
    let mut client = p.client(app["client_id"].as_str().unwrap(), app["client_secret"].as_str());
    client = client.set_redirect_uri(oauth2::RedirectUrl::new(redirect_uri.clone()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("progress:read".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::start("oauth_consent").await;
    // No session: the authorization request leads to the email sign-in, and back.
    browser.goto(url.as_str()).await;
    browser.wait_for_path("/auth/sign-in").await;
    browser.screenshot("sign-in").await;
    browser.fill("#email", student.email.as_deref().unwrap()).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("h1", "Check your email").await;
    let mail = p.t.deliver_emails_to(student.email.as_deref().unwrap()).await.pop().expect("a sign-in email");
    browser.goto(&mail.link(&p.t.base, "/auth/sign-in/confirm")).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_path("/api/oauth/authorize").await;
    browser.screenshot("consent").await;
    assert_eq!(browser.text("#app").await, "Reading Buddy");
    let scopes = browser.text("#scopes").await;
    assert!(
        scopes.contains("See your name, email address and role") && scopes.contains("See your quests, XP and badges")
    );
    browser.click("#allow").await;

    // Back at the app with a code, the state and our issuer.
    browser.wait_for_path("/callback").await;
    let back = browser.url().await;
    browser.screenshot("back-at-the-app").await;
    assert_eq!(back.path(), "/callback");
    assert_eq!(query(&back, "state").as_deref(), Some(state.secret().as_str()));
    assert_eq!(query(&back, "iss").as_deref(), Some(p.t.base.as_str()));
    let code = query(&back, "code").expect("a code");
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    let me = p.api("/api/auth/me", tokens.access_token().secret()).await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(me["id"], student.id.as_str());
}
