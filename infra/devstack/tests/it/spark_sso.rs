//! Spark SSO end to end: Spark's own Node code signs, the browser is redirected with a one-time
//! code, the frontend exchanges it for tokens; and every way it can go wrong.

use std::collections::HashMap;
use std::sync::Arc;

use hub::domain::auth::Role;
use hub::domain::auth::provisioning::provision_user;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::RequestExt;
use serde_json::{Value, json};

use crate::common::{TestStack, error_code, now, profile};

const CALLBACK: &str = "http://localhost:5173/auth/callback";

fn no_redirects() -> reqwest::Client {
    no_redirects_from(std::net::Ipv4Addr::LOCALHOST)
}

/// A browser at another loopback address: its own client IP, so its own rate-limit budget.
pub(crate) fn no_redirects_from(ip: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::V4(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A token signed by Spark's own integration code (Node, `jsonwebtoken`), unchanged.
pub(crate) fn node_token(secret: &str, user: &str, email: &str) -> String {
    let script = devstack::repo_root().join("infra/partner-node/sso-token.js");
    let out = std::process::Command::new("node")
        .arg(script)
        .args([user, email, "Ada", "Lovelace"])
        .env("OPTIO_SHARED_SECRET", secret)
        .output()
        .expect("node is installed (make test runs npm ci for the partner code)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Follows `/spark/sso?token=` once and returns where it sends the browser.
pub(crate) async fn sso(t: &TestStack, token: &str) -> reqwest::Response {
    sso_from(t, token, &no_redirects()).await
}

pub(crate) async fn sso_from(t: &TestStack, token: &str, browser: &reqwest::Client) -> reqwest::Response {
    let mut url = url::Url::parse(&t.url("/spark/sso")).unwrap();
    url.query_pairs_mut().append_pair("token", token);
    browser.get(url).send().await.unwrap()
}

pub(crate) fn callback_param(r: &reqwest::Response, name: &str) -> Option<String> {
    assert_eq!(r.status(), 302, "SSO answers with a redirect");
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(CALLBACK), "{location}");
    url::Url::parse(location).unwrap().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The code of a signed-in SSO redirect, and the cookie (`name=value`) that binds it to the browser.
pub(crate) fn signed_in_code(r: &reqwest::Response) -> (String, String) {
    let code = callback_param(r, "code").expect("a code");
    (code, devstack::set_cookie(r.headers(), "__Host-hub_login_").expect("the code's browser binding"))
}

/// `POST /spark/token` from the browser holding `binding`.
async fn exchange(t: &TestStack, code: &str, binding: &str) -> reqwest::Response {
    exchange_from(t, &t.http, code, binding).await
}

/// `POST /spark/token` from `browser` (its own address), with `binding`.
pub(crate) async fn exchange_from(
    t: &TestStack,
    browser: &reqwest::Client,
    code: &str,
    binding: &str,
) -> reqwest::Response {
    browser.post(t.url("/spark/token")).header("cookie", binding).json(&json!({ "code": code })).send().await.unwrap()
}

fn claims(sub: &str, email: &str, iat: i64, exp: i64) -> Value {
    json!({"sub": sub, "email": email, "given_name": "Ada", "role": "student", "iat": iat, "exp": exp})
}

fn sign(secret: &str, alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test]
async fn sparks_own_token_becomes_a_code_then_tokens_then_a_session() {
    let t = TestStack::new("sparksso").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let r = sso(&t, &node_token(&secret, "spark-1001", "ada@school.example")).await;
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (code, binding) = signed_in_code(&r);

    let r = exchange(&t, &code, &binding).await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("__Host-hub_access=") && c.contains("HttpOnly")), "{cookies:?}");
    let tokens: Value = r.json().await.unwrap();
    let me: Value = t
        .http
        .get(t.url("/api/auth/me"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@school.example");
    assert_eq!(me["given_name"], "Ada");
    assert_eq!(me["family_name"], "Lovelace");
    assert_eq!(me["role"], "student");
    // The Spark identity is linked to that user.
    let linked = t.ctx.store().user_id_by_identity("spark", "spark-1001").await.unwrap();
    assert_eq!(linked.as_deref(), me["id"].as_str());
}

#[tokio::test]
async fn an_existing_account_is_merged_by_email() {
    let t = TestStack::new("sparkmerge").await;
    // An account of Spark's own organization (`demo` locally); other organizations' are never linked.
    let mut clever = profile("clever", "c-77", Some("Bea@School.example"), Role::Student);
    clever.org_id = Some("demo".into());
    let (existing, _) = provision_user(&t.ctx, &clever).await.unwrap();
    let (_, secret) = t.key("SparkSsoSecret").await;
    let (code, binding) = signed_in_code(&sso(&t, &node_token(&secret, "spark-77", "bea@school.example")).await);
    let tokens: Value = exchange(&t, &code, &binding).await.json().await.unwrap();
    let claims =
        hub::domain::auth::tokens::verify_access(&t.ctx, tokens["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(claims.sub, existing.id, "the Spark login lands in the existing account");
}

#[tokio::test]
async fn a_code_works_once_and_not_after_a_minute() {
    let t = TestStack::new("sparkcode").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let (code, binding) = signed_in_code(&sso(&t, &node_token(&secret, "spark-5", "cy@school.example")).await);
    let first: Value = exchange(&t, &code, &binding).await.json().await.unwrap();
    // Used again: refused, and the session the first use opened is untouched.
    assert_eq!(error_code(exchange(&t, &code, &binding).await).await, (400, "invalid_code".into()));
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": first["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A fresh code, exchanged 61 seconds later (by an instance whose clock has moved on). The new
    // token must differ from the first (Spark signs a new one per click; `iat` moves each second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, binding) = signed_in_code(&sso(&t, &node_token(&secret, "spark-5", "cy@school.example")).await);
    let later = t.context_for("spark-token", &[]);
    later.clock.advance(61);
    let req = http::Request::builder()
        .method("POST")
        .header("content-type", "application/json")
        .header("cookie", &binding)
        .body(lambda_http::Body::from(json!({ "code": code }).to_string()))
        .unwrap();
    let err = hub::api::spark::token(Arc::new(later), req).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (400, "code_expired"));
    // And it is gone: not usable even in time.
    assert_eq!(error_code(exchange(&t, &code, &binding).await).await, (400, "invalid_code".into()));

    // Garbage codes and bodies.
    assert_eq!(error_code(exchange(&t, "made-up", &binding).await).await, (400, "invalid_code".into()));
    let r =
        t.http.post(t.url("/spark/token")).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_json".into()));
    let r = t.http.post(t.url("/spark/token")).json(&json!({"code": "x", "extra": 1})).send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_json".into()));
}

#[tokio::test]
async fn bad_tokens_are_sent_back_with_an_error_and_create_nothing() {
    let t = TestStack::new("sparkbad").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let n = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong secret",
            sign("not-the-secret-not-the-secret-00", Algorithm::HS256, &claims("b1", "b1@x.example", n, n + 300)),
            "invalid_token",
        ),
        ("HS512", sign(&secret, Algorithm::HS512, &claims("b2", "b2@x.example", n, n + 300)), "invalid_token"),
        ("expired", sign(&secret, Algorithm::HS256, &claims("b3", "b3@x.example", n - 900, n - 300)), "token_expired"),
        (
            "exp an hour ahead",
            sign(&secret, Algorithm::HS256, &claims("b4", "b4@x.example", n, n + 3600)),
            "invalid_token",
        ),
        (
            "iat after exp",
            sign(&secret, Algorithm::HS256, &claims("b5", "b5@x.example", n + 400, n + 300)),
            "invalid_token",
        ),
        ("no exp", sign(&secret, Algorithm::HS256, &json!({"sub": "b6", "email": "b6@x.example"})), "invalid_token"),
        ("no sub", sign(&secret, Algorithm::HS256, &json!({"email": "b7@x.example", "exp": n + 300})), "invalid_token"),
        ("no email", sign(&secret, Algorithm::HS256, &json!({"sub": "b8", "exp": n + 300})), "invalid_token"),
        ("bad email", sign(&secret, Algorithm::HS256, &claims("b9", "not-an-email", n, n + 300)), "invalid_identity"),
        (
            "alg none",
            {
                use base64::Engine;
                let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                format!(
                    "{}.{}.",
                    e.encode(r#"{"alg":"none","typ":"JWT"}"#),
                    e.encode(claims("b10", "b10@x.example", n, n + 300).to_string())
                )
            },
            "invalid_token",
        ),
        ("garbage", "not.a.jwt".to_string(), "invalid_token"),
    ];
    for (i, (case, token, expected)) in cases.into_iter().enumerate() {
        let r = sso_from(&t, &token, &no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 10 + i as u8))).await;
        assert_eq!(callback_param(&r, "error").as_deref(), Some(expected), "{case}");
        assert_eq!(callback_param(&r, "code"), None, "{case}");
    }
    for sub in ["b1", "b2", "b3", "b4", "b5", "b6", "b9", "b10"] {
        assert_eq!(t.ctx.store().user_id_by_identity("spark", sub).await.unwrap(), None, "{sub} was created");
        let email = format!("{sub}@x.example");
        assert_eq!(t.ctx.store().user_id_by_org_email("demo", &email).await.unwrap(), None, "{email} was taken");
    }
    // No token at all is a plain JSON 400.
    let r = no_redirects().get(t.url("/spark/sso")).send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "missing_token".into()));
}

