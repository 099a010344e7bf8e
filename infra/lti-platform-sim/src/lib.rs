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
//!
//! LTI Advantage, for the one tool a test trusts ([`Platform::trust_tool`]: its client id and JWKS URL).
//! Whatever the tool signs is checked against its JWKS, fetched on every use as a platform without a cache
//! would (RS256, key by `kid`, `exp` and `iat`).
//! - Tokens (`POST /token`): the client-credentials grant with a JWT client assertion (`iss` = `sub` = the
//!   client id, `aud` the token URL, a `jti` never seen before) for AGS and NRPS scopes; refusals are the
//!   OAuth 2 errors, and kept.
//! - Assignment and Grade Services: line items (`GET`/`POST /lineitems`, `GET /lineitems/{n}`) and scores
//!   (`POST /lineitems/{n}/scores`, checked as the spec says; a score not newer than the user's last one is
//!   refused with 409, as platforms do). Fault: the next N score posts fail.
//! - Names and Role Provisioning Services (`GET /contexts/{id}/memberships`): the members a test set, in
//!   pages linked by `Link: <..>; rel="next"`. Fault: the roster answers an error status.
//! - Deep Linking return (`POST /deep_link_return`): the tool's `LtiDeepLinkingResponse` JWT, verified and
//!   kept (or the reason it was refused).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK, WWW_AUTHENTICATE};
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

/// AGS scope: read and write line items.
pub const SCOPE_LINEITEM: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem";
/// AGS scope: read line items.
pub const SCOPE_LINEITEM_READONLY: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly";
/// AGS scope: read results.
pub const SCOPE_RESULT_READONLY: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly";
/// AGS scope: post scores.
pub const SCOPE_SCORE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
/// NRPS scope: read a context's members.
pub const SCOPE_MEMBERSHIPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";
/// Every scope the token endpoint grants.
const SERVICE_SCOPES: [&str; 5] =
    [SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE, SCOPE_MEMBERSHIPS];

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const LINEITEM_TYPE: &str = "application/vnd.ims.lis.v2.lineitem+json";
const LINEITEM_CONTAINER_TYPE: &str = "application/vnd.ims.lis.v2.lineitemcontainer+json";
const SCORE_TYPE: &str = "application/vnd.ims.lis.v1.score+json";
const MEMBERSHIP_CONTAINER_TYPE: &str = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";
const LTI_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";
/// How long an access token lives, in seconds.
const TOKEN_LIFETIME: u64 = 3600;

/// Misbehaviour of the platform's endpoints.
#[derive(Debug, Default)]
pub struct Faults {
    /// The JWKS answers after this long.
    pub jwks_delay: Option<Duration>,
    /// The JWKS answers this status (and no keys).
    pub jwks_status: Option<u16>,
    /// The next N score posts answer this status and record nothing (N counts down).
    pub score_failures: Option<(u16, usize)>,
    /// The memberships service answers this status (and no members).
    pub memberships_status: Option<u16>,
    /// The token endpoint answers after this long (a tarpit: longer than any client waits).
    pub token_delay: Option<Duration>,
}

/// The tool the platform trusts: its client id and where its public keys are.
struct Tool {
    client_id: String,
    jwks_url: String,
}

/// An access token the token endpoint issued.
struct IssuedToken {
    scopes: Vec<String>,
    expires: Instant,
}

/// What the services remember.
#[derive(Default)]
struct Services {
    tool: Option<Tool>,
    /// Every client assertion `jti` accepted, so that none is accepted twice.
    used_jtis: HashSet<String>,
    tokens: HashMap<String, IssuedToken>,
    /// Line item `n` is `lineitems[n - 1]` (with its `id` URL), its accepted scores `scores[n - 1]`.
    lineitems: Vec<Value>,
    scores: Vec<Vec<Value>>,
    /// The timestamp (ns since the epoch) of the last accepted score, by line item index and user id.
    last_score: HashMap<(usize, String), i128>,
    /// Members by the context id as a URL path segment: (context id, members).
    rosters: HashMap<String, (String, Vec<Value>)>,
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
    /// Requests to the token endpoint.
    pub token_requests: Arc<Mutex<usize>>,
    /// Why each refused token request was refused (`error: description`), in order.
    pub token_rejections: Arc<Mutex<Vec<String>>>,
    /// Members per page of the memberships service (a smaller `limit` in the request wins).
    pub page_size: Arc<Mutex<usize>>,
    /// Requests to the memberships service.
    pub membership_requests: Arc<Mutex<usize>>,
    /// The verified payload of each accepted deep linking response, in order.
    pub deep_link_responses: Arc<Mutex<Vec<Value>>>,
    /// Why each refused deep linking response was refused, in order.
    pub deep_link_rejections: Arc<Mutex<Vec<String>>>,
    services: Arc<Mutex<Services>>,
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
            token_requests: Default::default(),
            token_rejections: Default::default(),
            page_size: Arc::new(Mutex::new(100)),
            membership_requests: Default::default(),
            deep_link_responses: Default::default(),
            deep_link_rejections: Default::default(),
            services: Default::default(),
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

