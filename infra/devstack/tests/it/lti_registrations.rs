//! LTI platform registrations through the dev gateway: who may register (platform admins), list, change
//! and delete them (an organization's admins: name and deployments), what is validated (URLs through the
//! SSRF guard, ids, deployments), and the tool's URLs a school pastes into its LMS.

use hub::domain::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestStack, error_code};

fn canvas(platform: &str) -> Value {
    json!({
        "organization_id": "lincoln",
        "name": "Lincoln High Canvas",
        "issuer": "https://canvas.instructure.com",
        "client_id": "10000000000042",
        "deployment_ids": ["42:8865aa05b4b79b64a91a86042e43af5ea8ae79eb"],
        "auth_url": format!("{platform}/api/lti/authorize_redirect"),
        "token_url": format!("{platform}/login/oauth2/token"),
        "jwks_url": format!("{platform}/api/lti/security/jwks"),
    })
}

async fn send(t: &TestStack, method: http::Method, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = t.http.request(method, t.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_platform_admin_registers_an_lms_for_a_school_whose_admins_manage_it() {
    let t = TestStack::new("ltireg").await;
    let platform = lti_platform_sim::Platform::start(0).await.unwrap();
    let (_, root) = t.signed_in_as("root@hub.example", Role::Admin, "platform").await;
    let (_, admin) = t.signed_in_as("admin@lincoln.example", Role::OrgAdmin, "lincoln").await;
    // A school's own admin cannot register a platform: whoever sets the issuer and client id decides whose
    // launches land where, and a school's client id is visible to its students.
    let r =
        send(&t, http::Method::POST, "/api/lti/registrations", &admin.access_token, Some(canvas(&platform.base_url)))
            .await;
    assert_eq!(r.status(), 403);
    let r =
        send(&t, http::Method::POST, "/api/lti/registrations", &root.access_token, Some(canvas(&platform.base_url)))
            .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let registration = &created["registration"];
    let id = registration["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ltr_"));
    assert_eq!(registration["organization_id"], "lincoln");
    assert_eq!(registration["issuer"], "https://canvas.instructure.com", "the issuer is kept byte for byte");
    assert_eq!(created["tool"]["login_url"], format!("{}/api/lti/login", t.base));
    assert_eq!(created["tool"]["redirect_uris"][0], format!("{}/api/lti/launch", t.base));
    assert_eq!(created["tool"]["jwks_url"], format!("{}/api/lti/jwks", t.base));

    // The same issuer and client id again: refused; another client id of the same issuer: a registration.
    let r =
        send(&t, http::Method::POST, "/api/lti/registrations", &root.access_token, Some(canvas(&platform.base_url)))
            .await;
    assert_eq!(error_code(r).await, (409, "registration_exists".into()));
    let mut other = canvas(&platform.base_url);
    other["client_id"] = json!("10000000000043");
    let r = send(&t, http::Method::POST, "/api/lti/registrations", &root.access_token, Some(other)).await;
    assert_eq!(r.status(), 201, "one issuer, several client ids (Canvas cloud)");

    // The school's admin sees its registrations and manages their name and deployments, not their URLs.
    let listed = t.get_json("/api/lti/registrations", &admin.access_token).await;
    assert_eq!(listed["registrations"].as_array().unwrap().len(), 2);
    let path = format!("/api/lti/registrations/{id}");
    let update =
        json!({"deployment_ids": ["42:8865aa05b4b79b64a91a86042e43af5ea8ae79eb", "43:second"], "name": "Canvas"});
    let r = send(&t, http::Method::PUT, &path, &admin.access_token, Some(update)).await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["registration"]["deployment_ids"].as_array().unwrap().len(), 2);
    assert_eq!(changed["registration"]["name"], "Canvas");
    let own_keys = json!({"jwks_url": format!("{}/jwks", platform.base_url)});
    let r = send(&t, http::Method::PUT, &path, &admin.access_token, Some(own_keys.clone())).await;
    assert_eq!(r.status(), 403, "pointing the platform at other keys is a platform admin's decision");
    let unchanged = t.ctx.store().lti_registration(&id).await.unwrap().unwrap();
    assert_eq!(unchanged.jwks_url, format!("{}/api/lti/security/jwks", platform.base_url), "the keys stand");
    assert_eq!(send(&t, http::Method::PUT, &path, &root.access_token, Some(own_keys)).await.status(), 200);
    let stored = t.ctx.store().lti_registration(&id).await.unwrap().unwrap();
    assert_eq!(stored.deployment_ids.len(), 2);

    // Another organization's admin, a teacher: nothing to see or change.
    let (_, stranger) = t.signed_in_as("admin@elsewhere.example", Role::OrgAdmin, "elsewhere").await;
    for method in [http::Method::GET, http::Method::PUT, http::Method::DELETE] {
        let body = (method == http::Method::PUT).then(|| json!({"name": "mine now"}));
        let r = send(&t, method.clone(), &path, &stranger.access_token, body).await;
        assert_eq!(error_code(r).await, (404, "registration_not_found".into()), "{method}");
    }
    let r = send(&t, http::Method::GET, "/api/lti/registrations?organization_id=lincoln", &stranger.access_token, None)
        .await;
    assert_eq!(r.status(), 403);
    let (_, teacher) = t.signed_in_as("teacher@lincoln.example", Role::Teacher, "lincoln").await;
    let r = send(&t, http::Method::GET, "/api/lti/registrations", &teacher.access_token, None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(t.ctx.store().lti_registration(&id).await.unwrap().unwrap().name, "Canvas", "nothing changed");

    let r = send(&t, http::Method::DELETE, &path, &admin.access_token, None).await;
    assert_eq!(r.status(), 200);
    assert!(t.ctx.store().lti_registration(&id).await.unwrap().is_none());
    let r = send(&t, http::Method::GET, &path, &admin.access_token, None).await;
    assert_eq!(error_code(r).await, (404, "registration_not_found".into()));
}

#[tokio::test]
async fn registrations_with_unsafe_urls_or_bad_ids_are_refused_and_nothing_is_stored() {
    let t = TestStack::new("ltiregbad").await;
    let platform = lti_platform_sim::Platform::start(0).await.unwrap();
    let (_, admin) = t.signed_in_as("root@bad.example", Role::Admin, "platform").await;
    let cases: Vec<(&str, Value)> = vec![
        ("jwks_url", json!("https://169.254.169.254/latest/meta-data")),
        ("jwks_url", json!("https://10.1.2.3/jwks")),
        ("token_url", json!("ftp://lms.example/token")),
        ("auth_url", json!("https://user:pass@lms.example/authorize")),
        ("auth_url", json!("javascript:alert(1)")),
        ("jwks_url", json!(format!("{}/jwks#fragment", platform.base_url))),
        ("client_id", json!("")),
        ("client_id", json!("x".repeat(300))),
        ("deployment_ids", json!([])),
        ("deployment_ids", json!(["ok", "bad\u{0007}"])),
        ("name", json!("")),
        ("issuer", json!("not a url")),
        ("organization_id", json!("")),
    ];
    for (field, value) in cases {
        let mut body = canvas(&platform.base_url);
        body[field] = value.clone();
        let r = send(&t, http::Method::POST, "/api/lti/registrations", &admin.access_token, Some(body)).await;
        assert_eq!(error_code(r).await, (400, "invalid_registration".into()), "{field} = {value}");
    }
    let mut unknown = canvas(&platform.base_url);
    unknown["organization"] = json!("typo");
    let r = send(&t, http::Method::POST, "/api/lti/registrations", &admin.access_token, Some(unknown)).await;
    assert_eq!(r.status(), 400, "unknown fields are refused");
    let r = t
        .http
        .post(t.url("/api/lti/registrations"))
        .bearer_auth(&admin.access_token)
        .header("content-type", "application/json")
        .body("x".repeat(200_000))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 413), "oversized: {}", r.status());
    let listed = t.get_json("/api/lti/registrations?organization_id=lincoln", &admin.access_token).await;
    assert!(listed["registrations"].as_array().unwrap().is_empty(), "nothing was stored");
}
