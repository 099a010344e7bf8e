//! A local LTI 1.3 platform (an LMS as a tool sees it), in the style of the Clever simulator: written
//! from `shared/reference/lti/README.md`, not from our tool's code.
//!
//! It has its own RSA keys (2048-bit, from AWS-LC) and serves them as a JWKS (`GET /jwks`); it signs
//! launches (`id_token`s) of any claims, with a normal header (`alg` RS256, the current `kid`) or any
//! header at all, for the certification cases that test headers. Its OIDC authorization endpoint
//! (`GET /authorize`) answers a tool's login redirect as an LMS does: for the `login_hint` a test
//! prepared, the launch claims with the tool's `nonce` (and `iat`/`exp` now), signed, in an
//! auto-submitting form POST of `id_token` and `state` to the tool's `redirect_uri`. Faults: a rotated key
//! (the old one leaves the JWKS), a slow JWKS, a JWKS that answers an error; every JWKS request is counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// One signing key of the platform.
pub struct PlatformKey {
    pub kid: String,
    pair: KeyPair,
}

impl PlatformKey {
    pub fn generate(kid: &str) -> anyhow::Result<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        Ok(Self { kid: kid.to_string(), pair })
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// A JWS of `claims` under exactly `header` (RS256 signature whatever the header says).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A JWS of `claims` with the normal header: `alg` RS256, `typ` JWT and this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}), claims)
    }
}

/// Misbehaviour of the JWKS endpoint.
#[derive(Debug, Default)]
pub struct Faults {
    /// The JWKS answers after this long.
    pub jwks_delay: Option<Duration>,
    /// The JWKS answers this status (and no keys).
    pub jwks_status: Option<u16>,
}

/// A request's query parameters, in order.
pub type Query = Vec<(String, String)>;

/// A running platform.
#[derive(Clone)]
pub struct Platform {
    pub base_url: String,
    /// `keys[0]` signs; the others are still published (a rotation's previous key) until dropped.
    pub keys: Arc<Mutex<Vec<PlatformKey>>>,
    pub faults: Arc<Mutex<Faults>>,
    /// Requests to the JWKS.
    pub jwks_requests: Arc<Mutex<usize>>,
    /// Launch claims by `login_hint`, for the authorization endpoint.
    pub prepared: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    /// Every authorization request's query, in order.
    pub authorize_requests: Arc<Mutex<Vec<Query>>>,
}

impl Platform {
    /// Serves the platform on a loopback port (0: any free port) with one signing key.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let platform = Self {
            base_url: format!("http://{}", listener.local_addr()?),
            keys: Arc::new(Mutex::new(vec![PlatformKey::generate("platform-key-1")?])),
            faults: Default::default(),
            jwks_requests: Default::default(),
            prepared: Default::default(),
            authorize_requests: Default::default(),
        };
        let server = platform.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let platform = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let platform = platform.clone();
                        async move { Ok::<_, std::convert::Infallible>(platform.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(platform)
    }

    /// The JWKS URL a registration names.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base_url)
    }

    /// Signs `claims` with the current key and the normal header.
    pub fn sign(&self, claims: &Value) -> String {
        self.keys.lock().unwrap()[0].sign(claims)
    }

    /// Signs `claims` with the current key under exactly `header`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.keys.lock().unwrap()[0].sign_with_header(header, claims)
    }

    /// A new signing key; the previous one stays published when `keep_previous`.
    pub fn rotate_key(&self, keep_previous: bool) -> anyhow::Result<String> {
        let mut keys = self.keys.lock().unwrap();
        let kid = format!("platform-key-{}", keys.len() + 1);
        if !keep_previous {
            keys.clear();
        }
        keys.insert(0, PlatformKey::generate(&kid)?);
        Ok(kid)
    }

    /// The launch the authorization endpoint answers for `login_hint` (a user about to launch).
    pub fn prepare(&self, login_hint: &str, claims: Value) {
        self.prepared.lock().unwrap().insert(login_hint.to_string(), claims);
    }

    /// The authorization endpoint: the prepared launch for the request's `login_hint`, signed with the
    /// request's `nonce`, as a form POST to its `redirect_uri`.
    fn authorize(&self, query: &str) -> hyper::Response<Full<Bytes>> {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        self.authorize_requests.lock().unwrap().push(params.clone());
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let Some(mut claims) = self.prepared.lock().unwrap().get(&param("login_hint")).cloned() else {
            return answer(400, &json!({"error": "login_required"}));
        };
        if param("response_type") != "id_token" || param("response_mode") != "form_post" || param("scope") != "openid" {
            return answer(400, &json!({"error": "invalid_request"}));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        claims["nonce"] = json!(param("nonce"));
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + 300);
        let id_token = self.sign(&claims);
        let html = format!(
            "<!doctype html><html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"id_token\" value=\"{id_token}\">\
             <input type=\"hidden\" name=\"state\" value=\"{}\"><button>Continue</button></form></body></html>",
            attribute(&param("redirect_uri")),
            attribute(&param("state")),
        );
        hyper::Response::builder()
            .status(200)
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(html)))
            .expect("valid response")
    }

    async fn handle(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        match req.uri().path() {
            "/authorize" => self.authorize(req.uri().query().unwrap_or("")),
            "/jwks" => {
                *self.jwks_requests.lock().unwrap() += 1;
                let (delay, status) = {
                    let f = self.faults.lock().unwrap();
                    (f.jwks_delay, f.jwks_status)
                };
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                if let Some(status) = status {
                    return answer(status, &json!({"error": "injected failure"}));
                }
                let keys: Vec<Value> = self.keys.lock().unwrap().iter().map(PlatformKey::jwk).collect();
                answer(200, &json!({"keys": keys}))
            }
            _ => answer(404, &json!({"error": "not found"})),
        }
    }
}

/// Text for a quoted HTML attribute.
fn attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

fn answer(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}