    /// Trusts the tool registered with `client_id`, whose public keys are the JWKS at `jwks_url`: its client
    /// assertions and deep linking responses are checked against them.
    pub fn trust_tool(&self, client_id: &str, jwks_url: &str) {
        let tool = Tool { client_id: client_id.to_string(), jwks_url: jwks_url.to_string() };
        self.services.lock().unwrap().tool = Some(tool);
    }

    /// The token URL a registration names (and the `aud` a client assertion must carry).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// The `deep_link_return_url` of deep linking requests.
    pub fn deep_link_return_url(&self) -> String {
        format!("{}/deep_link_return", self.base_url)
    }

    /// A line item (as an instructor adds a gradebook column), returning its URL.
    pub fn create_lineitem(&self, label: &str, score_maximum: f64, resource_link_id: Option<&str>) -> String {
        let mut item = json!({"label": label, "scoreMaximum": score_maximum});
        if let Some(resource_link_id) = resource_link_id {
            item["resourceLinkId"] = json!(resource_link_id);
        }
        self.store_lineitem(item)["id"].as_str().unwrap_or_default().to_string()
    }

    /// Every line item, in the order they were made (by a test or by the tool).
    pub fn lineitems(&self) -> Vec<Value> {
        self.services.lock().unwrap().lineitems.clone()
    }

    /// The scores accepted for the line item at `lineitem_url`, in order.
    pub fn scores(&self, lineitem_url: &str) -> Vec<Value> {
        let services = self.services.lock().unwrap();
        let index = services.lineitems.iter().position(|item| item["id"].as_str() == Some(lineitem_url));
        index.map(|i| services.scores[i].clone()).unwrap_or_default()
    }

    /// The members of the context `context_id` (any JSON each), returning its memberships URL.
    pub fn set_members(&self, context_id: &str, members: Vec<Value>) -> String {
        let segment = path_segment(context_id);
        let url = self.membership_url(&segment);
        self.services.lock().unwrap().rosters.insert(segment, (context_id.to_string(), members));
        url
    }

    fn membership_url(&self, segment: &str) -> String {
        format!("{}/contexts/{segment}/memberships", self.base_url)
    }

