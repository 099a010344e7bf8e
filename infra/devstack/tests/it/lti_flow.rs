//! LTI launches end to end through the dev gateway, against the local LTI platform: login initiation →
//! the platform's authorization endpoint → the launch form POST → a one-time code → a session; and the
//! launches that must be refused (another browser's state, a replay, an unknown platform, a student's
//! deep-linking request) with their code on a page the LMS may frame, creating nothing.

use hub::domain::auth::Role;
use lti_platform_sim::Platform;
use serde_json::{Value, json};

use crate::common::TestStack;

const ISSUER: &str = "https://lms.lincoln.example";
pub(crate) const CLIENT_ID: &str = "hub-tool-1";
pub(crate) const DEPLOYMENT: &str = "deployment-1";
pub(crate) const CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";

pub(crate) struct Lms {
    pub t: TestStack,
    pub platform: Platform,
    /// The platform's issuer, as registered.
    pub issuer: String,
    /// A browser: no redirects followed, cookies kept by hand.
    pub browser: reqwest::Client,
    /// A platform admin's access token.
    pub admin: String,
}

async fn setup(name: &str) -> Lms {
    setup_with(name, &[], |_| ISSUER.to_string()).await
}

/// A stack with these template parameters and a platform registered for organization `lincoln`
/// under the issuer `issuer` gives it.
pub(crate) async fn setup_with(name: &str, parameters: &[(&str, &str)], issuer: fn(&Platform) -> String) -> Lms {
    let t = TestStack::with_parameters(name, parameters).await;
    let platform = Platform::start(0).await.unwrap();
    let issuer = issuer(&platform);
    let (_, admin) = t.signed_in_as(&format!("root@{name}.example"), Role::Admin, "platform").await;
    let body = json!({
        "organization_id": "lincoln", "name": "Lincoln LMS", "issuer": issuer, "client_id": CLIENT_ID, "deployment_ids": [DEPLOYMENT],
        "auth_url": format!("{}/authorize", platform.base_url), "token_url": format!("{}/token", platform.base_url),
        "jwks_url": platform.jwks_url(),
    });
    let r =
        t.http.post(t.url("/api/lti/registrations")).bearer_auth(&admin.access_token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Lms { t, platform, issuer, browser, admin: admin.access_token }
}

impl Lms {
    /// A launch's claims from this platform.
    pub fn claims(&self, sub: &str, role: &str, message_type: &str) -> Value {
        let mut claims = claims(sub, role, message_type);
        claims["iss"] = json!(self.issuer);
        claims
    }
}

fn claims(sub: &str, role: &str, message_type: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT_ID, "sub": sub,
        "email": format!("{sub}@lincoln.example"), "given_name": "Ada", "family_name": "Lovelace",
        format!("{CLAIM}deployment_id"): DEPLOYMENT,
        format!("{CLAIM}message_type"): message_type,
        format!("{CLAIM}version"): "1.3.0",
        format!("{CLAIM}roles"): [format!("http://purl.imsglobal.org/vocab/lis/v2/membership#{role}")],
        format!("{CLAIM}context"): {"id": "course-7", "label": "BIO 102", "title": "Biology"},
        format!("{CLAIM}resource_link"): {"id": "link-1", "title": "Cells"},
        "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings":
            {"deep_link_return_url": "https://lms.lincoln.example/deep_links", "accept_types": ["ltiResourceLink"]},
    })
}

/// What the platform's form POSTs, and the state cookie the login set in this browser.
pub(crate) struct Form {
    pub action: String,
    pub id_token: String,
    pub state: String,
    pub cookie: String,
}

/// `url` with `pairs` as its query.
pub(crate) fn with_query(url: String, pairs: &[(&str, &str)]) -> String {
    format!("{url}?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub(crate) fn value_of<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
    &html[at..at + html[at..].find('"').unwrap()]
}

impl Lms {
    /// The LMS starts a login for `hint`; the browser follows it to the platform, which answers its form.
    pub async fn login(&self, hint: &str) -> Form {
        let query = [
            ("iss", self.issuer.as_str()),
            ("login_hint", hint),
            ("client_id", CLIENT_ID),
            ("lti_deployment_id", DEPLOYMENT),
        ];
        let r = self.browser.get(with_query(self.t.url("/api/lti/login"), &query)).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("SameSite=None") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&format!("{}/authorize?", self.platform.base_url)), "{location}");
        let html = self.browser.get(&location).send().await.unwrap().text().await.unwrap();
        let action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        Form {
            action,
            id_token: value_of(&html, "id_token").to_string(),
            state: value_of(&html, "state").to_string(),
            cookie: cookie.split(';').next().unwrap().to_string(),
        }
    }

    pub async fn post(&self, form: &Form, cookie: Option<&str>) -> reqwest::Response {
        let body = form_body(&[("id_token", &form.id_token), ("state", &form.state)]);
        let mut r =
            self.browser.post(&form.action).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(cookie) = cookie {
            r = r.header("cookie", cookie);
        }
        r.send().await.unwrap()
    }

    /// The launch's code, exchanged for a session: the signed-in user as `/api/auth/me` shows it.
    pub async fn session(&self, launched: reqwest::Response) -> Value {
        self.signed_in(launched).await.1
    }

    /// The launch's code exchanged: the access token and the user.
    pub async fn signed_in(&self, launched: reqwest::Response) -> (String, Value) {
        let (code, binding) = launch_code(&launched);
        let r = self.exchange(&code, Some(&binding)).await;
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
        assert_eq!(self.exchange(&code, Some(&binding)).await.status(), 400, "a code is used once");
        let me = self.t.get_json("/api/auth/me", &token).await;
        (token, me)
    }
}

