//! A local Lambda Runtime API (the interface `lambda_runtime` polls), so the real function binaries
//! run here exactly as on Lambda: init, `GET /next`, handler, `POST /response` or `/error`.
//! Used by the binary tests and by the cold-start benchmark (init time = spawn to first `/next`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, Notify, oneshot};

const PREFIX: &str = "/2018-06-01/runtime";

/// What the function answered.
#[derive(Debug)]
pub enum Outcome {
    Response(String),
    Error(String),
}

struct Invocation {
    id: String,
    event: String,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    pending: Mutex<VecDeque<Invocation>>,
    arrived: Notify,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
    polled: Notify,
}

/// A running Runtime API endpoint on loopback.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl RuntimeApi {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let server_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| route(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// Waits until the function finished its init and asks for work; returns that moment.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Instant> {
        tokio::time::timeout(timeout, async {
            loop {
                let polled = self.state.polled.notified();
                if let Some(error) = self.state.init_error.lock().await.clone() {
                    bail!("function failed to initialise: {error}");
                }
                if let Some(at) = *self.state.first_poll.lock().await {
                    return Ok(at);
                }
                polled.await;
            }
        })
        .await
        .context("function did not become ready")?
    }

    /// Sends one event and waits for the function's answer.
    pub async fn invoke(&self, event: &str, timeout: Duration) -> anyhow::Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let id = format!("local-{}", rand::random::<u64>());
        self.state.pending.lock().await.push_back(Invocation { id, event: event.to_string(), reply });
        self.state.arrived.notify_one();
        Ok(tokio::time::timeout(timeout, answer).await.context("invocation timed out")??)
    }
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().strip_prefix(PREFIX).unwrap_or("").to_string();
    let method = req.method().clone();
    let body = String::from_utf8_lossy(&req.into_body().collect().await?.to_bytes()).into_owned();
    let reply = |status: u16| Response::builder().status(status).body(Full::new(Bytes::new())).expect("valid response");
    if method == hyper::Method::GET && path == "/invocation/next" {
        state.first_poll.lock().await.get_or_insert_with(Instant::now);
        state.polled.notify_waiters();
        let invocation = loop {
            let arrived = state.arrived.notified();
            if let Some(inv) = state.pending.lock().await.pop_front() {
                break inv;
            }
            arrived.await;
        };
        state.in_flight.lock().await.insert(invocation.id.clone(), invocation.reply);
        let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
            + Duration::from_secs(30);
        return Ok(Response::builder()
            .status(200)
            .header("lambda-runtime-aws-request-id", &invocation.id)
            .header("lambda-runtime-deadline-ms", deadline.as_millis().to_string())
            .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:local")
            .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
            .body(Full::new(Bytes::from(invocation.event)))
            .expect("valid response"));
    }
    if method == hyper::Method::POST && path == "/init/error" {
        *state.init_error.lock().await = Some(body);
        state.polled.notify_waiters();
        return Ok(reply(202));
    }
    if method == hyper::Method::POST
        && let Some(rest) = path.strip_prefix("/invocation/")
        && let Some((id, kind)) = rest.split_once('/')
    {
        let outcome = match kind {
            "response" => Outcome::Response(body),
            "error" => Outcome::Error(body),
            _ => return Ok(reply(404)),
        };
        if let Some(tx) = state.in_flight.lock().await.remove(id) {
            let _ = tx.send(outcome);
            return Ok(reply(202));
        }
        return Ok(reply(400));
    }
    Ok(reply(404))
}

/// A function binary running against its own Runtime API.
pub struct FunctionProcess {
    pub api: RuntimeApi,
    pub spawned_at: Instant,
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
}

impl FunctionProcess {
    /// Starts `binary` as Lambda would, with the function's environment from the template.
    pub async fn spawn(binary: &Path, name: &str, env: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let api = RuntimeApi::start().await?;
        let spawned_at = Instant::now();
        let child = tokio::process::Command::new(binary)
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut child = child;
        let stdout = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stdout.take() {
            let sink = stdout.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut out = sink.lock().await;
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Ok(Self { api, spawned_at, child, stdout })
    }

    /// What the function logged so far (its stdout, as CloudWatch would receive it).
    pub async fn logs(&self) -> String {
        self.stdout.lock().await.clone()
    }

    /// Waits for the process to exit (a function that cannot initialise ends with an error).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await.context("process still running")??)
    }

    /// Peak resident memory of the process so far (Linux), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(&self.child.id()?.to_string(), "VmHWM")
    }
}

/// A memory figure of `/proc/<process>/status` (Linux; `process` a pid or `self`), in KiB.
pub fn proc_status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
