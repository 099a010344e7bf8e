//! The auth endpoints through HTTP: bearer and cookie, refresh rotation and reuse detection,
//! logout, key rotation, and every way a token can be bad.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hub::domain::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestStack, error_code, now};

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    let c = cookies.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap();
    c.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

#[tokio::test]
async fn me_accepts_bearer_and_cookie_and_returns_the_profile() {
    let t = TestStack::new("me").await;
    let (user, pair) = t.signed_in("ada@example.com", Role::Student).await;

    let r = t.http.get(t.url("/api/auth/me")).bearer_auth(&pair.access_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], user.id.as_str());
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["role"], "student");

    let r = t
        .http
        .get(t.url("/api/auth/me"))
        .header("cookie", format!("other=1; __Host-hub_access={}", pair.access_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bad_access_tokens_are_refused_with_json_errors() {
    let t = TestStack::new("badtokens").await;
    let (user, pair) = t.signed_in("bob@example.com", Role::Teacher).await;
    let me = |token: String| {
        let req = t.http.get(t.url("/api/auth/me")).bearer_auth(token);
        async move { error_code(req.send().await.unwrap()).await }
    };
    let claims = |typ: &str, iat: i64, exp: i64| {
        json!({"sub": user.id, "email": "bob@example.com", "role": "teacher", "org": null, "type": typ,
               "sid": "s", "iat": iat, "nbf": iat, "exp": exp, "jti": "j"})
    };

    // No token at all.
    let r = t.http.get(t.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await, (401, "missing_token".into()));

    // Expired (signed with the real key).
    let expired = t.forge("AccessTokenKey", &claims("access", now() - 3600, now() - 1800)).await;
    assert_eq!(me(expired).await, (401, "token_expired".into()));

    // Right key, wrong type: a refresh-typed token cannot be used as an access token.
    let wrong_type = t.forge("AccessTokenKey", &claims("refresh", now(), now() + 600)).await;
    assert_eq!(me(wrong_type).await, (401, "wrong_token_type".into()));

    // A real refresh token presented as access token: other key, refused.
    assert_eq!(me(pair.refresh_token.clone()).await, (401, "invalid_token".into()));

    // Wrong signature: payload changed to claim admin.
    let mut parts: Vec<String> = pair.access_token.split('.').map(str::to_string).collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    assert_eq!(me(parts.join(".")).await, (401, "invalid_token".into()));

    // alg: none, unsigned.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("access", now(), now() + 600).to_string());
    assert_eq!(me(format!("{header}.{body}.")).await, (401, "invalid_token".into()));

    // Signed with a key that is not ours (HS256, kid of ours).
    let (kid, _) = t.key("AccessTokenKey").await;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid);
    let foreign = jsonwebtoken::encode(
        &h,
        &claims("access", now(), now() + 600),
        &jsonwebtoken::EncodingKey::from_secret(&[7u8; 64]),
    )
    .unwrap();
    assert_eq!(me(foreign).await, (401, "invalid_token".into()));

    // Garbage and a tampered cookie.
    assert_eq!(me("not-a-jwt".into()).await, (401, "invalid_token".into()));
    let tampered = format!("{}x", pair.access_token);
    let r = t
        .http
        .get(t.url("/api/auth/me"))
        .header("cookie", format!("__Host-hub_access={tampered}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let t = TestStack::new("refresh").await;
    let (_, first) = t.signed_in("cy@example.com", Role::Student).await;
    let refresh = |token: &str| t.http.post(t.url("/api/auth/refresh")).json(&json!({ "refresh_token": token })).send();

    let r = refresh(&first.refresh_token).await.unwrap();
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    let second: Value = r.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first.refresh_token);
    assert_eq!(second["token_type"], "Bearer");
    assert_eq!(second["expires_in"], 900);
    // The pair also arrives as hardened cookies.
    let access_cookie = cookies.iter().find(|c| c.starts_with("__Host-hub_access=")).unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=900"] {
        assert!(access_cookie.contains(attr), "{access_cookie} lacks {attr}");
    }
    let refresh_cookie = cookies.iter().find(|c| c.starts_with("__Secure-hub_refresh=")).unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/auth"] {
        assert!(refresh_cookie.contains(attr), "{refresh_cookie} lacks {attr}");
    }
    assert_eq!(cookie_value(&cookies, "__Secure-hub_refresh"), second_refresh);

    // The new access token works.
    let r =
        t.http.get(t.url("/api/auth/me")).bearer_auth(second["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Replaying the first (already used) refresh token: detected, and the family is revoked...
    assert_eq!(error_code(refresh(&first.refresh_token).await.unwrap()).await, (401, "refresh_token_reused".into()));
    // ...so even the legitimate latest refresh token no longer works.
    assert_eq!(error_code(refresh(&second_refresh).await.unwrap()).await, (401, "session_revoked".into()));
}

#[tokio::test]
async fn refresh_works_from_the_cookie_alone_and_refuses_bad_input() {
    let t = TestStack::new("refreshcookie").await;
    let (_, pair) = t.signed_in("dee@example.com", Role::Student).await;
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .header("cookie", format!("__Secure-hub_refresh={}", pair.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let post = |body: &'static str, ct: &'static str| {
        t.http.post(t.url("/api/auth/refresh")).header("content-type", ct).body(body).send()
    };
    assert_eq!(error_code(post("", "application/json").await.unwrap()).await, (401, "missing_token".into()));
    assert_eq!(error_code(post("{not json", "application/json").await.unwrap()).await, (400, "invalid_json".into()));
    assert_eq!(
        error_code(post(r#"{"refresh_token":1}"#, "application/json").await.unwrap()).await,
        (400, "invalid_json".into())
    );
    assert_eq!(
        error_code(post(r#"{"refresh_token":"x"}"#, "text/plain").await.unwrap()).await,
        (415, "unsupported_media_type".into())
    );
    assert_eq!(
        error_code(post(r#"{"refresh_token":"x"}"#, "application/json").await.unwrap()).await,
        (401, "invalid_token".into())
    );
    let big = format!(r#"{{"refresh_token":"{}"}}"#, "a".repeat(70 * 1024));
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    // An access token is not a refresh token.
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": pair.access_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));
    // An expired refresh token, signed with the real refresh key.
    let expired = t
        .forge("RefreshTokenKey", &json!({"sub": "u", "type": "refresh", "sid": "s", "iat": now() - 100, "nbf": now() - 100, "exp": now() - 60, "jti": "j"}))
        .await;
    let r = t.http.post(t.url("/api/auth/refresh")).json(&json!({"refresh_token": expired})).send().await.unwrap();
    assert_eq!(error_code(r).await, (401, "token_expired".into()));
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_win() {
    let t = TestStack::new("refreshrace").await;
    let (_, pair) = t.signed_in("eve@example.com", Role::Student).await;
    let attempts = (0..6)
        .map(|_| t.http.post(t.url("/api/auth/refresh")).json(&json!({"refresh_token": pair.refresh_token})).send());
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_cookies() {
    let t = TestStack::new("logout").await;
    let (_, pair) = t.signed_in("fay@example.com", Role::Observer).await;
    let r = t.http.post(t.url("/api/auth/logout")).bearer_auth(&pair.access_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    assert!(cookies.iter().any(|c| c.starts_with("__Host-hub_access=;") && c.contains("Max-Age=0")), "{cookies:?}");
    assert!(cookies.iter().any(|c| c.starts_with("__Secure-hub_refresh=;") && c.contains("Max-Age=0")), "{cookies:?}");
    // The session's refresh token is dead.
    let r = t
        .http
        .post(t.url("/api/auth/refresh"))
        .json(&json!({"refresh_token": pair.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "session_revoked".into()));

    // Logging out with only the refresh cookie works too; without any credential it is refused.
    let (_, other) = t.signed_in("gus@example.com", Role::Student).await;
    let r = t
        .http
        .post(t.url("/api/auth/logout"))
        .header("cookie", format!("__Secure-hub_refresh={}", other.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t.http.post(t.url("/api/auth/logout")).send().await.unwrap();
    assert_eq!(error_code(r).await, (401, "missing_token".into()));
}

#[tokio::test]
async fn rotated_keys_keep_earlier_tokens_valid_until_the_next_rotation() {
    let t = TestStack::new("rotation").await;
    let (_, before) = t.signed_in("hal@example.com", Role::Student).await;
    let sm = aws_sdk_secretsmanager::Client::new(&t.sdk);
    let secret = &t.stack.refs["AccessTokenKey"];
    let rotate = |value: String| sm.put_secret_value().secret_id(secret).secret_string(value).send();

    rotate("r1-".to_string() + &"k".repeat(61)).await.unwrap();
    // A new instance (fresh cache) signs with the new version and still accepts the old one.
    let fresh = t.new_context();
    let old_claims = hub::domain::auth::tokens::verify_access(&fresh, &before.access_token).await.unwrap();
    let (user, _) = hub::domain::auth::provisioning::provision_user(
        &fresh,
        &crate::common::profile("test", "hal@example.com", Some("hal@example.com"), Role::Student),
    )
    .await
    .unwrap();
    assert_eq!(old_claims.sub, user.id);
    let after = hub::domain::auth::sessions::start_session(&fresh, &user).await.unwrap();
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_ne!(kid(&after.access_token), kid(&before.access_token));
    // The gateway's warm instance learns the new version on first sight of its kid.
    let r = t.http.get(t.url("/api/auth/me")).bearer_auth(&after.access_token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // After a second rotation the first key is gone: its tokens are refused.
    rotate("r2-".to_string() + &"k".repeat(61)).await.unwrap();
    let newest = t.new_context();
    let err = hub::domain::auth::tokens::verify_access(&newest, &before.access_token).await.unwrap_err();
    assert_eq!(err.code, "invalid_token");
    assert!(hub::domain::auth::tokens::verify_access(&newest, &after.access_token).await.is_ok());
}
