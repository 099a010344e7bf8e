//! The OAuth authorization server against a real client library (the `oauth2` crate), through the
//! dev gateway: authorization code with PKCE and consent, refresh rotation, client credentials,
//! revocation, introspection, and the attacks of RFC 9700, each refused with nothing issued.

use hub::domain::auth::Role;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, IntrospectionUrl,
    PkceCodeChallenge, RedirectUrl, RevocationUrl, Scope, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use serde_json::{Value, json};

use crate::common::{TestStack, error_code};

pub type Oauth2Client = BasicClient<EndpointSet, EndpointNotSet, EndpointSet, EndpointSet, EndpointSet>;

/// One organization with a partner app registered by its admin, and users signed in.
pub struct Partner {
    pub t: TestStack,
    pub org: String,
    pub admin: String,
    pub client_id: String,
    pub secret: String,
    pub redirect_uri: String,
    /// Never follows redirects: the tests read `Location`.
    pub raw: reqwest::Client,
}

impl Partner {
    pub async fn new(name: &str) -> Self {
        let t = TestStack::new(name).await;
        let org = format!("org-{name}");
        let (_, admin) = t.signed_in_as(&format!("admin@{name}.example"), Role::OrgAdmin, &org).await;
        let redirect_uri = "http://127.0.0.1:9/callback".to_string();
        let raw = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut p = Self {
            t,
            org,
            admin: admin.access_token,
            client_id: String::new(),
            secret: String::new(),
            redirect_uri,
            raw,
        };
        let client = p
            .register(json!({"name": "Gradebook <Sync>", "redirect_uris": [p.redirect_uri],
                "allowed_scopes": ["profile", "progress:read", "webhooks:manage"],
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"]}))
            .await;
        p.client_id = client["client_id"].as_str().unwrap().into();
        p.secret = client["client_secret"].as_str().unwrap().into();
        p
    }

    pub async fn register(&self, body: Value) -> Value {
        let r = self
            .t
            .http
            .post(self.t.url("/api/oauth/clients"))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    /// The `oauth2` crate's client for this app, pointed at our endpoints.
    pub fn client(&self, client_id: &str, secret: Option<&str>) -> Oauth2Client {
        let base = &self.t.base;
        let mut c = BasicClient::new(ClientId::new(client_id.into()))
            .set_auth_uri(AuthUrl::new(format!("{base}/api/oauth/authorize")).unwrap())
            .set_token_uri(TokenUrl::new(format!("{base}/api/oauth/token")).unwrap())
            .set_revocation_url(RevocationUrl::new(format!("{base}/api/oauth/revoke")).unwrap())
            .set_introspection_url(IntrospectionUrl::new(format!("{base}/api/oauth/introspect")).unwrap())
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).unwrap());
        if let Some(s) = secret {
            c = c.set_client_secret(ClientSecret::new(s.into()));
        }
        c
    }

    pub fn app(&self) -> Oauth2Client {
        self.client(&self.client_id, Some(&self.secret))
    }

    /// A signed-in user of this organization (or of `org`), as a session token.
    pub async fn user(&self, email: &str, role: Role, org: Option<&str>) -> (hub::domain::auth::User, String) {
        let (user, pair) = self.t.signed_in_as(email, role, org.unwrap_or(&self.org)).await;
        (user, pair.access_token)
    }

    /// The browser's part of the flow, over HTTP with the session cookie: opens `url`, consents if
    /// asked (reading the form as a browser would), and returns the redirect back to the app.
    pub async fn authorize(&self, url: &str, session: &str, decision: &str) -> url::Url {
        let cookie = format!("__Host-hub_access={session}");
        let r = self.raw.get(url).header("cookie", &cookie).send().await.unwrap();
        let r = match r.status().as_u16() {
            200 => {
                let csrf_cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
                let page = r.text().await.unwrap();
                let mut form = hidden_fields(&page);
                form.push(("decision".into(), decision.into()));
                let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
                self.raw
                    .post(self.t.url("/api/oauth/authorize"))
                    .header("cookie", format!("{cookie}; {csrf_cookie}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            }
            _ => r,
        };
        assert!(r.status().is_redirection(), "authorize answered {}", r.status());
        url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    }

    /// Authorization code + PKCE to tokens, as a partner app does it.
    pub async fn tokens(&self, session: &str, scopes: &[&str]) -> oauth2::basic::BasicTokenResponse {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .app()
            .authorize_url(CsrfToken::new_random)
            .add_scopes(scopes.iter().map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge)
            .url();
        let back = self.authorize(url.as_str(), session, "allow").await;
        assert_eq!(query(&back, "state").as_deref(), Some(state.secret().as_str()));
        assert_eq!(query(&back, "iss").as_deref(), Some(self.t.base.as_str()), "RFC 9207 iss");
        let code = query(&back, "code").expect("a code");
        self.app()
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http_client(&self.t.http))
            .await
            .unwrap()
    }

    /// RFC 7009 revocation by this app.
    pub async fn revoke(&self, token: &str) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish();
        self.t
            .http
            .post(self.t.url("/api/oauth/revoke"))
            .basic_auth(&self.client_id, Some(&self.secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn api(&self, path: &str, token: &str) -> reqwest::Response {
        self.t.http.get(self.t.url(path)).bearer_auth(token).send().await.unwrap()
    }

    /// A code exchanged by hand (with `creds` as HTTP Basic, or none).
    pub async fn exchange(&self, code: &str, verifier: &str, creds: Option<(&str, &str)>) -> (u16, Value) {
        let fields = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ];
        self.token_form(&fields, creds).await
    }

    /// A raw token-endpoint request (for what a well-behaved library would not send).
    pub async fn token_form(&self, fields: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let mut r = self
            .t
            .http
            .post(self.t.url("/api/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            r = r.basic_auth(id, Some(secret));
        }
        let r = r.body(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

/// The `oauth2` crate's async HTTP client, over the tests' reqwest (no redirects followed).
pub fn http_client(
    http: &reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>>
+ '_ {
    move |request: oauth2::HttpRequest| {
        let http = http.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut r = http.request(parts.method, parts.uri.to_string()).body(body);
            for (k, v) in &parts.headers {
                r = r.header(k, v);
            }
            let answer = r.send().await?;
            let mut out = http::Response::builder().status(answer.status());
            for (k, v) in answer.headers() {
                out = out.header(k, v);
            }
            Ok(out.body(answer.bytes().await?.to_vec()).unwrap())
        })
    }
}

pub fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The hidden fields of a page's form, unescaped.
fn hidden_fields(page: &str) -> Vec<(String, String)> {
    page.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once("\" value=\"")?;
            let (value, _) = rest.split_once('"')?;
            let value = value
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            Some((name.to_string(), value))
        })
        .collect()
}

#[tokio::test]
async fn a_partner_app_gets_tokens_by_code_with_pkce_and_uses_them_within_their_scopes() {
    let p = Partner::new("oauth-code").await;
    let (user, session) = p.user("kim@oauth-code.example", Role::Student, None).await;
    let tokens = p.tokens(&session, &["profile", "progress:read"]).await;
    assert_eq!(tokens.expires_in().unwrap().as_secs(), 3600);
    let scopes: Vec<String> = tokens.scopes().unwrap().iter().map(|s| s.to_string()).collect();
    assert_eq!(scopes, ["profile", "progress:read"]);
    let access = tokens.access_token().secret().clone();

    // Within its scopes on our API; refused elsewhere, with insufficient_scope.
    assert_eq!(p.api("/api/auth/me", &access).await.json::<Value>().await.unwrap()["id"], user.id.as_str());
    assert_eq!(p.api("/api/me/quests", &access).await.status(), 200);
    for path in ["/api/webhooks/subscriptions", "/api/observers/students", "/api/admin/quests"] {
        let r = p.api(path, &access).await;
        assert_eq!(error_code(r).await, (403, "insufficient_scope".into()), "{path}");
    }
    // The token verifies with the published keys (a partner's resource server would do this).
    let jwks: Value = p.t.http.get(p.t.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!((header.alg, header.typ.as_deref()), (jsonwebtoken::Algorithm::EdDSA, Some("at+jwt")));
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"].as_str() == header.kid.as_deref()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["hub-api"]);
    validation.set_issuer(&[p.t.base.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&access, &decoding, &validation).unwrap().claims;
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some(user.id.as_str()), Some(p.client_id.as_str()))
    );

    // Introspection by the app.
    let intro =
        p.app().introspect(&tokens.access_token().clone()).request_async(&http_client(&p.t.http)).await.unwrap();
    assert!(intro.active());
    assert_eq!(intro.sub(), Some(user.id.as_str()));

    // Refresh: rotated; the old one reused revokes the whole family, at once everywhere.
    let first_refresh = tokens.refresh_token().unwrap().clone();
    let second = p.app().exchange_refresh_token(&first_refresh).request_async(&http_client(&p.t.http)).await.unwrap();
    let second_refresh = second.refresh_token().unwrap().clone();
    assert_ne!(second_refresh.secret(), first_refresh.secret());
    let second_access = second.access_token().secret().clone();
    assert_eq!(p.api("/api/auth/me", &second_access).await.status(), 200);
    let narrowed = p
        .app()
        .exchange_refresh_token(&second_refresh)
        .add_scope(Scope::new("profile".into()))
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    assert_eq!(narrowed.scopes().unwrap().iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["profile"]);
    let reuse = p.app().exchange_refresh_token(&first_refresh).request_async(&http_client(&p.t.http)).await;
    assert!(
        matches!(reuse, Err(oauth2::RequestTokenError::ServerResponse(ref e)) if e.error().as_ref() == "invalid_grant"),
        "{reuse:?}"
    );
    assert_eq!(
        error_code(p.api("/api/auth/me", narrowed.access_token().secret()).await).await,
        (401, "invalid_token".into())
    );
    let after =
        p.app().exchange_refresh_token(narrowed.refresh_token().unwrap()).request_async(&http_client(&p.t.http)).await;
    assert!(
        matches!(after, Err(oauth2::RequestTokenError::ServerResponse(ref e)) if e.error().as_ref() == "invalid_grant"),
        "the family is revoked: {after:?}"
    );
    let intro = p.app().introspect(narrowed.access_token()).request_async(&http_client(&p.t.http)).await.unwrap();
    assert!(!intro.active());

    // Consent is remembered: a second authorization goes straight back to the app; revocation by the
    // app (RFC 7009) ends that grant.
    let again = p.tokens(&session, &["profile"]).await;
    // (The oauth2 crate refuses a revocation endpoint over plain http, as the local stack serves it:
    // the same RFC 7009 request, sent by hand.)
    let r = p.revoke(again.access_token().secret()).await;
    assert_eq!((r.status().as_u16(), r.headers()["cache-control"].to_str().unwrap()), (200, "no-store"));
    assert_eq!(
        error_code(p.api("/api/auth/me", again.access_token().secret()).await).await,
        (401, "invalid_token".into())
    );
    let refresh =
        p.app().exchange_refresh_token(again.refresh_token().unwrap()).request_async(&http_client(&p.t.http)).await;
    assert!(
        matches!(refresh, Err(oauth2::RequestTokenError::ServerResponse(ref e)) if e.error().as_ref() == "invalid_grant"),
        "the revoked grant's refresh token is refused: {refresh:?}"
    );

    // The user's side: the app is listed; withdrawing it revokes every token and forgets the consent.
    let live = p.tokens(&session, &["profile"]).await;
    let listed: Value = p.t.get_json("/api/me/authorizations", &session).await;
    assert_eq!(listed[0]["client_id"], p.client_id.as_str());
    assert_eq!(listed[0]["name"], "Gradebook <Sync>");
    assert_eq!(listed[0]["scopes"], json!(["profile", "progress:read"]));
    assert!(listed[0]["last_used_at"].is_i64());
    let r =
        p.t.http
            .delete(p.t.url(&format!("/api/me/authorizations/{}", p.client_id)))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(p.api("/api/auth/me", live.access_token().secret()).await).await,
        (401, "invalid_token".into())
    );
    assert!(p.t.get_json("/api/me/authorizations", &session).await.as_array().unwrap().is_empty());
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = p
        .app()
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let page = p.raw.get(url.as_str()).header("cookie", format!("__Host-hub_access={session}")).send().await.unwrap();
    assert_eq!(page.status(), 200, "consent is asked again");
    let html = page.text().await.unwrap();
    assert!(html.contains("Gradebook &lt;Sync&gt;") && html.contains("See your name, email address and role"));
}

#[tokio::test]
async fn client_credentials_manage_their_own_organization_only() {
    let p = Partner::new("oauth-cc").await;
    // A second organization with its own app, on the same hub.
    let other_org = "org-oauth-cc-b";
    let (_, other_admin) = p.user("admin@oauth-cc-b.example", Role::OrgAdmin, Some(other_org)).await;
    let body = json!({"name": "B", "redirect_uris": [p.redirect_uri], "allowed_scopes": ["webhooks:manage"], "grant_types": ["client_credentials"]});
    let r = p.t.http.post(p.t.url("/api/oauth/clients")).bearer_auth(&other_admin).json(&body).send().await.unwrap();
    let other: Value = r.json().await.unwrap();
    let other_app = p.client(other["client_id"].as_str().unwrap(), other["client_secret"].as_str());
    let token = p
        .app()
        .exchange_client_credentials()
        .add_scope(Scope::new("webhooks:manage".into()))
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    assert!(token.refresh_token().is_none());
    let access = token.access_token().secret().clone();
    let r =
        p.t.http
            .post(p.t.url("/api/webhooks/subscriptions"))
            .bearer_auth(&access)
            .json(&json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["*"]}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let listed: Value = p.api("/api/webhooks/subscriptions", &access).await.json().await.unwrap();
    assert_eq!(listed["organization_id"], p.org.as_str());
    let r = p.api(&format!("/api/webhooks/subscriptions?organization_id={other_org}"), &access).await;
    assert_eq!(r.status(), 403, "another organization's webhooks");
    // Another organization's client on this organization's subscription: not found.
    let theirs = other_app
        .exchange_client_credentials()
        .add_scope(Scope::new("webhooks:manage".into()))
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    let id = listed["subscriptions"][0]["id"].as_str().unwrap();
    let r = p.api(&format!("/api/webhooks/subscriptions/{id}"), theirs.access_token().secret()).await;
    assert_eq!(error_code(r).await, (404, "subscription_not_found".into()));
    let theirs_listed: Value =
        p.api("/api/webhooks/subscriptions", theirs.access_token().secret()).await.json().await.unwrap();
    assert_eq!(theirs_listed["organization_id"], other_org);
    assert!(theirs_listed["subscriptions"].as_array().unwrap().is_empty());
    // Scopes beyond the client's are refused.
    let (status, body) = p
        .token_form(&[("grant_type", "client_credentials"), ("scope", "quests:read")], Some((&p.client_id, &p.secret)))
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));
    // Deleting the client ends its tokens at once.
    let r =
        p.t.http
            .delete(p.t.url(&format!("/api/oauth/clients/{}", p.client_id)))
            .bearer_auth(&p.admin)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(error_code(p.api("/api/webhooks/subscriptions", &access).await).await, (401, "invalid_token".into()));
}

#[tokio::test]
async fn the_attacks_of_rfc_9700_are_refused_and_nothing_is_issued() {
    let p = Partner::new("oauth-attacks").await;
    let (_, session) = p.user("eve@oauth-attacks.example", Role::Student, None).await;
    let cookie = format!("__Host-hub_access={session}");
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let authorize = |extra: &[(&str, &str)]| {
        let mut u = url::Url::parse(&p.t.url("/api/oauth/authorize")).unwrap();
        let mut fields: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &p.client_id),
            ("redirect_uri", &p.redirect_uri),
            ("scope", "profile"),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            fields.retain(|(f, _)| f != k);
            if !v.is_empty() {
                fields.push((k, v));
            }
        }
        u.query_pairs_mut().extend_pairs(fields);
        u.to_string()
    };

