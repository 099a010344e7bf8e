//! Benchmarks against the local AWS stack.
//!
//! `devstack bench-spark`: latency (p50/p99/max) and throughput of the Spark endpoints through the
//! dev gateway. Each request is a real one: every SSO token is new (a new user), every submission is
//! a first submission (enrollment, completion, XP, events).
//!
//! `devstack bench-observers`: the DynamoDB requests and latency of an observer's portfolio of a
//! student with a long history.
//!
//! `devstack bench-webhooks`: deliveries per second through the fan-out and the delivery worker to a
//! local receiver.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::SdkConfig;
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::provision::{LOCAL_PARAMETERS, provision};
use crate::template::Template;

/// A fresh stack for one benchmark, its dev gateway serving on a random port, and a context.
pub(crate) struct BenchStack {
    pub(crate) stack: crate::provision::LocalStack,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) base: String,
    pub(crate) ctx: hub::Context,
}

/// A context configured as one function of the stack is.
pub(crate) fn function_context(
    template: &Template,
    stack: &crate::provision::LocalStack,
    sdk: &SdkConfig,
    binary: &str,
) -> anyhow::Result<hub::Context> {
    let def = template.functions()?.into_iter().find(|f| f.binary == binary).context("no such function")?;
    let env = stack.function_env(template, &def.logical_id)?;
    Ok(hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned())?, sdk.clone()))
}

pub(crate) async fn bench_stack(
    template: &Template,
    sdk: &SdkConfig,
    params: &[(&str, &str)],
) -> anyhow::Result<BenchStack> {
    let stack_name = format!("bench-{:08x}", rand::random::<u32>());
    let stack = provision(template, &stack_name, sdk, &[LOCAL_PARAMETERS.as_slice(), params].concat()).await?;
    let gateway = Arc::new(Gateway::new(template, &stack, sdk)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway.clone().serve(listener));
    let ctx = function_context(template, &stack, sdk, "auth-me")?;
    Ok(BenchStack { stack, gateway, base, ctx })
}

fn bench_admin() -> hub::domain::auth::guard::Principal {
    admin_of("bench")
}

/// An admin of organization `org`.
pub(crate) fn admin_of(org: &str) -> hub::domain::auth::guard::Principal {
    hub::domain::auth::guard::Principal {
        user_id: format!("{org}-admin"),
        email: None,
        role: hub::domain::auth::Role::OrgAdmin,
        org_id: Some(org.into()),
        session_id: "bench".into(),
    }
}

