//! What the fuzz targets share: a tokio runtime, a `hub::Context` whose Secrets Manager is an
//! in-process fake (fixed keys, no network), JWT signing with those keys, and a loopback HTTP
//! server standing in for Clever.
//!
//! The fake answers `GetSecretValue` through the SDK's own `HttpClient` trait, so the real
//! `hub` code paths run unchanged: `CachedKeyRing` fetches each ring once and then serves it from
//! its cache, exactly as in a warm Lambda instance.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Secret ids of the fake stage (the `*_SECRET_ID` variables).
pub const ACCESS: &str = "fuzz/access";
pub const REFRESH: &str = "fuzz/refresh";
pub const SPARK_SSO: &str = "fuzz/spark-sso";
pub const SPARK_WEBHOOK: &str = "fuzz/spark-webhook";

/// Which version of a secret signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Current,
    Previous,
    /// A key the secret never had.
    Foreign,
}

/// The `kid` (Secrets Manager version id) of a version of a secret.
pub fn kid(secret_id: &str, version: Version) -> String {
    match version {
        Version::Current => format!("{secret_id}#v2"),
        Version::Previous => format!("{secret_id}#v1"),
        Version::Foreign => format!("{secret_id}#v0"),
    }
}

/// The key bytes of a version of a secret (at least 32 bytes, as `hub::support::secrets` requires).
pub fn key(secret_id: &str, version: Version) -> Vec<u8> {
    format!("{}-fuzzing-key-0123456789abcdef0123456789abcdef", kid(secret_id, version)).into_bytes()
}

/// A JWT made of exactly these header and claims bytes, HS256-signed with `key`.
pub fn sign_raw(header: &[u8], claims: &[u8], key: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = hub::support::crypto::hmac_sha256(key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Splits at the first NUL byte (which valid JSON never contains raw): two inputs from one.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// A prod-stage context whose only AWS service is the fake Secrets Manager.
pub fn context() -> &'static hub::Context {
    static CONTEXT: OnceLock<hub::Context> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let vars = [
            ("TABLE_NAME", "fuzz"),
            ("EVIDENCE_BUCKET", "fuzz"),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/events"),
            ("ACCESS_TOKEN_SECRET_ID", ACCESS),
            ("REFRESH_TOKEN_SECRET_ID", REFRESH),
            ("SPARK_SSO_SECRET_ID", SPARK_SSO),
            ("SPARK_WEBHOOK_SECRET_ID", SPARK_WEBHOOK),
            ("SPARK_ORGANIZATION_ID", "spark-org"),
        ];
        let config = hub::Config::from_lookup(|k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string()))
            .expect("fuzz configuration");
        let sdk = runtime().block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .test_credentials()
                .http_client(FakeSecretsManager)
                .load(),
        );
        hub::Context::new(config, sdk)
    })
}

/// Answers `GetSecretValue {SecretId, VersionStage}` with the fixed keys; no other call is expected.
#[derive(Clone, Debug)]
struct FakeSecretsManager;