    // redirect_uri must match exactly: an error page, never a redirect.
    for bad in [
        "http://127.0.0.1:9/callback/extra",
        "http://127.0.0.1:9/callbac",
        "http://127.0.0.1:9/Callback",
        "http://127.0.0.1:9/callback#frag",
        "http://127.0.0.1:9/callback?x=1",
        "http://127.0.0.1:10/callback",
        "http://127.0.0.1:9/%63allback",
        "https://evil.example/callback",
        "http://127.0.0.1:9@evil.example/callback",
    ] {
        let r = p.raw.get(authorize(&[("redirect_uri", bad)])).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.headers().get("location").is_none(), "{bad}");
    }
    let r = p.raw.get(authorize(&[("client_id", "cli_unknown")])).header("cookie", &cookie).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers().get("location").is_none()), (400, true));
    // Once the redirect URI is trusted, errors go back to the app with state and iss.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "profile quests:read")], "invalid_scope"),
        (vec![("scope", "admin")], "invalid_scope"),
    ] {
        let back = p.authorize(&authorize(&extra), &session, "allow").await;
        assert_eq!(query(&back, "error").as_deref(), Some(error), "{extra:?}");
        assert_eq!(query(&back, "state").as_deref(), Some("st"));
        assert!(query(&back, "code").is_none());
    }
    // Deny.
    let back = p.authorize(&authorize(&[]), &session, "deny").await;
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    // Consent CSRF: a POST without the page's CSRF pair does nothing.
    let forged = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("decision", "allow"),
            ("client_id", p.client_id.as_str()),
            ("redirect_uri", &p.redirect_uri),
            ("response_type", "code"),
            ("scope", "profile"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("csrf", &"x".repeat(43)),
        ])
        .finish();
    let r = p
        .raw
        .post(p.t.url("/api/oauth/authorize"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.headers().get("location").is_none()), (403, true));
    assert!(
        p.t.get_json("/api/me/authorizations", &session).await.as_array().unwrap().is_empty(),
        "no consent recorded"
    );

    // A code: wrong verifier, another client, reuse (revokes what it issued).
    let code_of = |back: url::Url| query(&back, "code").unwrap();
    let code = code_of(p.authorize(&authorize(&[]), &session, "allow").await);
    let wrong = PkceCodeChallenge::new_random_sha256().1;
    let (status, body) = p.exchange(&code, wrong.secret(), Some((&p.client_id, &p.secret))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = p.exchange(&code, verifier.secret(), Some((&p.client_id, &p.secret))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code is used up even by a failed exchange"
    );

    let other =
        p.register(json!({"name": "Other", "redirect_uris": [p.redirect_uri], "allowed_scopes": ["profile"]})).await;
    let code = code_of(p.authorize(&authorize(&[]), &session, "allow").await);
    let (status, body) = p
        .exchange(
            &code,
            verifier.secret(),
            Some((other["client_id"].as_str().unwrap(), other["client_secret"].as_str().unwrap())),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "a code of another client");

    let code = code_of(p.authorize(&authorize(&[]), &session, "allow").await);
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", p.redirect_uri.as_str()),
        ("code_verifier", verifier.secret().as_str()),
    ];
    let (status, first) = p.token_form(&exchange, Some((&p.client_id, &p.secret))).await;
    assert_eq!(status, 200);
    let (status, body) = p.token_form(&exchange, Some((&p.client_id, &p.secret))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        error_code(p.api("/api/auth/me", first["access_token"].as_str().unwrap()).await).await,
        (401, "invalid_token".into()),
        "code reuse revokes"
    );

    // RFC 6749 §4.1.3: a redirect_uri named in the authorization request must be repeated at the token
    // endpoint, though the client registered only one; left implied there, it may be left out here.
    let exchange_without_redirect = |code: String| {
        let fields = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("code_verifier", verifier.secret().clone()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>();
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let request =
            p.t.http
                .post(p.t.url("/api/oauth/token"))
                .basic_auth(&p.client_id, Some(&p.secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let code = code_of(p.authorize(&authorize(&[]), &session, "allow").await);
    let (status, body) = exchange_without_redirect(code).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "named, so repeated: {body}");
    let code = code_of(p.authorize(&authorize(&[("redirect_uri", "")]), &session, "allow").await);
    let (status, implied) = exchange_without_redirect(code).await;
    assert_eq!(status, 200, "implied, so it may be left out: {implied}");

    // RFC 7009 §2.1: another client may not revoke this client's token: refused, and the token stands.
    let live = implied["access_token"].as_str().unwrap();
    let r =
        p.t.http
            .post(p.t.url("/api/oauth/revoke"))
            .basic_auth(other["client_id"].as_str().unwrap(), other["client_secret"].as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_urlencoded::Serializer::new(String::new()).append_pair("token", live).finish())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    assert_eq!(p.api("/api/auth/me", live).await.status(), 200, "not revoked");

    // Expired code (an instance whose clock is 10 minutes later).
    let code = code_of(p.authorize(&authorize(&[]), &session, "allow").await);
    let later = p.t.context_for("oauth-token", &[]);
    later.clock.advance(601);
    let form: Vec<(String, String)> = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", p.redirect_uri.as_str()),
        ("code_verifier", verifier.secret().as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{}:{}", p.client_id, p.secret))
    );
    let err = hub::integrations::oauth::token::token(&later, Some(&basic), &form, "203.0.113.7").await.err().unwrap();
    assert_eq!(err.error, "invalid_grant");

    // Client authentication: wrong, absent, both methods at once; a secret in the query is not one.
    let cc = [("grant_type", "client_credentials")];
    assert_eq!(p.token_form(&cc, Some((&p.client_id, "cs_wrong"))).await.1["error"], "invalid_client");
    assert_eq!(
        p.token_form(&[("grant_type", "client_credentials"), ("client_id", &p.client_id)], None).await.1["error"],
        "invalid_client"
    );
    let both = [("grant_type", "client_credentials"), ("client_secret", p.secret.as_str())];
    assert_eq!(p.token_form(&both, Some((&p.client_id, &p.secret))).await.1["error"], "invalid_request");
    let r =
        p.t.http
            .post(p.t.url("/api/oauth/token"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");

    // Refresh with a wider scope.
    let tokens = p.tokens(&session, &["profile"]).await;
    let wider = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens.refresh_token().unwrap().secret().as_str()),
        ("scope", "profile progress:read"),
    ];
    assert_eq!(p.token_form(&wider, Some((&p.client_id, &p.secret))).await.1["error"], "invalid_scope");

    // A public client: PKCE is the only proof, and it cannot introspect or use client credentials.
    let public = p
        .register(
            json!({"name": "Mobile", "redirect_uris": [p.redirect_uri], "allowed_scopes": ["profile"], "public": true}),
        )
        .await;
    assert!(public.get("client_secret").is_none());
    let public_id = public["client_id"].as_str().unwrap();
    let mobile = p.client(public_id, None);
    let (challenge2, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = mobile
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge2)
        .url();
    let code = code_of(p.authorize(url.as_str(), &session, "allow").await);
    let (status, body) = p
        .token_form(
            &[
                ("grant_type", "authorization_code"),
                ("client_id", public_id),
                ("code", &code),
                ("redirect_uri", &p.redirect_uri),
            ],
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "no verifier");
    let (url, _) = mobile.authorize_url(CsrfToken::new_random).add_scope(Scope::new("profile".into())).url();
    let back = p.authorize(url.as_str(), &session, "allow").await;
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"), "public client without PKCE");
    let (challenge3, verifier3) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = mobile
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge3)
        .url();
    let code = code_of(p.authorize(url.as_str(), &session, "allow").await);
    let mobile_tokens = mobile
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier3)
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    // A public client's id is no secret: even after consent, each request waits for the user.
    let (challenge4, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = mobile
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge4)
        .url();
    let page = p.raw.get(url.as_str()).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200, "the consent page again, not a silent redirect");
    let intro = [("token", mobile_tokens.access_token().secret().as_str()), ("client_id", public_id)];
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(intro).finish();
    let r =
        p.t.http
            .post(p.t.url("/api/oauth/introspect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401, "public clients do not introspect");
    let r =
        p.t.http
            .post(p.t.url("/api/oauth/introspect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=x")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401, "unauthenticated introspection");
    // Another client introspecting this app's token learns nothing.
    let other_intro = p
        .client(other["client_id"].as_str().unwrap(), other["client_secret"].as_str())
        .introspect(tokens.access_token())
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    assert!(!other_intro.active());

    // alg confusion: the same claims signed HS256 with the public key as the secret, or unsigned.
    let access = tokens.access_token().secret();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let jwks: Value = p.t.http.get(p.t.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_string);
    let hs = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(x.as_bytes())).unwrap();
    assert_eq!(p.api("/api/auth/me", &hs).await.status(), 401);
    let b64 = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "at+jwt"})), b64(&claims));
    assert_eq!(p.api("/api/auth/me", &none).await.status(), 401);
    let mut forged_claims = claims.clone();
    forged_claims["scope"] = json!("profile webhooks:manage");
    let tampered =
        format!("{}.{}.{}", access.split('.').next().unwrap(), b64(&forged_claims), access.split('.').nth(2).unwrap());
    assert_eq!(p.api("/api/auth/me", &tampered).await.status(), 401, "claims changed after signing");
    // An internal session token is not a partner token, and cannot be introspected as one.
    let intro = p
        .app()
        .introspect(&oauth2::AccessToken::new(session.clone()))
        .request_async(&http_client(&p.t.http))
        .await
        .unwrap();
    assert!(!intro.active());
}