impl Lms {
    /// `POST /api/lti/token` from a browser holding `binding` (its `__Host-hub_login` cookie), or none.
    pub async fn exchange(&self, code: &str, binding: Option<&str>) -> reqwest::Response {
        let mut r = self.t.http.post(self.t.url("/api/lti/token")).json(&json!({"code": code}));
        if let Some(binding) = binding {
            r = r.header("cookie", binding);
        }
        r.send().await.unwrap()
    }
}

/// A signed-in launch's one-time code, and the cookie (`name=value`) that binds it to the browser.
pub(crate) fn launch_code(launched: &reqwest::Response) -> (String, String) {
    assert_eq!(launched.status(), 302);
    let cookies: Vec<&str> = launched.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("__Host-lti_state_") && c.contains("Max-Age=0")),
        "the state's cookie is removed: {cookies:?}"
    );
    let binding = cookies.iter().find(|c| c.starts_with("__Host-hub_login_")).expect("the code's browser binding");
    assert!(binding.contains("HttpOnly") && binding.contains("Secure") && binding.contains("Partitioned"), "{binding}");
    let location = launched.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://localhost:5173/auth/callback?code="), "{location}");
    assert!(location.contains("&source=lti"), "the frontend knows where to exchange it: {location}");
    let code = location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    (code, binding.split(';').next().unwrap().to_string())
}