pub async fn spark(template: &Template, sdk: &SdkConfig, requests: usize, concurrency: usize) -> anyhow::Result<()> {
    // The bench admin's organization is Spark's: only its quests may map Spark assignments.
    let BenchStack { stack, base, ctx, gateway } = bench_stack(
        template,
        sdk,
        &[("SparkWebhookRateLimit", "100000000"), ("FrontendUrl", ""), ("SparkOrganizationId", "bench")],
    )
    .await?;
    let files = file_server().await?;
    let secret = |id: &str| {
        let sm = aws_sdk_secretsmanager::Client::new(sdk);
        let arn = stack.refs[id].clone();
        async move { anyhow::Ok(sm.get_secret_value().secret_id(arn).send().await?.secret_string.context("secret")?) }
    };
    let (sso_secret, webhook_secret) = (secret("SparkSsoSecret").await?, secret("SparkWebhookSecret").await?);

    // A quest per assignment the submissions go to, created by an organization admin.
    let admin = bench_admin();
    for assignment in ["text", "file"] {
        let quest: hub::domain::learning::quests::NewQuest = serde_json::from_value(json!({
            "title": assignment, "pillar": "stem", "lms": {"platform": "spark", "course_id": "bench", "assignment_id": assignment},
            "tasks": [{"title": "Report", "xp": 10}]}))?;
        hub::domain::learning::quests::create_quest(&ctx, &admin, quest)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }

    println!(
        "{:<28} {:>8} {:>6} {:>9} {:>9} {:>9} {:>10}",
        "endpoint", "requests", "conc.", "p50", "p99", "max", "req/s"
    );
    let now =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;

    // SSO: a new user per request, from many client addresses (the limit is per address).
    let codes = run("GET /spark/sso", requests, concurrency, |i| {
        let claims = json!({"sub": format!("bench-{i}"), "email": format!("bench-{i}@school.example"), "role": "student",
                            "iat": now(), "exp": now() + 300});
        let token = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(sso_secret.as_bytes())).unwrap_or_default();
        let url = format!("{base}/spark/sso?token={token}");
        async move {
            let r = client(i).get(url).send().await?;
            anyhow::ensure!(r.status() == 200, "SSO answered {}", r.status());
            // The code works only with the cookie that binds it to this browser.
            let binding = crate::set_cookie(r.headers(), "__Host-hub_login_").unwrap_or_default();
            Ok((r.json::<Value>().await?["code"].as_str().unwrap_or_default().to_string(), binding))
        }
    })
    .await?;
    let codes = Arc::new(codes);
    run("POST /spark/token", requests, concurrency, |i| {
        let (url, (code, binding)) = (format!("{base}/spark/token"), codes[i].clone());
        async move {
            let r = client(i).post(url).header("cookie", binding).json(&json!({ "code": code })).send().await?;
            anyhow::ensure!(r.status() == 200, "token answered {}", r.status());
            Ok(())
        }
    })
    .await?;
    let submit = |assignment: &'static str, with_file: bool| {
        let (base, files, secret) = (base.clone(), files.clone(), webhook_secret.clone());
        move |i: usize| {
            let files = if with_file {
                json!([{"url": format!("{files}/report.pdf"), "type": "application/pdf", "filename": "r.pdf"}])
            } else {
                json!([])
            };
            let body = json!({"spark_user_id": format!("bench-{i}"), "spark_assignment_id": assignment, "spark_course_id": "bench",
                              "submission_text": "Bench report", "submission_files": files,
                              "submitted_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()})
            .to_string();
            let signature = hex::encode(hub::support::crypto::hmac_sha256(secret.as_bytes(), body.as_bytes()));
            let url = format!("{base}/spark/webhook/submission");
            async move {
                let r = client(i)
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-spark-signature", signature)
                    .body(body)
                    .send()
                    .await?;
                // Text completes inline (200); files by URL are accepted (202) for the worker.
                let expected = if with_file { 202 } else { 200 };
                anyhow::ensure!(
                    r.status() == expected,
                    "webhook answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
                Ok(())
            }
        }
    };
    run("POST /spark/webhook (text)", requests, concurrency, submit("text", false)).await?;
    let queued = requests / 4;
    run("POST /spark/webhook (1 MB PDF)", queued, concurrency, submit("file", true)).await?;
    // The submission worker fetches and records them, one job per invocation as Lambda hands them.
    let started = Instant::now();
    let mut done = 0;
    while done < queued {
        let (received, failed) = gateway.poll("spark-submission-worker", 1).await?;
        anyhow::ensure!(failed == 0, "the submission worker failed a job");
        anyhow::ensure!(received > 0 || started.elapsed() < Duration::from_secs(120), "jobs missing");
        done += received;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>8} {:>6} {:>9} {:>9} {:>9} {:>10.0}",
        "worker: fetch 1 MB, record",
        queued,
        1,
        format!("{:.1} ms", seconds * 1000.0 / queued.max(1) as f64),
        "",
        "",
        queued as f64 / seconds
    );
    Ok(())
}