#[tokio::test]
async fn organization_admins_register_and_manage_their_apps_only() {
    let p = Partner::new("oauth-clients").await;
    let bad = |body: Value| {
        let (t, admin) = (&p.t, p.admin.clone());
        async move {
            error_code(t.http.post(t.url("/api/oauth/clients")).bearer_auth(admin).json(&body).send().await.unwrap())
                .await
        }
    };
    let base = json!({"name": "App", "redirect_uris": ["https://app.example/cb"], "allowed_scopes": ["profile"]});
    for (field, value, code) in [
        ("redirect_uris", json!(["https://app.example/cb#x"]), "invalid_redirect_uri"),
        ("redirect_uris", json!(["http://app.example/cb"]), "invalid_redirect_uri"),
        ("redirect_uris", json!(["https://user:pw@app.example/cb"]), "invalid_redirect_uri"),
        ("redirect_uris", json!(["javascript:alert(1)"]), "invalid_redirect_uri"),
        ("redirect_uris", json!([]), "invalid_redirect_uri"),
        ("allowed_scopes", json!(["admin"]), "invalid_client_metadata"),
        ("grant_types", json!(["password"]), "invalid_client_metadata"),
        ("name", json!(""), "invalid_client_metadata"),
    ] {
        let mut body = base.clone();
        body[field] = value;
        assert_eq!(bad(body).await, (400, code.to_string()), "{field}");
    }
    let mut public_cc = base.clone();
    public_cc["public"] = json!(true);
    public_cc["grant_types"] = json!(["client_credentials"]);
    assert_eq!(bad(public_cc).await, (400, "invalid_client_metadata".into()));

    // Listed and read without the secret; rotation shows a new one once, the old one works a day more.
    let listed = p.t.get_json("/api/oauth/clients", &p.admin).await;
    assert_eq!(listed["clients"][0]["client_id"], p.client_id.as_str());
    let path = format!("/api/oauth/clients/{}", p.client_id);
    let one = p.t.get_json(&path, &p.admin).await;
    assert!(one.get("client_secret").is_none() && !one.to_string().contains(&p.secret));
    let r =
        p.t.http.put(p.t.url(&path)).bearer_auth(&p.admin).json(&json!({"rotate_secret": true})).send().await.unwrap();
    let rotated: Value = r.json().await.unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, p.secret);
    for secret in [new_secret, p.secret.as_str()] {
        let (status, _) = p.token_form(&[("grant_type", "client_credentials")], Some((&p.client_id, secret))).await;
        assert_eq!(status, 200);
    }
    // A leaked secret is cut off at once.
    let r =
        p.t.http
            .put(p.t.url(&path))
            .bearer_auth(&p.admin)
            .json(&json!({"revoke_previous": true}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = p.token_form(&[("grant_type", "client_credentials")], Some((&p.client_id, &p.secret))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(p.token_form(&[("grant_type", "client_credentials")], Some((&p.client_id, new_secret))).await.0, 200);
    // Another organization's admin, a teacher, a partner token: no access.
    let (_, stranger) = p.user("oa@elsewhere.example", Role::OrgAdmin, Some("org-elsewhere")).await;
    let r = p.t.http.get(p.t.url(&path)).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "client_not_found".into()));
    let r = p.t.http.delete(p.t.url(&path)).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(p.t.ctx.store().oauth_client(&p.client_id).await.unwrap().is_some(), "the client stands");
    let (_, teacher) = p.user("t@oauth-clients.example", Role::Teacher, None).await;
    assert_eq!(p.t.http.get(p.t.url("/api/oauth/clients")).bearer_auth(&teacher).send().await.unwrap().status(), 403);
    // Metadata (RFC 8414) names every endpoint.
    let meta: Value =
        p.t.http.get(p.t.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["issuer"], p.t.base.as_str());
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(meta["token_endpoint"], p.t.url("/api/oauth/token").as_str());
}