/// A refused launch: its error code on a page the LMS may frame.
pub(crate) async fn refused(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(!csp.contains("frame-ancestors 'none'") && r.headers().get("x-frame-options").is_none(), "{csp}");
    let html = r.text().await.unwrap();
    let code = html.split("data-error=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    (status, code)
}

#[tokio::test]
async fn a_student_and_a_teacher_launch_from_the_lms_into_their_own_accounts() {
    let lms = setup("ltiflow").await;
    lms.platform.prepare("student-hint", claims("student-1", "Learner", "LtiResourceLinkRequest"));
    let form = lms.login("student-hint").await;
    assert_eq!(form.action, format!("{}/api/lti/launch", lms.t.base), "the platform posts to our launch URL");
    let asked = lms.platform.authorize_requests.lock().unwrap()[0].clone();
    let asked = |k: &str| asked.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(
        (asked("scope").as_str(), asked("response_mode").as_str(), asked("prompt").as_str()),
        ("openid", "form_post", "none")
    );
    assert_eq!(asked("client_id"), CLIENT_ID);
    assert!(asked("nonce").len() >= 32 && asked("state") == form.state);

    let me = lms.session(lms.post(&form, Some(&form.cookie)).await).await;
    assert_eq!((me["role"].as_str(), me["org_id"].as_str()), (Some("student"), Some("lincoln")), "{me}");
    assert_eq!(me["email"], "student-1@lincoln.example");

    // The same student again: the same account (identity lti:<issuer> + sub).
    let form = lms.login("student-hint").await;
    let again = lms.session(lms.post(&form, Some(&form.cookie)).await).await;
    assert_eq!(again["id"], me["id"]);

    lms.platform.prepare("teacher-hint", claims("teacher-1", "Instructor", "LtiResourceLinkRequest"));
    let form = lms.login("teacher-hint").await;
    let teacher = lms.session(lms.post(&form, Some(&form.cookie)).await).await;
    assert_eq!(teacher["role"], "teacher");
}

#[tokio::test]
async fn launches_from_another_browser_replayed_or_from_unknown_platforms_are_refused_creating_nothing() {
    let lms = setup("ltiflowbad").await;
    let provider = format!("lti:{}", hub::integrations::lti::registration::registration_id(ISSUER, CLIENT_ID));
    let nobody = |sub: &'static str| {
        let (store, provider) = (lms.t.ctx.store(), provider.clone());
        async move { store.user_id_by_identity(&provider, sub).await.unwrap().is_none() }
    };
    lms.platform.prepare("hint", claims("victim-1", "Learner", "LtiResourceLinkRequest"));

    // The state without its cookie (another browser, a login CSRF), or with another login's cookie.
    let form = lms.login("hint").await;
    assert_eq!(refused(lms.post(&form, None).await).await, (400, "invalid_state".into()));
    let other = lms.login("hint").await;
    assert_eq!(refused(lms.post(&form, Some(&other.cookie)).await).await, (400, "invalid_state".into()));
    assert!(nobody("victim-1").await, "nothing was created");

    // Used once: the same POST again is a replay.
    assert_eq!(lms.post(&form, Some(&form.cookie)).await.status(), 302);
    assert_eq!(refused(lms.post(&form, Some(&form.cookie)).await).await, (400, "invalid_state".into()));
    // Another login's id_token under this state: its nonce is not this login's.
    let (a, b) = (lms.login("hint").await, lms.login("hint").await);
    let swapped = Form { id_token: b.id_token.clone(), ..a };
    assert_eq!(refused(lms.post(&swapped, Some(&swapped.cookie)).await).await, (400, "invalid_nonce".into()));

    // A launch asserting the address of a parent's account (proven, no organization) does not take it
    // over: the learner gets an account of their own, as for any unknown address.
    let parent =
        hub::domain::auth::email_sign_in::create_observer(&lms.t.ctx, "parent@family.example").await.unwrap().unwrap();
    let mut claims_parent = claims("mallory-1", "Learner", "LtiResourceLinkRequest");
    claims_parent["email"] = json!("parent@family.example");
    lms.platform.prepare("parent", claims_parent);
    let form = lms.login("parent").await;
    let own = lms.session(lms.post(&form, Some(&form.cookie)).await).await;
    assert_ne!(own["id"], parent.id.as_str());
    assert_eq!((own["org_id"].as_str(), own["email_proven"].as_bool()), (Some("lincoln"), Some(false)));
    assert_eq!(lms.t.ctx.store().get_user(&parent.id).await.unwrap().unwrap(), parent, "untouched");

    // A student cannot add content to a course: refused before anyone is provisioned.
    lms.platform.prepare("dl", claims("student-dl", "Learner", "LtiDeepLinkingRequest"));
    let form = lms.login("dl").await;
    assert_eq!(refused(lms.post(&form, Some(&form.cookie)).await).await, (403, "deep_linking_forbidden".into()));
    assert!(nobody("student-dl").await);

    // Logins from a platform nobody registered, or without a client id.
    let r = lms
        .browser
        .get(with_query(
            lms.t.url("/api/lti/login"),
            &[("iss", "https://evil.example"), ("login_hint", "x"), ("client_id", CLIENT_ID)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await, (403, "unknown_registration".into()));
    let r = lms
        .browser
        .get(with_query(lms.t.url("/api/lti/login"), &[("iss", ISSUER), ("login_hint", "x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await, (400, "invalid_login".into()));
    let r = lms
        .browser
        .get(with_query(
            lms.t.url("/api/lti/login"),
            &[("iss", ISSUER), ("login_hint", "x"), ("client_id", CLIENT_ID), ("lti_deployment_id", "elsewhere")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await, (403, "unknown_deployment".into()));
    // A forged form: no state at all, garbage, an oversized body.
    let r = lms
        .browser
        .post(lms.t.url("/api/lti/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await, (400, "invalid_state".into()));
    let r = lms
        .browser
        .post(lms.t.url("/api/lti/launch"))
        .body("x".repeat(200_000))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 413 | 400), "{}", r.status());

    // Login initiations are limited per address (each stores a state and sets a cookie): 600 a minute,
    // the 601st refused. A run starts at the top of a minute; one that still crosses into the next
    // (a new window) is tried again from a fresh address.
    let query = [("iss", ISSUER), ("login_hint", "hint"), ("client_id", CLIENT_ID)];
    let mut counted = None;
    for ip in [31, 32, 33] {
        let address = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, ip));
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(address)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // Start near the top of a minute, so the run fits in its window.
        let second = crate::common::now() % 60;
        if second > 5 {
            tokio::time::sleep(std::time::Duration::from_secs((60 - second) as u64)).await;
        }
        let window = crate::common::now() / 60;
        let mut accepted = 0;
        let refused = loop {
            let r = client.get(with_query(lms.t.url("/api/lti/login"), &query)).send().await.unwrap();
            if crate::common::now() / 60 != window {
                break false; // a new window began mid-run: its count says nothing
            }
            if r.status() == 429 {
                break true;
            }
            accepted += 1;
            assert!(accepted <= 600, "more than 600 logins within one minute's window from one address");
        };
        if refused {
            counted = Some(accepted);
            break;
        }
    }
    assert_eq!(counted, Some(600), "600 logins a minute per address, then 429");
}