#[tokio::test]
async fn a_token_logs_in_once() {
    let t = TestStack::new("sparkreplay").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let token = node_token(&secret, "spark-9", "di@school.example");
    assert!(callback_param(&sso(&t, &token).await, "code").is_some());
    assert_eq!(callback_param(&sso(&t, &token).await, "error").as_deref(), Some("token_replayed"));
}

#[tokio::test]
async fn a_class_behind_one_address_signs_in_while_garbage_from_another_is_slowed() {
    let t = TestStack::new("sparkrate").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    // One address sends garbage: after 10 invalid tokens a minute it is answered 429.
    let noisy = no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 2));
    for _ in 0..10 {
        assert_eq!(callback_param(&sso_from(&t, "not.a.jwt", &noisy).await, "error").as_deref(), Some("invalid_token"));
    }
    assert_eq!(callback_param(&sso_from(&t, "not.a.jwt", &noisy).await, "error").as_deref(), Some("rate_limited"));
    // 30 students of one class, all behind the school's one address, sign in within the minute:
    // every one gets a code and exchanges it.
    let school = no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 3));
    let n = now();
    for i in 0..30 {
        let token = sign(
            &secret,
            Algorithm::HS256,
            &claims(&format!("kid-{i}"), &format!("kid{i}@school.example"), n, n + 300),
        );
        let (code, binding) = signed_in_code(&sso_from(&t, &token, &school).await);
        assert_eq!(exchange_from(&t, &school, &code, &binding).await.status(), 200, "student {i}");
    }
    // A genuine student behind the noisy address is not locked out by its garbage.
    let token = sign(&secret, Algorithm::HS256, &claims("kid-noisy", "noisy@school.example", n, n + 300));
    assert!(callback_param(&sso_from(&t, &token, &noisy).await, "code").is_some());
    // Valid tokens are limited per Spark user: a runaway loop for one student is cut off.
    for i in 0..10 {
        let token = sign(&secret, Algorithm::HS256, &claims("kid-loop", "loop@school.example", n - i, n + 300));
        assert!(callback_param(&sso_from(&t, &token, &school).await, "code").is_some(), "login {i}");
    }
    let token = sign(&secret, Algorithm::HS256, &claims("kid-loop", "loop@school.example", n - 20, n + 300));
    assert_eq!(callback_param(&sso_from(&t, &token, &school).await, "error").as_deref(), Some("rate_limited"));
    // Guessing codes is limited per address too.
    for _ in 0..20 {
        let r = noisy.post(t.url("/spark/token")).json(&json!({"code": "guess"})).send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "invalid_code".into()));
    }
    let r = noisy.post(t.url("/spark/token")).json(&json!({"code": "guess"})).send().await.unwrap();
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
}