#[tokio::test]
async fn a_partner_app_written_with_authlib_works_unchanged() {
    let p = Partner::new("oauth-authlib").await;
    let (user, session) = p.user("ana@oauth-authlib.example", Role::Student, None).await;
    let python = devstack::repo_root().join(".venv/bin/python");
    assert!(python.exists(), "the test virtualenv is missing: run `make test`, which installs requirements-dev.txt");
    let out = tokio::process::Command::new(python)
        .arg(devstack::repo_root().join("infra/oauth-clients/authlib_client.py"))
        .args([&p.t.base, &p.client_id, &p.secret, &p.redirect_uri, &session])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "authlib client failed: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["issuer"], p.t.base.as_str());
    assert_eq!(seen["state_echoed"], true);
    assert_eq!(seen["scope"], "profile progress:read");
    assert_eq!(seen["me"], user.id.as_str());
    assert_eq!(seen["rotated"], true);
    assert_eq!(seen["reuse_error"], "invalid_grant");
    assert_eq!((seen["revoke_status"].as_u64(), seen["after_revoke_status"].as_u64()), (Some(200), Some(401)));
    assert_eq!(seen["webhooks_status"], 200);
    assert_eq!(seen["webhooks_organization"], p.org.as_str());
}

#[tokio::test]
async fn a_key_rotation_keeps_issued_tokens_valid_and_publishes_both_keys() {
    let p = Partner::new("oauth-rotate").await;
    let (_, session) = p.user("rot@oauth-rotate.example", Role::Student, None).await;
    let before = p.tokens(&session, &["profile"]).await;
    let old_kid = jsonwebtoken::decode_header(before.access_token().secret()).unwrap().kid.unwrap();

    // Rotate the seed the Secrets Manager way; a fresh instance signs with the new key.
    let sm = aws_sdk_secretsmanager::Client::new(&p.t.sdk);
    sm.put_secret_value()
        .secret_id(&p.t.stack.refs["OAuthSigningKey"])
        .secret_string(hub::support::crypto::random_token(48))
        .send()
        .await
        .unwrap();
    let fresh = std::sync::Arc::new(p.t.context_for("oauth-token", &[]));
    let jwks = hub::integrations::oauth::keys::jwks(&fresh).await.unwrap();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids.len(), 2, "current and previous");
    assert_eq!(kids[1], old_kid, "the previous key is still published");
    let claims = hub::integrations::oauth::keys::verify(&fresh, before.access_token().secret()).await.unwrap();
    assert_eq!(claims.client_id, p.client_id, "a token signed before the rotation still verifies");
    let after = hub::integrations::oauth::keys::sign(&fresh, &claims).await.unwrap();
    assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(), Some(kids[0]));
    assert_ne!(kids[0], old_kid);
    assert_eq!(hub::integrations::oauth::keys::verify(&fresh, &after).await.unwrap().sub, claims.sub);
}
