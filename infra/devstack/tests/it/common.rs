//! A fresh, isolated local stack per test, with the dev gateway serving it on a random port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use devstack::gateway::Gateway;
use devstack::provision::{LocalStack, provision};
use devstack::template::Template;
use http_body_util::Full;
use hub::domain::auth::provisioning::{ExternalProfile, provision_as_operator};
use hub::domain::auth::sessions::{TokenPair, start_session};
use hub::domain::auth::{Role, User};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub struct TestStack {
    pub base: String,
    pub gateway: Arc<Gateway>,
    pub ctx: Arc<hub::Context>,
    pub http: reqwest::Client,
    pub sdk: SdkConfig,
    pub stack: LocalStack,
    pub template: Template,
}

pub async fn sdk() -> SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok() && std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok(),
        "integration tests need the local AWS stack (moto and DynamoDB Local): run them with `make test`"
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

impl TestStack {
    pub async fn new(name: &str) -> Self {
        Self::with_parameters(name, &[]).await
    }

    /// A stack whose template parameters differ from the local defaults (e.g. a test receiver's URL).
    pub async fn with_parameters(name: &str, extra: &[(&str, &str)]) -> Self {
        let sdk = sdk().await;
        let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
        let stack_name = format!("t-{name}-{:08x}", rand::random::<u32>());
        // Bound first: links in emails point at this gateway's pages.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let own = [("PublicBaseUrl", base.as_str())];
        let stack = provision(
            &template,
            &stack_name,
            &sdk,
            &[devstack::provision::LOCAL_PARAMETERS.as_slice(), &own, extra].concat(),
        )
        .await
        .unwrap();
        let gateway = Arc::new(Gateway::new(&template, &stack, &sdk).unwrap());
        tokio::spawn(gateway.clone().serve(listener));
        let def = template.functions().unwrap().into_iter().find(|f| f.binary == "auth-me").unwrap();
        let env = stack.function_env(&template, &def.logical_id).unwrap();
        let ctx = Arc::new(hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned()).unwrap(), sdk.clone()));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Self { base, gateway, ctx, http, sdk, stack, template }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with a bearer token, as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap().json().await.unwrap()
    }

    pub fn env(&self, binary: &str) -> BTreeMap<String, String> {
        let def = self.template.functions().unwrap().into_iter().find(|f| f.binary == binary).unwrap();
        self.stack.function_env(&self.template, &def.logical_id).unwrap()
    }

    /// A fresh context (empty caches) of this stack, as a new Lambda instance would have.
    pub fn new_context(&self) -> hub::Context {
        self.context_for("auth-me", &[])
    }

    /// A context whose configuration differs in one variable (to break a dependency on purpose).
    pub fn context_with(&self, key: &str, value: &str) -> hub::Context {
        self.context_for("auth-me", &[(key, value)])
    }

    /// A fresh context of one function, with some variables overridden.
    pub fn context_for(&self, binary: &str, overrides: &[(&str, &str)]) -> hub::Context {
        let mut env = self.env(binary);
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned()).unwrap(), self.sdk.clone())
    }

    /// A user made as an operator would (a proven address, any role), signed in with a token pair.
    pub async fn signed_in(&self, email: &str, role: Role) -> (User, TokenPair) {
        let user = provision_as_operator(&self.ctx, &profile("test", email, Some(email), role)).await.unwrap();
        let pair = start_session(&self.ctx, &user).await.unwrap();
        (user, pair)
    }

    /// As [`TestStack::signed_in`], in an organization.
    pub async fn signed_in_as(&self, email: &str, role: Role, org: &str) -> (User, TokenPair) {
        let mut p = profile("test", email, Some(email), role);
        p.org_id = Some(org.into());
        let user = provision_as_operator(&self.ctx, &p).await.unwrap();
        let pair = start_session(&self.ctx, &user).await.unwrap();
        (user, pair)
    }

    /// The current version (kid) and value of a signing key secret.
    pub async fn key(&self, logical_id: &str) -> (String, String) {
        let sm = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let out = sm.get_secret_value().secret_id(&self.stack.refs[logical_id]).send().await.unwrap();
        (out.version_id.unwrap(), out.secret_string.unwrap())
    }

    /// Signs arbitrary claims with one of the stack's real keys (to build expired, mistyped... tokens).
    pub async fn forge(&self, logical_id: &str, claims: &serde_json::Value) -> String {
        let (kid, secret) = self.key(logical_id).await;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }
}

/// An email as the local SES received it (raw MIME, parsed by a real MIME parser).
#[derive(Clone, Debug)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    /// The first link of ours in the text part that starts with `base + path`.
    pub fn link(&self, base: &str, path: &str) -> String {
        let prefix = format!("{base}{path}");
        self.text
            .split_whitespace()
            .find(|w| w.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} link in {:?}", self.text))
            .to_string()
    }

    /// The `code` query parameter of that link.
    pub fn code(&self, base: &str, path: &str) -> String {
        let link = url::Url::parse(&self.link(base, path)).unwrap();
        link.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("code in link")
    }
}