#[tokio::test]
async fn without_a_frontend_sso_answers_json() {
    let t = TestStack::new("sparkjson").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let ctx = Arc::new(t.context_for("spark-sso", &[("FRONTEND_URL", "")]));
    let request = |token: &str| {
        http::Request::builder()
            .body(lambda_http::Body::Empty)
            .unwrap()
            .with_query_string_parameters(HashMap::from([("token".to_string(), token.to_string())]))
    };
    let ok =
        hub::api::spark::sso(ctx.clone(), request(&node_token(&secret, "spark-j", "jo@school.example"))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = serde_json::from_slice(ok.body()).unwrap();
    assert!(body["code"].is_string());
    assert_eq!(body["expires_in"], 60);
    let err = hub::api::spark::sso(ctx, request("not.a.jwt")).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (401, "invalid_token"));
}

#[tokio::test]
async fn the_shared_secret_rotates_without_breaking_logins_in_flight() {
    let t = TestStack::new("sparkrotate").await;
    let (_, old) = t.key("SparkSsoSecret").await;
    let sm = aws_sdk_secretsmanager::Client::new(&t.sdk);
    let new = "n".repeat(64);
    sm.put_secret_value().secret_id(&t.stack.refs["SparkSsoSecret"]).secret_string(&new).send().await.unwrap();
    let ctx = Arc::new(t.context_for("spark-sso", &[("FRONTEND_URL", "")]));
    for (secret, user) in [(&old, "r-old"), (&new, "r-new")] {
        let token = node_token(secret, user, &format!("{user}@school.example"));
        let login = hub::integrations::spark::sso::verify(&ctx, &token).await.unwrap();
        assert_eq!(login.profile.external_id, user);
    }
    sm.put_secret_value()
        .secret_id(&t.stack.refs["SparkSsoSecret"])
        .secret_string("m".repeat(64))
        .send()
        .await
        .unwrap();
    let fresh = t.context_for("spark-sso", &[]);
    let err = hub::integrations::spark::sso::verify(&fresh, &node_token(&old, "r-old", "r-old@school.example"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid_token");
}

#[tokio::test]
async fn the_partner_cli_makes_links_that_log_in() {
    let t = TestStack::new("sparkcli").await;
    let (_, secret) = t.key("SparkSsoSecret").await;
    let cli = crate::binaries::binary_path("spark-cli");
    assert!(cli.exists(), "run `make test`");
    let out = std::process::Command::new(cli)
        .args([
            "sso-link",
            "--sub",
            "cli-1",
            "--email",
            "eve@school.example",
            "--role",
            "teacher",
            "--base-url",
            &t.base,
        ])
        .env("SPARK_SSO_SECRET", &secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap();
    let r = no_redirects().get(link.trim()).send().await.unwrap();
    let (code, binding) = signed_in_code(&r);
    let tokens: Value = exchange(&t, &code, &binding).await.json().await.unwrap();
    let claims =
        hub::domain::auth::tokens::verify_access(&t.ctx, tokens["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(claims.role, Role::Teacher);
}
