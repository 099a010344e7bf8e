//! Black-box OAuth tests run against two servers: ours, and node-oidc-provider (npm `oidc-provider`,
//! infra/oidc-provider) configured as a plain OAuth server. Whatever passes against both is standard
//! behaviour, not behaviour our tests merely expect of our own code.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;

use hub::domain::auth::Role;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IntrospectionUrl, PkceCodeChallenge, RedirectUrl,
    RevocationUrl, Scope, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::oauth::{Oauth2Client, Partner, http_client, query};

type Consent<'a> = Box<dyn Fn(String) -> Pin<Box<dyn Future<Output = url::Url> + 'a>> + 'a>;

/// An authorization server under test: its endpoints, a confidential client, and how the user's
/// browser part is played (our consent page; the reference's automatic consent).
struct Server<'a> {
    name: &'static str,
    metadata: Value,
    client_id: String,
    secret: String,
    redirect_uri: String,
    consent: Consent<'a>,
    http: reqwest::Client,
}

impl Server<'_> {
    fn client(&self) -> Oauth2Client {
        let m = |k: &str| self.metadata[k].as_str().unwrap().to_string();
        BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.secret.clone()))
            .set_auth_uri(AuthUrl::new(m("authorization_endpoint")).unwrap())
            .set_token_uri(TokenUrl::new(m("token_endpoint")).unwrap())
            .set_revocation_url(RevocationUrl::new(m("revocation_endpoint")).unwrap())
            .set_introspection_url(IntrospectionUrl::new(m("introspection_endpoint")).unwrap())
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).unwrap())
    }

    /// Runs the authorization request `url` (adding or removing nothing) to the redirect back.
    async fn authorize(&self, url: String) -> url::Url {
        (self.consent)(url).await
    }

    /// A code for `scope`, and its PKCE verifier.
    async fn code(&self, scope: &str) -> (String, oauth2::PkceCodeVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client()
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new(scope.into()))
            .set_pkce_challenge(challenge)
            .url();
        let back = self.authorize(url.to_string()).await;
        assert_eq!(query(&back, "state").as_deref(), Some(state.secret().as_str()), "{}", self.name);
        assert!(query(&back, "iss").is_some(), "{}: RFC 9207 iss", self.name);
        (query(&back, "code").unwrap_or_else(|| panic!("{}: no code in {back}", self.name)), verifier)
    }

    async fn active(&self, token: &oauth2::AccessToken) -> bool {
        self.client().introspect(token).request_async(&http_client(&self.http)).await.unwrap().active()
    }

    async fn token_form(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let r = self.post("token_endpoint", fields, &self.secret).await;
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }

    /// A form POST to one of the metadata's endpoints, authenticated with HTTP Basic and `secret`.
    async fn post(&self, endpoint: &str, fields: &[(&str, &str)], secret: &str) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        self.http
            .post(self.metadata[endpoint].as_str().unwrap())
            .basic_auth(&self.client_id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// node-oidc-provider on a free loopback port, stopped on drop.
struct Reference {
    child: tokio::process::Child,
    issuer: String,
}

impl Reference {
    async fn start() -> Self {
        let dir = devstack::repo_root().join("infra/oidc-provider");
        assert!(dir.join("node_modules").exists(), "run `make test` (it runs npm ci in infra/oidc-provider)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("server.mjs"))
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let issuer = line.strip_prefix("listening ").expect("the readiness line").to_string();
        Self { child, issuer }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Follows the reference's redirects with a cookie jar (its login and consent are automatic) until
/// the redirect back to the client.
async fn follow(http: reqwest::Client, mut url: String, redirect_uri: String) -> url::Url {
    let mut jar: Vec<(String, String)> = Vec::new();
    for _ in 0..10 {
        if url.starts_with(&redirect_uri) {
            return url::Url::parse(&url).unwrap();
        }
        let cookies = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let r = http.get(&url).header("cookie", cookies).send().await.unwrap();
        for c in r.headers().get_all("set-cookie") {
            let (pair, _) = c.to_str().unwrap().split_once(';').unwrap_or((c.to_str().unwrap(), ""));
            if let Some((k, v)) = pair.split_once('=') {
                jar.retain(|(name, _)| name != k);
                jar.push((k.to_string(), v.to_string()));
            }
        }
        let Some(location) = r.headers().get("location") else { panic!("reference: {} answered {}", url, r.status()) };
        url = url::Url::parse(&url).unwrap().join(location.to_str().unwrap()).unwrap().to_string();
    }
    panic!("too many redirects")
}

/// Both servers, ready: ours with a registered client and a signed-in user, the reference started.
async fn servers<'a>(ours: &'a Partner, session: &'a str, reference: &Reference) -> Vec<Server<'a>> {
    let raw = ours.raw.clone();
    let ours_metadata: Value = ours
        .t
        .http
        .get(ours.t.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reference_metadata: Value = raw
        .get(format!("{}/.well-known/oauth-authorization-server", reference.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redirect = "http://127.0.0.1:9/callback".to_string();
    vec![
        Server {
            name: "hub",
            metadata: ours_metadata,
            client_id: ours.client_id.clone(),
            secret: ours.secret.clone(),
            redirect_uri: ours.redirect_uri.clone(),
            consent: Box::new(move |url| Box::pin(async move { ours.authorize(&url, session, "allow").await })),
            http: ours.t.http.clone(),
        },
        Server {
            name: "node-oidc-provider",
            metadata: reference_metadata,
            client_id: "bench-client".into(),
            secret: "bench-secret".into(),
            redirect_uri: redirect.clone(),
            consent: Box::new(move |url| Box::pin(follow(raw.clone(), url, redirect.clone()))),
            http: ours.raw.clone(),
        },
    ]
}

#[tokio::test]
async fn both_servers_agree_on_codes_pkce_refresh_rotation_and_reuse() {
    let reference = Reference::start().await;
    let ours = Partner::new("oauth-conf").await;
    let (_, session) = ours.user("conf@oauth-conf.example", Role::Student, None).await;
    for s in servers(&ours, &session, &reference).await {
        let http = http_client(&s.http);
        // Code + PKCE through the oauth2 crate; introspection says active.
        let (code, verifier) = s.code("profile progress:read").await;
        let verifier_text = verifier.secret().clone();
        let tokens = s
            .client()
            .exchange_code(AuthorizationCode::new(code.clone()))
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .unwrap();
        assert!(s.active(tokens.access_token()).await, "{}", s.name);
        // The same code again (by the client itself, verifier and all): refused, and what it issued is revoked.
        let (status, body) = s
            .token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &s.redirect_uri),
                ("code_verifier", &verifier_text),
            ])
            .await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{}", s.name);
        assert!(!s.active(tokens.access_token()).await, "{}: code reuse revokes", s.name);

        // Refresh: rotated; a wider scope refused; the old one again revokes the family.
        let (code, verifier) = s.code("profile").await;
        let tokens = s
            .client()
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .unwrap();
        let first = tokens.refresh_token().unwrap().clone();
        let (status, body) = s
            .token_form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", first.secret()),
                ("scope", "profile webhooks:manage"),
            ])
            .await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{}", s.name);
        let second = s.client().exchange_refresh_token(&first).request_async(&http).await.unwrap();
        assert_ne!(second.refresh_token().unwrap().secret(), first.secret(), "{}: rotation", s.name);
        assert!(s.active(second.access_token()).await, "{}", s.name);
        let (status, body) = s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", first.secret())]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{}", s.name);
        assert!(!s.active(second.access_token()).await, "{}: refresh reuse revokes the family", s.name);

        // PKCE: a wrong verifier is invalid_grant; a missing or plain challenge is refused at authorize.
        let (code, _) = s.code("profile").await;
        let wrong = PkceCodeChallenge::new_random_sha256().1;
        let (status, body) = s
            .token_form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &s.redirect_uri),
                ("code_verifier", wrong.secret()),
            ])
            .await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{}", s.name);
        let (url, _) = s.client().authorize_url(CsrfToken::new_random).add_scope(Scope::new("profile".into())).url();
        let back = s.authorize(url.to_string()).await;
        assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"), "{}: PKCE required", s.name);
        let (url, _) = s.client().authorize_url(CsrfToken::new_random).add_scope(Scope::new("profile".into())).url();
        let plain = format!("{url}&code_challenge={}&code_challenge_method=plain", "p".repeat(43));
        let back = s.authorize(plain).await;
        assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"), "{}: plain refused", s.name);
    }
}