    /// Keeps a line item under the next number, with its `id` URL; returns it.
    fn store_lineitem(&self, mut item: Value) -> Value {
        let mut services = self.services.lock().unwrap();
        item["id"] = json!(format!("{}/lineitems/{}", self.base_url, services.lineitems.len() + 1));
        services.lineitems.push(item.clone());
        services.scores.push(Vec::new());
        item
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

    /// The JWKS, with its faults.
    async fn jwks(&self) -> Response {
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

    /// Verifies a JWT the trusted tool signed: header `alg` RS256, the key its `kid` names in the tool's
    /// JWKS (fetched on every call: no cache to hide a key the tool stopped publishing), the signature, then
    /// a payload that has not expired and was not issued in the future (60 s of clock skew).
    async fn verify_tool_jwt(&self, jwt: &str) -> Result<Value, String> {
        let jwks_url = self.services.lock().unwrap().tool.as_ref().map(|tool| tool.jwks_url.clone());
        let jwks_url = jwks_url.ok_or("no tool is trusted")?;
        let segments: Vec<&str> = jwt.split('.').collect();
        let [header, payload, signature] = segments[..] else {
            return Err("not a compact JWS (three dot-separated parts)".into());
        };
        let header = decode_json(header).ok_or("header is not base64url JSON")?;
        if header["alg"].as_str() != Some("RS256") {
            return Err(format!("header alg {} is not RS256", header["alg"]));
        }
        let kid = header["kid"].as_str().ok_or("header has no kid")?;
        let jwks = fetch_json(&jwks_url).await.map_err(|e| format!("tool JWKS: {e}"))?;
        let keys = jwks["keys"].as_array().ok_or("tool JWKS has no keys array")?;
        let jwk = keys.iter().find(|key| key["kid"].as_str() == Some(kid));
        let jwk = jwk.ok_or_else(|| format!("kid {kid} is not in the tool's JWKS"))?;
        let component = |name: &str| jwk[name].as_str().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        let (Some(n), Some(e)) = (component("n"), component("e")) else {
            return Err(format!("JWK {kid} has no RSA n and e"));
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "signature is not base64url")?;
        let signing_input = &jwt[..jwt.rfind('.').unwrap_or_default()];
        let key = RsaPublicKeyComponents { n: without_leading_zeros(&n), e: without_leading_zeros(&e) };
        key.verify(&RSA_PKCS1_2048_8192_SHA256, signing_input.as_bytes(), &signature)
            .map_err(|_| "signature does not verify")?;
        let claims = decode_json(payload).filter(Value::is_object).ok_or("payload is not a base64url JSON object")?;
        let now = unix_now();
        match claims["exp"].as_f64() {
            None => return Err("no exp".into()),
            Some(exp) if exp <= now => return Err("expired (exp)".into()),
            _ => {}
        }
        match claims["iat"].as_f64() {
            None => return Err("no iat".into()),
            Some(iat) if iat > now + 60.0 => return Err("issued in the future (iat)".into()),
            _ => {}
        }
        Ok(claims)
    }

    /// The token endpoint (client credentials with a JWT client assertion, RFC 7523, as the LTI Security
    /// Framework asks); every request counted, every refusal kept.
    async fn token(&self, body: &[u8]) -> Response {
        *self.token_requests.lock().unwrap() += 1;
        let delay = self.faults.lock().unwrap().token_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match self.grant(body).await {
            Ok(granted) => answer(200, &granted),
            Err((error, description)) => {
                self.token_rejections.lock().unwrap().push(format!("{error}: {description}"));
                let status = if error == "invalid_client" { 401 } else { 400 };
                answer(status, &json!({"error": error, "error_description": description}))
            }
        }
    }

    /// An access token for a token request, or the OAuth 2 error and why.
    async fn grant(&self, body: &[u8]) -> Result<Value, (&'static str, String)> {
        let form = parse_form(body);
        match param(&form, "grant_type") {
            Some("client_credentials") => {}
            None => return Err(("invalid_request", "no grant_type".into())),
            Some(other) => return Err(("unsupported_grant_type", format!("grant_type {other}"))),
        }
        if param(&form, "client_assertion_type") != Some(JWT_BEARER) {
            return Err(("invalid_client", "client_assertion_type is not jwt-bearer".into()));
        }
        let assertion = param(&form, "client_assertion").ok_or(("invalid_client", "no client_assertion".into()))?;
        let claims = self.verify_tool_jwt(assertion).await.map_err(|reason| ("invalid_client", reason))?;
        let mut services = self.services.lock().unwrap();
        let client_id = services.tool.as_ref().map(|tool| tool.client_id.as_str());
        if claims["iss"].as_str() != client_id || claims["sub"].as_str() != client_id {
            return Err(("invalid_client", "iss and sub must both be the client id".into()));
        }
        if !audience_has(&claims["aud"], &self.token_url()) {
            return Err(("invalid_client", "aud is not the token URL".into()));
        }
        let jti = claims["jti"].as_str().filter(|jti| !jti.is_empty());
        let jti = jti.ok_or(("invalid_client", "no jti".to_string()))?;
        if !services.used_jtis.insert(jti.to_string()) {
            return Err(("invalid_grant", format!("jti {jti} was already used")));
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in param(&form, "scope").unwrap_or_default().split_whitespace() {
            if !SERVICE_SCOPES.contains(&scope) {
                return Err(("invalid_scope", format!("scope {scope} is not offered")));
            }
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_string());
            }
        }
        if scopes.is_empty() {
            return Err(("invalid_scope", "no scope".into()));
        }
        let access_token = random_token();
        let scope = scopes.join(" ");
        let expires = Instant::now() + Duration::from_secs(TOKEN_LIFETIME);
        services.tokens.insert(access_token.clone(), IssuedToken { scopes, expires });
        Ok(json!({"access_token": access_token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "scope": scope}))
    }

    /// The refusal of a request unless its bearer token is one this platform issued, unexpired (else 401)
    /// and granted one of `scopes` (else 403).
    fn token_refusal(&self, headers: &HeaderMap, scopes: &[&str]) -> Option<Response> {
        let presented = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '));
        let presented = presented.filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
        let services = self.services.lock().unwrap();
        let issued = presented.and_then(|token| services.tokens.get(token));
        let Some(issued) = issued.filter(|issued| issued.expires > Instant::now()) else {
            let mut response = answer(401, &json!({"error": "invalid_token"}));
            response.headers_mut().insert(WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
            return Some(response);
        };
        let granted = issued.scopes.iter().any(|scope| scopes.contains(&scope.as_str()));
        (!granted).then(|| answer(403, &json!({"error": "insufficient_scope"})))
    }

    /// The index of line item `n` (a path segment), if there is one.
    fn lineitem_index(&self, n: &str) -> Option<usize> {
        let count = self.services.lock().unwrap().lineitems.len();
        n.parse::<usize>().ok().filter(|n| (1..=count).contains(n)).map(|n| n - 1)
    }

    /// AGS `GET lineitems`: the line items, filtered by `resource_link_id`, `resource_id` and `tag`.
    fn list_lineitems(&self, headers: &HeaderMap, query: &str) -> Response {
        if let Some(denied) = self.token_refusal(headers, &[SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY]) {
            return denied;
        }
        let params = parse_form(query.as_bytes());
        let filters = [("resource_link_id", "resourceLinkId"), ("resource_id", "resourceId"), ("tag", "tag")];
        let items: Vec<Value> = (self.services.lock().unwrap().lineitems.iter())
            .filter(|item| filters.iter().all(|(q, field)| param(&params, q).is_none_or(|v| item[*field] == v)))
            .cloned()
            .collect();
        respond(200, LINEITEM_CONTAINER_TYPE, Value::Array(items).to_string())
    }

    /// AGS `POST lineitems`: a new line item from the tool (`label` and a positive `scoreMaximum` required).
    fn add_lineitem(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some(denied) = self.token_refusal(headers, &[SCOPE_LINEITEM]) {
            return denied;
        }
        let Ok(posted) = serde_json::from_slice::<Value>(body) else {
            return answer(400, &json!({"error": "body is not JSON"}));
        };
        let label = posted["label"].as_str().filter(|label| !label.is_empty());
        let score_maximum = posted["scoreMaximum"].as_f64().filter(|max| *max > 0.0);
        let (Some(label), Some(score_maximum)) = (label, score_maximum) else {
            return answer(400, &json!({"error": "a line item needs a label and a positive scoreMaximum"}));
        };
        let mut item = json!({"label": label, "scoreMaximum": score_maximum});
        for field in ["resourceLinkId", "tag", "resourceId"] {
            match &posted[field] {
                Value::Null => {}
                Value::String(value) => item[field] = json!(value),
                _ => return answer(400, &json!({"error": format!("{field} is not a string")})),
            }
        }
        respond(201, LINEITEM_TYPE, self.store_lineitem(item).to_string())
    }

    /// AGS `GET lineitem`: one line item.
    fn get_lineitem(&self, headers: &HeaderMap, n: &str) -> Response {
        if let Some(denied) = self.token_refusal(headers, &[SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY]) {
            return denied;
        }
        let Some(index) = self.lineitem_index(n) else {
            return answer(404, &json!({"error": "no such line item"}));
        };
        respond(200, LINEITEM_TYPE, self.services.lock().unwrap().lineitems[index].to_string())
    }

    /// AGS `POST lineitem/scores`: a user's score, checked as the spec says, and refused (409) unless its
    /// timestamp is later than the last one accepted for the same user and line item, as platforms do.
    fn post_score(&self, headers: &HeaderMap, n: &str, body: &[u8]) -> Response {
        {
            let mut faults = self.faults.lock().unwrap();
            if let Some((status, left)) = faults.score_failures {
                faults.score_failures = (left > 1).then_some((status, left - 1));
                if left > 0 {
                    return answer(status, &json!({"error": "injected failure"}));
                }
            }
        }
        if let Some(denied) = self.token_refusal(headers, &[SCOPE_SCORE]) {
            return denied;
        }
        let Some(index) = self.lineitem_index(n) else {
            return answer(404, &json!({"error": "no such line item"}));
        };
        if !has_media_type(headers.get(CONTENT_TYPE), SCORE_TYPE) {
            return answer(415, &json!({"error": format!("content type must be {SCORE_TYPE}")}));
        }
        let Ok(score) = serde_json::from_slice::<Value>(body) else {
            return answer(400, &json!({"error": "body is not JSON"}));
        };
        let at = match check_score(&score) {
            Ok(at) => at,
            Err(reason) => return answer(400, &json!({"error": reason})),
        };
        let user = score["userId"].as_str().unwrap_or_default().to_string();
        let mut services = self.services.lock().unwrap();
        if services.last_score.get(&(index, user.clone())).is_some_and(|last| at <= *last) {
            return answer(409, &json!({"error": "timestamp is not later than the last score's for this user"}));
        }
        services.last_score.insert((index, user), at);
        services.scores[index].push(score);
        answer(200, &json!({}))
    }

    /// NRPS: a context's members, `page_size` (or a smaller `limit`) at a time, with a `Link` to the next
    /// page while there is one; an optional `role` filter.
    fn memberships(&self, headers: &HeaderMap, segment: &str, query: &str) -> Response {
        *self.membership_requests.lock().unwrap() += 1;
        if let Some(status) = self.faults.lock().unwrap().memberships_status {
            return answer(status, &json!({"error": "injected failure"}));
        }
        if let Some(denied) = self.token_refusal(headers, &[SCOPE_MEMBERSHIPS]) {
            return denied;
        }
        if !headers.get_all(ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains(MEMBERSHIP_CONTAINER_TYPE))) {
            return answer(406, &json!({"error": format!("accept must include {MEMBERSHIP_CONTAINER_TYPE}")}));
        }
        let Some((context_id, members)) = self.services.lock().unwrap().rosters.get(segment).cloned() else {
            return answer(404, &json!({"error": "no such context"}));
        };
        let params = parse_form(query.as_bytes());
        let limit = param(&params, "limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let size = (*self.page_size.lock().unwrap()).min(limit.unwrap_or(usize::MAX)).max(1);
        let offset = match param(&params, "page") {
            None => 0,
            Some(page) => match decode_page(page) {
                Some(offset) => offset,
                None => return answer(400, &json!({"error": "bad page"})),
            },
        };
        let role = param(&params, "role");
        let selected: Vec<&Value> = members.iter().filter(|m| role.is_none_or(|role| has_role(m, role))).collect();
        let page: Vec<&Value> = selected.iter().skip(offset).take(size).copied().collect();
        let url = self.membership_url(segment);
        let container = json!({
            "id": url,
            "context": {"id": context_id, "label": context_id, "title": context_id},
            "members": page,
        });
        let mut response = respond(200, MEMBERSHIP_CONTAINER_TYPE, container.to_string());
        if offset + size < selected.len() {
            let mut next = url::form_urlencoded::Serializer::new(String::new());
            if let Some(limit) = limit {
                next.append_pair("limit", &limit.to_string());
            }
            if let Some(role) = role {
                next.append_pair("role", role);
            }
            next.append_pair("page", &encode_page(offset + size));
            let link = format!("<{url}?{}>; rel=\"next\"", next.finish());
            response.headers_mut().insert(LINK, link.parse().expect("valid header"));
        }
        response
    }

    /// The deep linking return: the tool's signed `LtiDeepLinkingResponse`, kept when it verifies.
    async fn deep_link_return(&self, body: &[u8]) -> Response {
        match self.deep_link_response(body).await {
            Ok(claims) => {
                self.deep_link_responses.lock().unwrap().push(claims);
                respond(
                    200,
                    "text/html; charset=utf-8",
                    "<!doctype html><html><body><p>Content added</p></body></html>",
                )
            }
            Err(reason) => {
                self.deep_link_rejections.lock().unwrap().push(reason.clone());
                answer(400, &json!({"error": reason}))
            }
        }
    }

    /// The verified payload of a deep linking response form, or why it is refused.
    async fn deep_link_response(&self, body: &[u8]) -> Result<Value, String> {
        let form = parse_form(body);
        let jwt = param(&form, "JWT").ok_or("no JWT field")?;
        let claims = self.verify_tool_jwt(jwt).await?;
        let client_id = self.services.lock().unwrap().tool.as_ref().map(|tool| tool.client_id.clone());
        let claim = |name: &str| claims[format!("{LTI_CLAIM}{name}")].as_str();
        if claims["iss"].as_str() != client_id.as_deref() {
            Err("iss is not the client id".into())
        } else if !audience_has(&claims["aud"], &self.base_url) {
            Err("aud is not the platform issuer".into())
        } else if claims["nonce"].as_str().is_none_or(str::is_empty) {
            Err("no nonce".into())
        } else if claim("message_type") != Some("LtiDeepLinkingResponse") {
            Err("message_type is not LtiDeepLinkingResponse".into())
        } else if claim("version") != Some("1.3.0") {
            Err("version is not 1.3.0".into())
        } else if claim("deployment_id").is_none_or(str::is_empty) {
            Err("no deployment_id".into())
        } else {
            Ok(claims)
        }
    }

    async fn handle(&self, req: hyper::Request<hyper::body::Incoming>) -> Response {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
            return answer(400, &json!({"error": "unreadable body"}));
        };
        let (headers, query) = (&parts.headers, parts.uri.query().unwrap_or(""));
        let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
        match (parts.method.as_str(), segments.as_slice()) {
            (_, ["authorize"]) => self.authorize(query),
            (_, ["jwks"]) => self.jwks().await,
            ("POST", ["token"]) => self.token(&body).await,
            ("GET", ["lineitems"]) => self.list_lineitems(headers, query),
            ("POST", ["lineitems"]) => self.add_lineitem(headers, &body),
            ("GET", ["lineitems", n]) => self.get_lineitem(headers, n),
            ("POST", ["lineitems", n, "scores"]) => self.post_score(headers, n, &body),
            ("GET", ["contexts", context, "memberships"]) => self.memberships(headers, context, query),
            ("POST", ["deep_link_return"]) => self.deep_link_return(&body).await,
            _ => answer(404, &json!({"error": "not found"})),
        }
    }
}

type Response = hyper::Response<Full<Bytes>>;

/// A score's problems as the AGS spec defines a score, or its timestamp (ns since the epoch).
fn check_score(score: &Value) -> Result<i128, String> {
    const ACTIVITY: [&str; 5] = ["Initialized", "Started", "InProgress", "Submitted", "Completed"];
    const GRADING: [&str; 5] = ["FullyGraded", "Pending", "PendingManual", "Failed", "NotReady"];
    if !score.is_object() {
        return Err("a score is a JSON object".into());
    }
    if score["userId"].as_str().is_none_or(str::is_empty) {
        return Err("userId is not a string".into());
    }
    let at = score["timestamp"].as_str().and_then(rfc3339_nanos);
    let at = at.ok_or("timestamp is not an RFC 3339 date-time")?;
    if !score["activityProgress"].as_str().is_some_and(|p| ACTIVITY.contains(&p)) {
        return Err("activityProgress is not one of the spec's values".into());
    }
    if !score["gradingProgress"].as_str().is_some_and(|p| GRADING.contains(&p)) {
        return Err("gradingProgress is not one of the spec's values".into());
    }
    let number = |field: &str| score.get(field).map(|v| v.as_f64());
    match number("scoreGiven") {
        Some(Some(given)) if given >= 0.0 => {}
        Some(_) => return Err("scoreGiven is not a number >= 0".into()),
        None => {}
    }
    match number("scoreMaximum") {
        Some(Some(maximum)) if maximum > 0.0 => {}
        Some(_) => return Err("scoreMaximum is not a number > 0".into()),
        None if score.get("scoreGiven").is_some() => return Err("scoreGiven without scoreMaximum".into()),
        None => {}
    }
    if score.get("comment").is_some_and(|c| !c.is_string()) {
        return Err("comment is not a string".into());
    }
    Ok(at)
}

/// GETs a JSON document, giving up after 5 s.
async fn fetch_json(url: &str) -> Result<Value, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// A JWT segment: base64url (no padding) of JSON.
fn decode_json(segment: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}

/// An RSA component as AWS-LC wants it (some JWKs carry a leading zero byte).
fn without_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().skip_while(|b| **b == 0).copied().collect()
}