/// Events fanned out, then delivered by the worker (SQS receive, claim, signed POST, record, delete)
/// to a receiver on loopback that answers 204 at once. `pollers` stand for concurrent worker instances;
/// each handles a batch of up to 10 jobs concurrently, as Lambda's SQS event source hands it.
pub async fn webhooks(template: &Template, sdk: &SdkConfig, deliveries: usize, pollers: usize) -> anyhow::Result<()> {
    let BenchStack { gateway, stack, .. } = bench_stack(template, sdk, &[]).await?;
    let (receiver, received) = counting_receiver().await?;
    let new = serde_json::from_value(json!({"url": receiver, "event_types": ["*"]}))?;
    let admin_api = function_context(template, &stack, sdk, "webhooks-subscriptions-create")?;
    hub::integrations::webhooks::subscriptions::create(&admin_api, &bench_admin(), new)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let ctx = Arc::new(function_context(template, &stack, sdk, "events-dispatch")?);

    println!("{:<36} {:>8} {:>6} {:>10} {:>10}", "stage", "count", "conc.", "seconds", "per second");
    let started = Instant::now();
    futures_util::stream::iter(0..deliveries)
        .map(|i| {
            let ctx = ctx.clone();
            async move {
                let event = hub::runtime::events::DomainEvent::new(
                    "task.completed",
                    Some("bench".into()),
                    json!({"user_id": format!("u-{i}"), "task_id": "t", "xp_awarded": 10}),
                    ctx.clock.now(),
                );
                hub::integrations::webhooks::delivery::fan_out(&ctx, &event)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.to_string()))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_rate("fan-out (record + job)", deliveries, 16, started.elapsed());

    let started = Instant::now();
    let workers = (0..pollers.max(1)).map(|_| {
        let (gateway, received) = (gateway.clone(), received.clone());
        async move {
            while received.load(Ordering::SeqCst) < deliveries {
                gateway.poll("webhook-deliver", 1).await?;
            }
            anyhow::Ok(())
        }
    });
    futures_util::future::try_join_all(workers).await?;
    print_rate("worker: signed POST, end to end", deliveries, pollers, started.elapsed());

    let (page, _) = ctx
        .store()
        .deliveries_of_organization("bench", &Default::default(), 100, None)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let mut attempt_ms: Vec<u64> = page.iter().filter_map(|d| d.attempts.first()).map(|a| a.duration_ms).collect();
    attempt_ms.sort();
    if !attempt_ms.is_empty() {
        let pick = |q: f64| attempt_ms[((attempt_ms.len() as f64 * q) as usize).min(attempt_ms.len() - 1)];
        println!(
            "attempt (secret, sign, POST, answer) of the newest {}: p50 {} ms, p99 {} ms",
            attempt_ms.len(),
            pick(0.5),
            pick(0.99)
        );
    }
    Ok(())
}

fn print_rate(stage: &str, count: usize, concurrency: usize, took: Duration) {
    let seconds = took.as_secs_f64();
    println!("{stage:<36} {count:>8} {concurrency:>6} {seconds:>10.2} {:>10.1}", count as f64 / seconds);
}

/// A receiver that answers 204 to everything and counts requests.
pub(crate) async fn counting_receiver() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let response = hyper::Response::builder()
                            .status(204)
                            .body(http_body_util::Full::new(hyper::body::Bytes::new()));
                        Ok::<_, std::convert::Infallible>(response.expect("static response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, count))
}

/// A host that accepts connections and never answers (a tarpit: every client waits for its timeout).
/// Returns its base URL and how many connections it took.
pub async fn tarpit() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Reads whatever comes and answers nothing, until the client gives up.
                let mut sink = [0u8; 4096];
                while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    Ok((url, count))
}

/// Runs `requests` calls of `call(i)`, `concurrency` at a time; prints the latency figures.
async fn run<T, F, Fut>(name: &str, requests: usize, concurrency: usize, call: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let mut results: Vec<(usize, Duration, T)> = futures_util::stream::iter(0..requests)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                let value = fut.await?;
                anyhow::Ok((i, t.elapsed(), value))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let total = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{:<28} {:>8} {:>6} {:>9} {:>9} {:>9} {:>10.0}",
        name,
        requests,
        concurrency,
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        requests as f64 / total.as_secs_f64()
    );
    results.sort_by_key(|(i, _, _)| *i);
    Ok(results.into_iter().map(|(_, _, v)| v).collect())
}

/// A client at its own loopback address, so per-address rate limits see many callers.
fn client(i: usize) -> reqwest::Client {
    thread_local! {
        static CLIENTS: std::cell::RefCell<std::collections::HashMap<usize, reqwest::Client>> = Default::default();
    }
    let slot = i / 5;
    CLIENTS.with(|c| {
        c.borrow_mut()
            .entry(slot)
            .or_insert_with(|| {
                let ip = Ipv4Addr::new(127, 1, (slot / 250) as u8, (slot % 250 + 1) as u8);
                reqwest::Client::builder().no_proxy().local_address(IpAddr::V4(ip)).build().expect("client")
            })
            .clone()
    })
}

/// Serves a 1 MB PDF, standing in for Spark's storage.
async fn file_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let pdf = hyper::body::Bytes::from([b"%PDF-1.7\n".as_slice(), &vec![b'x'; 1024 * 1024]].concat());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let pdf = pdf.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let pdf = pdf.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(pdf))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}

/// Counts the requests a DynamoDB client sends (retries included).
#[derive(Debug, Clone, Default)]
struct RequestCounter(Arc<AtomicUsize>);