#[tokio::test]
async fn both_servers_agree_on_clients_redirects_and_revocation() {
    let reference = Reference::start().await;
    let ours = Partner::new("oauth-conf2").await;
    let (_, session) = ours.user("conf2@oauth-conf2.example", Role::Student, None).await;
    for s in servers(&ours, &session, &reference).await {
        let http = http_client(&s.http);
        // Client credentials, then revocation (RFC 7009) makes the token inactive.
        let token = s
            .client()
            .exchange_client_credentials()
            .add_scope(Scope::new("webhooks:manage".into()))
            .request_async(&http)
            .await
            .unwrap();
        assert!(s.active(token.access_token()).await, "{}", s.name);
        let r = s.post("revocation_endpoint", &[("token", token.access_token().secret())], &s.secret).await;
        assert_eq!(r.status(), 200, "{}", s.name);
        assert!(!s.active(token.access_token()).await, "{}: revoked", s.name);

        // A wrong secret: 401 invalid_client.
        let r = s
            .post("token_endpoint", &[("grant_type", "client_credentials"), ("scope", "webhooks:manage")], "wrong")
            .await;
        assert_eq!(r.status(), 401, "{}", s.name);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client", "{}", s.name);

        // A redirect URI that is not the registered one: refused without a redirect.
        let (challenge, _) = PkceCodeChallenge::new_random_sha256();
        let (url, _) = s
            .client()
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        for bad in ["http://127.0.0.1:9/callback/x", "http://127.0.0.1:9/Callback", "https://evil.example/callback"] {
            let mut u = url.clone();
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "redirect_uri")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs).append_pair("redirect_uri", bad);
            let cookie = format!("__Host-hub_access={session}");
            let r = ours.raw.get(u.as_str()).header("cookie", cookie).send().await.unwrap();
            assert_eq!(r.status(), 400, "{}: {bad}", s.name);
            assert!(r.headers().get("location").is_none(), "{}: {bad}", s.name);
        }
    }
}