/// Whether a JWT's `aud` (a string, or an array of strings) names `audience`.
fn audience_has(aud: &Value, audience: &str) -> bool {
    match aud {
        Value::String(aud) => aud == audience,
        Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        _ => false,
    }
}

/// Whether a member has `role`: the full URI, or the short name after its `#`.
fn has_role(member: &Value, role: &str) -> bool {
    let roles = member["roles"].as_array().into_iter().flatten().filter_map(Value::as_str);
    roles.into_iter().any(|r| r == role || r.rsplit_once('#').is_some_and(|(_, short)| short == role))
}

/// Whether a `Content-Type` header names `media_type` (parameters aside).
fn has_media_type(header: Option<&hyper::header::HeaderValue>, media_type: &str) -> bool {
    let value = header.and_then(|v| v.to_str().ok()).unwrap_or_default();
    value.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(media_type)
}

/// Form-urlencoded pairs (a query or a form body), in order.
fn parse_form(body: &[u8]) -> Query {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `name`.
fn param<'a>(params: &'a Query, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An opaque `page` parameter for the member at `offset`.
fn encode_page(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("members:{offset}"))
}

fn decode_page(page: &str) -> Option<usize> {
    let page = String::from_utf8(URL_SAFE_NO_PAD.decode(page).ok()?).ok()?;
    page.strip_prefix("members:")?.parse().ok()
}