impl HttpConnector for FakeSecretsManager {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body: serde_json::Value =
            request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        let secret_id = body["SecretId"].as_str().unwrap_or_default().to_string();
        let version = match body["VersionStage"].as_str() {
            Some("AWSPREVIOUS") => Version::Previous,
            _ => Version::Current,
        };
        let known = [ACCESS, REFRESH, SPARK_SSO, SPARK_WEBHOOK].contains(&secret_id.as_str());
        let (status, answer) = if known {
            let secret = String::from_utf8(key(&secret_id, version)).expect("ascii key");
            (
                200,
                serde_json::json!({ "Name": secret_id, "VersionId": kid(&secret_id, version), "SecretString": secret }),
            )
        } else {
            (400, serde_json::json!({ "__type": "ResourceNotFoundException", "message": "not found" }))
        };
        let mut response =
            HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(answer.to_string()));
        response.headers_mut().insert("content-type", "application/x-amz-json-1.1");
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for FakeSecretsManager {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// What the loopback server answers: the token endpoint's body, and the body of the first API
/// request after each [`FakeClever::serve`] (later requests, e.g. `next` links, get an empty page);
/// after [`FakeClever::serve_token`], the next API request is refused with a 401 once (Clever
/// rotated the token), so the client fetches the token again.
#[derive(Default)]
struct Answers {
    token: Vec<u8>,
    page: Vec<u8>,
    page_served: bool,
    refuse_next: bool,
}

/// A loopback HTTP/1.1 server (keep-alive, `Content-Length` framing) answering as Clever would, so
/// the real `hub::integrations::clever::client::CleverClient` reads the fuzzer's bytes over a real connection.
pub struct FakeClever {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    answers: Arc<Mutex<Answers>>,
}

impl FakeClever {
    pub fn get() -> &'static FakeClever {
        static SERVER: OnceLock<FakeClever> = OnceLock::new();
        SERVER.get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            let base = format!("http://{}", listener.local_addr().expect("address"));
            let answers = Arc::new(Mutex::new(Answers {
                token: br#"{"data":[{"owner":{"type":"district","id":"district-1"},"access_token":"t"}]}"#.to_vec(),
                ..Default::default()
            }));
            let shared = answers.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let answers = shared.clone();
                    std::thread::spawn(move || {
                        let _ = stream.set_nodelay(true);
                        let mut writer = stream.try_clone().expect("clone stream");
                        let mut reader = BufReader::new(stream);
                        loop {
                            let mut request_line = String::new();
                            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                                return;
                            }
                            loop {
                                let mut header = String::new();
                                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                    return;
                                }
                                if header == "\r\n" {
                                    break;
                                }
                            }
                            let path = request_line.split(' ').nth(1).unwrap_or_default();
                            let (status, body) = {
                                let mut a = answers.lock().unwrap_or_else(|p| p.into_inner());
                                if path.starts_with("/oauth/tokens") {
                                    ("200 OK", a.token.clone())
                                } else if std::mem::take(&mut a.refuse_next) {
                                    ("401 Unauthorized", br#"{"message":"token rotated"}"#.to_vec())
                                } else if !a.page_served {
                                    a.page_served = true;
                                    ("200 OK", a.page.clone())
                                } else {
                                    ("200 OK", br#"{"data":[]}"#.to_vec())
                                }
                            };
                            let head = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&body)).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            FakeClever { base, answers }
        })
    }

    /// The next API request is answered with `page`.
    pub fn serve(&self, page: &[u8]) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        a.page = page.to_vec();
        a.page_served = false;
    }

    /// Token requests are answered with `token`, and the next API request with a 401 (once).
    pub fn serve_token(&self, token: &[u8]) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        a.token = token.to_vec();
        a.refuse_next = true;
        a.page = br#"{"data":[]}"#.to_vec();
        a.page_served = false;
    }

    /// A client of district `district-1` on this server (no retries: every answer is a 200).
    pub fn client(&self, refresh_at: f64) -> hub::integrations::clever::client::CleverClient {
        let settings = hub::integrations::clever::client::CleverSettings {
            oauth_url: format!("{}/oauth/tokens", self.base),
            api_url: self.base.clone(),
            max_retries: 0,
            refresh_at,
            timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let credentials = hub::integrations::clever::client::Credentials {
            client_id: "fuzz".into(),
            client_secret: secrecy::SecretString::from("fuzz-secret"),
        };
        hub::integrations::clever::client::CleverClient::new(settings, "district-1", credentials).expect("Clever client")
    }
}

/// Prints what a target did with an input when `HUB_FUZZ_TRACE` is set (to check that seeds reach
/// the paths they are meant for: `HUB_FUZZ_TRACE=1 cargo +nightly fuzz run T seeds/T -- -runs=0`).
pub fn trace(what: impl FnOnce() -> String) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("HUB_FUZZ_TRACE").is_some()) {
        eprintln!("[trace] {}", what());
    }
}

/// Replaces each `@now`, `@now+N` or `@now-N` (N: up to 12 digits) with the unix time `now` (plus or
/// minus N) in decimal, so a claims seed can name times relative to the clock of the run.
pub fn with_now(claims: &[u8], now: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(claims.len() + 16);
    let mut i = 0;
    while i < claims.len() {
        if !claims[i..].starts_with(b"@now") {
            out.push(claims[i]);
            i += 1;
            continue;
        }
        i += 4;
        let mut value = now as i128;
        if let Some(&sign @ (b'+' | b'-')) = claims.get(i) {
            let digits = claims[i + 1..].iter().take(12).take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                let n: i128 =
                    std::str::from_utf8(&claims[i + 1..i + 1 + digits]).expect("digits").parse().expect("number");
                value = if sign == b'+' { value + n } else { value - n };
                i += 1 + digits;
            }
        }
        out.extend_from_slice(value.to_string().as_bytes());
    }
    out
}