impl aws_sdk_dynamodb::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// `devstack bench-observers`: an observer's portfolio of a student with `quests` quests of
/// `tasks` tasks, the first task of each completed with `blocks` evidence blocks (half of them
/// files): the DynamoDB requests one portfolio costs, and its latency through the dev gateway.
pub async fn observers(
    template: &Template,
    sdk: &SdkConfig,
    quests: usize,
    tasks: usize,
    blocks: usize,
    requests: usize,
) -> anyhow::Result<()> {
    use hub::domain::learning::{BlockType, EvidenceBlock, StoredFile};
    let BenchStack { base, ctx, stack, .. } = bench_stack(template, sdk, &[]).await?;
    let admin = bench_admin();
    let student = hub::domain::auth::provisioning::provision_user(
        &ctx,
        &hub::domain::auth::provisioning::ExternalProfile {
            provider: "bench".into(),
            external_id: "student".into(),
            email: Some("student@bench.example".into()),
            email_proven: false,
            email_is_school_record: true,
            given_name: Some("Ada".into()),
            family_name: None,
            role: hub::domain::auth::Role::Student,
            org_id: Some("bench".into()),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.to_string()))?
    .0;
    let started = Instant::now();
    for q in 0..quests {
        let task_list: Vec<Value> = (0..tasks).map(|t| json!({"title": format!("Task {t}"), "xp": 10})).collect();
        let new: hub::domain::learning::quests::NewQuest =
            serde_json::from_value(json!({"title": format!("Quest {q}"), "pillar": "stem", "tasks": task_list}))?;
        let quest = hub::domain::learning::quests::create_quest(&ctx, &admin, new)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let evidence: Vec<EvidenceBlock> = (0..blocks)
            .map(|b| {
                let file = (b % 2 == 1).then(|| StoredFile {
                    key: format!("evidence/bench/{q}-{b}.pdf"),
                    filename: format!("page-{b}.pdf"),
                    content_type: "application/pdf".into(),
                    size: 120_000,
                });
                let text = file
                    .is_none()
                    .then(|| format!("Reflection {b}: what I learned in quest {q}, in a few sentences of text."));
                EvidenceBlock {
                    order: b as u32 + 1,
                    block_type: if file.is_some() { BlockType::Document } else { BlockType::Text },
                    text,
                    file,
                }
            })
            .collect();
        let key = format!("bench-{q}");
        let submission = hub::domain::learning::submissions::Submission {
            source: "bench",
            key: &key,
            user_id: &student.id,
            quest: &quest,
            task_id: None,
            evidence: &evidence,
            grade: None,
            lms_ref: None,
        };
        hub::domain::learning::submissions::record(&ctx, &submission)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }
    let observer = hub::domain::auth::email_sign_in::create_observer(&ctx, "gran@bench.example")
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?
        .context("a fresh stack has no such account")?;
    let link = hub::integrations::observers::Link {
        student_id: student.id.clone(),
        observer_id: observer.id.clone(),
        relationship: "grandparent".into(),
        permissions: hub::integrations::observers::Permissions { can_view_evidence: true, can_comment: true },
        source: "invitation".into(),
        observer_email: observer.email.clone(),
        observer_name: None,
        created_at: 0,
    };
    let event = hub::runtime::events::DomainEvent::new("observer.linked", Some("bench".into()), json!({}), 0);
    ctx.store().put_new_link(&link, &event).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    println!(
        "student with {quests} quests x {tasks} tasks, {} evidence blocks ({} files): seeded in {:.1} s",
        quests * blocks,
        quests * blocks / 2,
        started.elapsed().as_secs_f64()
    );

    // DynamoDB requests of one portfolio, counted on the wire of a fresh client.
    let counter = RequestCounter::default();
    let counted = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.clone()).build(),
    );
    // A fresh instance of the function, as Lambda would start it, with the counting client.
    let measured = function_context(template, &stack, sdk, "observers-portfolio")?.with_dynamodb(counted);
    let principal = hub::domain::auth::guard::Principal {
        user_id: observer.id.clone(),
        email: observer.email.clone(),
        role: hub::domain::auth::Role::Observer,
        org_id: None,
        session_id: "bench".into(),
    };
    let t = Instant::now();
    let portfolio = hub::integrations::observers::portfolio::portfolio(&measured, &principal, &student.id)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let in_process = t.elapsed();
    let files = portfolio
        .quests
        .iter()
        .flat_map(|q| &q.tasks)
        .flat_map(|t| t.evidence.iter().flatten())
        .filter(|e| e.file.is_some())
        .count();
    anyhow::ensure!(portfolio.quests.len() == quests && files == quests * blocks / 2, "incomplete portfolio");
    println!(
        "one portfolio: {} DynamoDB requests, {files} presigned file links, {:.1} ms in process",
        counter.0.load(Ordering::Relaxed),
        in_process.as_secs_f64() * 1000.0
    );

    // Latency through the dev gateway, with the observer's session.
    let tokens = hub::domain::auth::sessions::start_session(&ctx, &observer)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let url = format!("{base}/api/observers/students/{}/portfolio", student.id);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let size = Arc::new(AtomicUsize::new(0));
    println!(
        "{:<28} {:>8} {:>6} {:>9} {:>9} {:>9} {:>10}",
        "endpoint", "requests", "conc.", "p50", "p99", "max", "req/s"
    );
    run("GET .../portfolio", requests, 1, |_| {
        let (http, url, token, size) = (http.clone(), url.clone(), tokens.access_token.clone(), size.clone());
        async move {
            let r = http.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(r.status() == 200, "portfolio answered {}", r.status());
            size.store(r.bytes().await?.len(), Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    println!("response: {:.0} KB of JSON", size.load(Ordering::Relaxed) as f64 / 1024.0);
    Ok(())
}

/// An OAuth server's token endpoints, as the OAuth bench calls them.
pub struct OAuthTarget {
    pub name: String,
    pub token_url: String,
    pub introspect_url: String,
    pub client_id: String,
    pub secret: String,
    /// The scope asked for with client credentials.
    pub scope: String,
    /// Extra form fields of a client-credentials request (e.g. a `resource` indicator).
    pub extra: Vec<(String, String)>,
}

/// `devstack bench-oauth`: the token endpoint (client credentials, refresh) and introspection of our
/// server through the dev gateway, and the same calls against a reference server when one is given
/// (node-oidc-provider, `bench/oauth` starts it), side by side; then the CPU time of our signing and
/// verification, which is all our handlers add to the store's I/O.
pub async fn oauth(
    template: &Template,
    sdk: &SdkConfig,
    requests: usize,
    concurrency: usize,
    reference: Option<OAuthTarget>,
) -> anyhow::Result<()> {
    let BenchStack { base, ctx, .. } = bench_stack(template, sdk, &[]).await?;
    let admin = bench_admin();
    // Two apps, so each phase has its own per-client budget (300 token requests a minute).
    let register = |name: &str| {
        let registration: Result<hub::integrations::oauth::clients::ClientRegistration, _> =
            serde_json::from_value(json!({
            "name": name, "redirect_uris": ["https://bench.example/callback"],
            "allowed_scopes": ["profile", "webhooks:manage"],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"]}));
        let (ctx, admin) = (&ctx, &admin);
        async move {
            hub::integrations::oauth::clients::register(ctx, admin, registration?)
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))
        }
    };
    let app = register("Bench").await?;
    let refresher = register("Bench refresh").await?;
    let ours = OAuthTarget {
        name: "hub".into(),
        token_url: format!("{base}/api/oauth/token"),
        introspect_url: format!("{base}/api/oauth/introspect"),
        client_id: app.client.client_id.clone(),
        secret: app.client_secret.clone().context("a confidential client")?,
        scope: "webhooks:manage".into(),
        extra: vec![],
    };
    let refreshing = OAuthTarget {
        client_id: refresher.client.client_id.clone(),
        secret: refresher.client_secret.clone().context("a confidential client")?,
        ..OAuthTarget {
            name: "hub".into(),
            token_url: ours.token_url.clone(),
            introspect_url: String::new(),
            client_id: String::new(),
            secret: String::new(),
            scope: String::new(),
            extra: vec![],
        }
    };
    // Refresh chains: one user authorization per concurrent worker, each refreshed in turn.
    let user = hub::domain::auth::email_sign_in::create_observer(&ctx, "bench-user@bench.example")
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?
        .context("fresh stack")?;
    let mut chains = Vec::new();
    for _ in 0..concurrency.max(1) {
        let challenge_verifier = hub::support::crypto::random_token(32);
        let challenge = hub::integrations::oauth::authorize::pkce_challenge(&challenge_verifier);
        let request = hub::integrations::oauth::authorize::AuthorizationRequest {
            client: refresher.client.clone(),
            redirect_uri: "https://bench.example/callback".into(),
            redirect_uri_given: true,
            scope: vec!["profile".into()],
            state: None,
            code_challenge: challenge,
        };
        let back = hub::integrations::oauth::authorize::approve(&ctx, &user, &request)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let code = url::Url::parse(&back)?.query_pairs().find(|(k, _)| k == "code").context("code")?.1.into_owned();
        let answer = post_form(
            &refreshing.token_url,
            &refreshing,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://bench.example/callback"),
                ("code_verifier", &challenge_verifier),
            ],
        )
        .await?;
        chains.push(Arc::new(tokio::sync::Mutex::new(
            answer["refresh_token"].as_str().context("refresh token")?.to_string(),
        )));
    }

    println!(
        "{:<34} {:>8} {:>6} {:>9} {:>9} {:>9} {:>10}",
        "endpoint", "requests", "conc.", "p50", "p99", "max", "req/s"
    );
    let mut targets = vec![ours];
    targets.extend(reference);
    for target in &targets {
        let target = Arc::new(target);
        let token = client_credentials(&target).await?;
        run(&format!("{}: client_credentials", target.name), requests, concurrency, |_| {
            let target = target.clone();
            async move { client_credentials(&target).await.map(|_| ()) }
        })
        .await?;
        run(&format!("{}: introspect", target.name), requests, concurrency, |_| {
            let (target, token) = (target.clone(), token.clone());
            async move {
                let r = post_form(&target.introspect_url, &target, &[("token", token.as_str())]).await?;
                anyhow::ensure!(r["active"] == true, "introspection answered {r}");
                Ok(())
            }
        })
        .await?;
    }
    let refreshing = &refreshing;
    run("hub: refresh_token (rotation)", requests, concurrency, |i| {
        let chain = chains[i % chains.len()].clone();
        async move {
            let mut current = chain.lock().await;
            let fields = [("grant_type", "refresh_token"), ("refresh_token", current.as_str())];
            let r = post_form(&refreshing.token_url, refreshing, &fields).await?;
            *current = r["refresh_token"].as_str().with_context(|| format!("refresh answered {r}"))?.to_string();
            Ok(())
        }
    })
    .await?;

    // CPU of our own work per request: signing and verifying an access token with the keys cached
    // (what remains of a handler once its DynamoDB reads and writes are taken away).
    let claims = hub::integrations::oauth::keys::AccessTokenClaims {
        iss: hub::integrations::oauth::issuer(&ctx).map_err(|e| anyhow::anyhow!(e.to_string()))?,
        aud: hub::integrations::oauth::AUDIENCE.into(),
        sub: user.id.clone(),
        client_id: app.client.client_id.clone(),
        scope: "profile".into(),
        grant: "grt_bench".into(),
        org: None,
        role: None,
        iat: ctx.clock.now(),
        exp: ctx.clock.now() + 3600,
        jti: "bench".into(),
    };
    let token =
        hub::integrations::oauth::keys::sign(&ctx, &claims).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let rounds = 2000;
    let t = Instant::now();
    for _ in 0..rounds {
        hub::integrations::oauth::keys::sign(&ctx, &claims).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }
    let sign = t.elapsed() / rounds;
    let t = Instant::now();
    for _ in 0..rounds {
        hub::integrations::oauth::keys::verify(&ctx, &token).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    }
    let verify = t.elapsed() / rounds;
    println!("CPU per request, store I/O excluded: sign an access token {sign:?}, verify one {verify:?} (keys cached)");
    Ok(())
}

async fn client_credentials(target: &OAuthTarget) -> anyhow::Result<String> {
    let mut form = vec![("grant_type", "client_credentials"), ("scope", target.scope.as_str())];
    form.extend(target.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let r = post_form(&target.token_url, target, &form).await?;
    Ok(r["access_token"].as_str().with_context(|| format!("{}: token answered {r}", target.name))?.to_string())
}

/// A form POST with the target's client authentication (HTTP Basic), answered in JSON.
async fn post_form(url: &str, target: &OAuthTarget, fields: &[(&str, &str)]) -> anyhow::Result<Value> {
    thread_local! {
        static HTTP: reqwest::Client = reqwest::Client::builder().no_proxy().build().expect("client");
    }
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let http = HTTP.with(Clone::clone);
    let answer = http
        .post(url)
        .basic_auth(&target.client_id, Some(&target.secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    Ok(answer.json().await?)
}