/// 32 random bytes, base64url: an access token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// `s` as one URL path segment: unreserved characters kept, every other byte percent-encoded.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 date-time (`2024-05-01T10:00:00.123Z`, any offset).
fn rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || separators.iter().any(|(i, c)| b[*i] != *c) {
        return None;
    }
    let (year, month, day) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (hour, minute, second) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let kept = &fraction[..len.min(9)];
        nanos = i128::from(digits(kept)?) * 10i128.pow(9 - kept.len() as u32);
        rest = &fraction[len..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' { -(h * 60 + m) } else { h * 60 + m }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

/// A run of ASCII digits as a number.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(month - 1) as usize]
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Text for a quoted HTML attribute.
fn attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

fn answer(status: u16, body: &Value) -> Response {
    respond(status, "application/json", body.to_string())
}

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_nanos("2000-03-01T00:00:00Z"), Some(951_868_800 * 1_000_000_000));
        assert_eq!(rfc3339_nanos("2024-01-01T01:00:00+01:00"), rfc3339_nanos("2024-01-01T00:00:00Z"));
        assert_eq!(rfc3339_nanos("1969-12-31T23:59:59.5Z"), Some(-500_000_000));
        assert_eq!(
            rfc3339_nanos("2024-02-29T12:00:00.123456789123-05:30").map(|n| n % 1_000_000_000),
            Some(123_456_789)
        );
        assert!(rfc3339_nanos("2024-05-01T10:00:00.1Z") < rfc3339_nanos("2024-05-01T10:00:00.10000001Z"));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
            "2024-13-01T10:00:00Z",
            "2024-05-01T10:00:00+0100",
            "2024-05-01T24:00:00Z",
            "2024-05-01",
            "2024-05-01T10:00:00Zjunk",
        ] {
            assert_eq!(rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn audiences_roles_and_pages() {
        assert!(audience_has(&json!("a"), "a"));
        assert!(audience_has(&json!(["b", "a"]), "a"));
        assert!(!audience_has(&json!(["b"]), "a"));
        assert!(!audience_has(&Value::Null, "a"));
        let member = json!({"roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]});
        assert!(has_role(&member, "Learner"));
        assert!(has_role(&member, "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"));
        assert!(!has_role(&member, "Instructor"));
        assert_eq!(decode_page(&encode_page(200)), Some(200));
        assert_eq!(path_segment("course 1/é~"), "course%201%2F%C3%A9~");
    }
}