impl TestStack {
    /// Every email the local SES has been asked to send to `to` (all stacks share one SES; the
    /// address tells tests apart), oldest first.
    pub async fn emails_to(&self, to: &str) -> Vec<Email> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
        // moto serialises every model it holds; another test's S3 call changing a model midway makes that
        // answer a 500 now and then (a race inside moto): asked again, it answers.
        let mut data = None;
        for _ in 0..5 {
            let r = self.http.get(format!("{endpoint}/moto-api/data.json")).send().await.unwrap();
            if r.status() == 200
                && let Ok(json) = r.json::<serde_json::Value>().await
            {
                data = Some(json);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let data = data.expect("moto's model data");
        let raw = data["ses"]["RawMessage"].as_array().cloned().unwrap_or_default();
        raw.iter()
            .filter(|m| m["destinations"].as_array().is_some_and(|d| d.iter().any(|a| a.as_str() == Some(to))))
            .map(|m| {
                let parsed = mail_parser::MessageParser::default()
                    .parse(m["raw_data"].as_str().unwrap().as_bytes())
                    .expect("a MIME message");
                Email {
                    to: parsed
                        .to()
                        .into_iter()
                        .flat_map(|a| a.iter())
                        .filter_map(|a| a.address().map(str::to_string))
                        .collect(),
                    from: parsed
                        .from()
                        .and_then(|a| a.first())
                        .and_then(|a| a.address())
                        .unwrap_or_default()
                        .to_string(),
                    subject: parsed.subject().unwrap_or_default().to_string(),
                    text: parsed.body_text(0).expect("a text part").into_owned(),
                    html: parsed.body_html(0).expect("an HTML part").into_owned(),
                }
            })
            .collect()
    }

    /// Messages on one of the stack's queues (by logical id): visible, in flight and delayed.
    pub async fn queued(&self, queue: &str) -> usize {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        devstack::bench_fairness::messages(&sqs, &self.stack.refs[queue]).await.unwrap()
    }

    /// Asserts that `jobs` jobs are still on a queue: none lost, and at most a few copies beside them
    /// (delivery is at least once: a deferred job's copy may be sent twice by a retried request).
    pub async fn assert_still_queued(&self, queue: &str, jobs: usize) {
        let queued = self.queued(queue).await;
        assert!((jobs..=jobs + jobs / 20).contains(&queued), "{queued} messages on {queue} for {jobs} waiting jobs");
    }

    /// Runs `workers` concurrent instances of a queue consumer (each a batch at a time, as Lambda's
    /// event source with that `MaximumConcurrency`) until `done` holds; fails past `within`.
    pub async fn work_until(&self, consumer: &str, workers: usize, within: Duration, done: impl Fn() -> bool) {
        let started = Instant::now();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let worker = || async {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if done() {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                assert!(started.elapsed() < within, "{consumer}: not done within {within:?}");
                self.gateway.poll(consumer, 1).await.unwrap();
            }
        };
        futures_util::future::join_all((0..workers).map(|_| worker())).await;
    }

    /// Runs a queue consumer until its queue is empty (20 batches at most, so a queue that never
    /// empties fails the test rather than hanging it): (received, failed).
    pub async fn drain(&self, consumer: &str) -> (usize, usize) {
        let (mut received, mut failed) = (0, 0);
        for _ in 0..20 {
            let (n, f) = self.gateway.poll(consumer, 10).await.unwrap();
            received += n;
            failed += f;
            if n == 0 {
                return (received, failed);
            }
        }
        panic!("{consumer}'s queue did not empty in 20 batches");
    }

    /// Runs the email worker over what is queued, then returns the emails to `to`.
    pub async fn deliver_emails_to(&self, to: &str) -> Vec<Email> {
        while self.gateway.poll("email-send", 1).await.unwrap().0 > 0 {}
        self.emails_to(to).await
    }
}

pub fn profile(provider: &str, external_id: &str, email: Option<&str>, role: Role) -> ExternalProfile {
    ExternalProfile {
        provider: provider.into(),
        external_id: external_id.into(),
        email: email.map(str::to_string),
        email_proven: false,
        email_is_school_record: true,
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        role,
        org_id: Some("org-1".into()),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The JSON error body every endpoint answers with.
pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert!(body["message"].is_string(), "error without message: {body}");
    (status, body["error"].as_str().expect("error code").to_string())
}

/// What a test server answers: status (599 = answer 599 after 3 s), `Location`, body.
pub type Reply = (u16, Option<String>, Vec<u8>);

/// A loopback HTTP server answering every request with `respond(path)`; counts requests.
pub async fn server(respond: fn(&str) -> Reply) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (status, location, body) = respond(req.uri().path());
                    async move {
                        if status == 599 {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        let mut b = hyper::Response::builder().status(status.min(599));
                        if let Some(l) = location {
                            b = b.header("location", l);
                        }
                        Ok::<_, std::convert::Infallible>(b.body(Full::new(Bytes::from(body))).unwrap())
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, hits)
}

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

/// A scripted answer: status and headers.
type Answer = (u16, Vec<(&'static str, String)>);

/// A webhook receiver on loopback: records every request and answers from a script of
/// (status, headers), then 200 once the script is used up.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub port: u16,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<Answer>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Self {
            url: format!("http://127.0.0.1:{port}/hooks/optio"),
            port,
            received: Default::default(),
            script: Default::default(),
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let at = std::time::Instant::now();
                            r.received.lock().unwrap().push(Received { headers: parts.headers, body, at });
                            let (status, headers) = r.script.lock().unwrap().pop_front().unwrap_or((200, Vec::new()));
                            let mut b = hyper::Response::builder().status(status);
                            for (k, v) in headers {
                                b = b.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                b.body(Full::new(Bytes::from(format!("answer {status}")))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// The next answers, in order.
    pub fn answer(&self, answers: &[(u16, &[(&'static str, &str)])]) {
        let mut script = self.script.lock().unwrap();
        for (status, headers) in answers {
            script.push_back((*status, headers.iter().map(|(k, v)| (*k, v.to_string())).collect()));
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
