//! `devstack`: the local stack's command line (see the README's tour).
//!
//! ```text
//! devstack up        [--stack hub-dev] [--port 3000]   provision from template.yaml, then serve the gateway
//! devstack provision [--stack hub-dev]                 create the template's resources only
//! devstack env FUNCTION [--stack hub-dev]              a function's environment (KEY=VALUE lines)
//! devstack invoke BINARY EVENT_FILE [--stack hub-dev]  run a function binary on a local Runtime API
//! devstack token --email E [--role R] [--stack hub-dev] a signed-in session for trying the API
//! devstack secret LOGICAL_ID [--stack hub-dev]         a template secret's value (e.g. SparkSsoSecret)
//! devstack fire FUNCTION [--stack hub-dev]             run a scheduled function now
//! devstack bench-spark [--requests 200] [--concurrency 8] Spark SSO and webhook latency and throughput
//! devstack bench-webhooks [--deliveries 500] [--workers 4] outbound webhook deliveries per second
//! devstack bench-clever [--students 10000] [--teachers 500] [--sections 400] [--worker PATH] school sync figures
//! devstack coldstart BINARY... [--runs 10]              init time, first invocation and peak memory
//! ```
//! It talks only to the endpoint in `AWS_ENDPOINT_URL`, which must be on loopback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use devstack::provision::{LocalStack, provision};
use devstack::runtime_api::{FunctionProcess, Outcome};
use devstack::template::Template;

struct Args {
    command: String,
    positional: Vec<String>,
    options: std::collections::HashMap<String, String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().context("usage: devstack up|provision|env|invoke|token [options]")?;
    let (mut positional, mut options) = (Vec::new(), std::collections::HashMap::new());
    while let Some(arg) = it.next() {
        match arg.strip_prefix("--") {
            Some(name) => {
                options.insert(name.to_string(), it.next().with_context(|| format!("--{name} needs a value"))?);
            }
            None => positional.push(arg),
        }
    }
    Ok(Args { command, positional, options })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // The functions' own JSON log lines (on stderr), as `sam local start-api` shows them (RUST_LOG filters).
    hub::logging::init_stderr();
    let stack_name = args.options.get("stack").cloned().unwrap_or_else(|| "hub-dev".into());
    let endpoint = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL must point at the local AWS stack")?;
    let host = url::Url::parse(&endpoint)?.host_str().unwrap_or_default().to_string();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        bail!("refusing to provision {endpoint}: the local stack must be on loopback");
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let template = Template::load(&devstack::repo_root().join("template.yaml"))?;
    let stack = provision(&template, &stack_name, &sdk, &devstack::provision::LOCAL_PARAMETERS).await?;

    match args.command.as_str() {
        "provision" => println!("provisioned {} resources of stack {stack_name} at {endpoint}", stack.refs.len()),
        "env" => {
            let function = args.positional.first().context("devstack env FUNCTION_BINARY")?;
            for (k, v) in function_env(&template, &stack, function)? {
                println!("{k}={v}");
            }
        }
        "invoke" => {
            let [binary, event_file] = &args.positional[..] else { bail!("devstack invoke BINARY EVENT_FILE") };
            let name = std::path::Path::new(binary).file_name().and_then(|n| n.to_str()).context("binary name")?;
            let name = if name == "bootstrap" {
                args.options.get("function").context("--function NAME for a bootstrap binary")?
            } else {
                name
            };
            let env = function_env(&template, &stack, name)?;
            let event = std::fs::read_to_string(event_file)?;
            let process = FunctionProcess::spawn(std::path::Path::new(binary), name, &env).await?;
            process.api.wait_ready(Duration::from_secs(10)).await?;
            let outcome = process.api.invoke(&event, Duration::from_secs(30)).await?;
            // The function's own log lines, as `sam local invoke` shows them, then its answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            eprint!("{}", process.logs().await);
            match outcome {
                Outcome::Response(body) => println!("{body}"),
                Outcome::Error(body) => bail!("function error: {body}"),
            }
        }
        "token" => {
            let email = args.options.get("email").context("--email")?;
            let role = hub::auth::Role::parse(args.options.get("role").map_or("student", String::as_str))
                .context("unknown --role")?;
            let env = function_env(&template, &stack, "auth-me")?;
            let config = hub::Config::from_lookup(|k| env.get(k).cloned())?;
            let ctx = hub::Context::new(config, sdk.clone());
            let profile = hub::auth::provisioning::ExternalProfile {
                provider: "dev".into(),
                external_id: email.to_lowercase(),
                email: Some(email.clone()),
                email_verified: true,
                given_name: None,
                family_name: None,
                role,
                org_id: args.options.get("org").cloned(),
            };
            let (mut user, _) = hub::auth::provisioning::provision_user(&ctx, &profile)
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            if user.role != role {
                // Providers never grant `admin`; the operator of the local stack may.
                let promoted = hub::auth::User { role, updated_at: user.updated_at + 1, ..user.clone() };
                ctx.store().update_user(&user, &promoted).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
                user = promoted;
            }
            let pair =
                hub::auth::sessions::start_session(&ctx, &user).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
            // Shell assignments, for `eval "$(make -s token ...)"`; the user as a comment.
            println!("# {}", serde_json::to_string(&user)?);
            println!("export ACCESS='{}'", pair.access_token);
            println!("export REFRESH='{}'", pair.refresh_token);
        }
        "up" => {
            let port: u16 = args.options.get("port").map_or(Ok(3000), |p| p.parse())?;
            let gateway = Arc::new(devstack::gateway::Gateway::new(&template, &stack, &sdk)?);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("port {port} is taken"))?;
            let clever = demo_clever(&template, &stack, &sdk).await?;
            println!("Local AWS stack {stack_name} at {endpoint}: {} resources from template.yaml", stack.refs.len());
            println!("{clever}");
            println!("Dev gateway on http://127.0.0.1:{port}");
            for (route, function) in gateway.routes() {
                println!("  {:<32} -> {function}", route.key());
            }
            for (function, queue) in gateway.consumers() {
                println!("  polling {queue} -> {function}");
            }
            for function in gateway.schedules() {
                println!("  POST /_local/schedules/{function:<16} -> {function} (its EventBridge schedule, on demand)");
            }
            println!("\nTry:");
            println!("  curl -s http://127.0.0.1:{port}/health");
            println!("  eval \"$(make -s token EMAIL=ada@example.com ROLE=admin)\"   # sets $ACCESS and $REFRESH");
            println!("  curl -s -H \"Authorization: Bearer $ACCESS\" http://127.0.0.1:{port}/api/auth/me");
            println!(
                "  curl -s -X POST -H 'content-type: application/json' -d '{{\"refresh_token\":\"...\"}}' http://127.0.0.1:{port}/api/auth/refresh"
            );
            println!("  curl -s -X POST http://127.0.0.1:{port}/_local/schedules/outbox-relay");
            println!(
                "  curl -s -X POST -H \"Authorization: Bearer $ACCESS\" -H 'content-type: application/json' -d '{{\"mode\":\"full\"}}' http://127.0.0.1:{port}/api/clever/sync"
            );
            println!(
                "  curl -s -H \"Authorization: Bearer $ACCESS\" http://127.0.0.1:{port}/api/clever/districts   # then sync-history?school_id=..."
            );
            println!("\nCtrl-C stops the gateway and the local AWS stack.");
            tokio::select! {
                _ = gateway.clone().serve(listener) => {}
                _ = gateway.poll_queues() => {}
                _ = tokio::signal::ctrl_c() => println!("stopping"),
            }
        }
        "secret" => {
            // The value of a template secret, e.g. the Spark SSO secret to give `spark-cli`.
            let id = args.positional.first().context("devstack secret LOGICAL_ID")?;
            let arn = stack.refs.get(id).with_context(|| format!("template.yaml has no secret {id}"))?;
            let sm = aws_sdk_secretsmanager::Client::new(&sdk);
            let value =
                sm.get_secret_value().secret_id(arn).send().await?.secret_string.context("not a string secret")?;
            println!("{value}");
        }
        "bench-spark" => {
            let requests: usize = args.options.get("requests").map_or(Ok(200), |r| r.parse())?;
            let concurrency: usize = args.options.get("concurrency").map_or(Ok(8), |c| c.parse())?;
            devstack::bench::spark(&template, &sdk, requests, concurrency).await?;
        }
        "bench-webhooks" => {
            let deliveries: usize = args.options.get("deliveries").map_or(Ok(500), |r| r.parse())?;
            let workers: usize = args.options.get("workers").map_or(Ok(4), |c| c.parse())?;
            devstack::bench::webhooks(&template, &sdk, deliveries, workers).await?;
        }
        "bench-clever" => {
            let worker = args.options.get("worker").map_or("target/release/clever-sync-worker", String::as_str);
            let number = |k: &str, default: usize| args.options.get(k).map_or(Ok(default), |v| v.parse());
            let spec = clever_sim::DistrictSpec {
                schools: 1,
                students_per_school: number("students", 10_000)?,
                teachers_per_school: number("teachers", 500)?,
                sections_per_school: number("sections", 400)?,
            };
            devstack::bench::clever(&template, &sdk, std::path::Path::new(worker), spec).await?;
        }
        "fire" => {
            let function = args.positional.first().context("devstack fire FUNCTION")?;
            let gateway = devstack::gateway::Gateway::new(&template, &stack, &sdk)?;
            println!("{}", gateway.fire(function).await?);
        }
        "coldstart" => {
            let runs: usize = args.options.get("runs").map_or(Ok(10), |r| r.parse())?;
            println!(
                "{:<16} {:>9} {:>9} {:>9} {:>12} {:>9}",
                "function", "init p50", "init p90", "init max", "1st invoke", "peak RSS"
            );
            for binary in &args.positional {
                let path = std::path::Path::new(binary);
                let name = path.file_name().and_then(|n| n.to_str()).context("binary name")?;
                // The baseline has no template entry; the hub's functions get their real environment.
                let env = function_env(&template, &stack, name).unwrap_or_default();
                let event_file = devstack::repo_root().join("events").join(format!("{name}.json"));
                let event = std::fs::read_to_string(&event_file).unwrap_or_else(|_| {
                    std::fs::read_to_string(devstack::repo_root().join("events/health.json")).unwrap_or_default()
                });
                let (mut inits, mut firsts, mut peak) = (Vec::new(), Vec::new(), 0u64);
                for _ in 0..runs {
                    let process = FunctionProcess::spawn(path, name, &env).await?;
                    let ready = process.api.wait_ready(Duration::from_secs(10)).await?;
                    inits.push(ready.duration_since(process.spawned_at));
                    let started = std::time::Instant::now();
                    if let Outcome::Error(e) = process.api.invoke(&event, Duration::from_secs(30)).await? {
                        bail!("{name} failed: {e}");
                    }
                    firsts.push(started.elapsed());
                    peak = peak.max(process.peak_rss_kib().unwrap_or(0));
                }
                inits.sort();
                firsts.sort();
                let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
                println!(
                    "{:<16} {:>9} {:>9} {:>9} {:>12} {:>6.1} MiB",
                    name,
                    ms(inits[inits.len() / 2]),
                    ms(inits[inits.len() * 9 / 10]),
                    ms(*inits.last().context("no runs")?),
                    ms(firsts[firsts.len() / 2]),
                    peak as f64 / 1024.0
                );
            }
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}

/// The Clever simulator of `make dev` (port 4600, as the local template parameters say) with a demo
/// district of two schools, registered in the stack as an admin would (`PUT /api/clever/districts/{id}`).
async fn demo_clever(template: &Template, stack: &LocalStack, sdk: &aws_config::SdkConfig) -> anyhow::Result<String> {
    let spec = clever_sim::DistrictSpec {
        schools: 2,
        students_per_school: 300,
        teachers_per_school: 20,
        sections_per_school: 24,
    };
    let sim = clever_sim::Simulator::start(clever_sim::World::generate(1, &[spec]), 4600)
        .await
        .context("port 4600 (the Clever simulator) is taken")?;
    let (id, client_id, client_secret) = {
        let world = sim.world.lock().map_err(|_| anyhow::anyhow!("simulator state poisoned"))?;
        let d = &world.districts[0];
        (d.id.clone(), d.client_id.clone(), d.client_secret.clone())
    };
    let env = function_env(template, stack, "clever-districts-put")?;
    let ctx = hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned())?, sdk.clone());
    let credentials =
        hub::clever::districts::DistrictCredentials { name: "Demo Unified".into(), client_id, client_secret };
    let (_, schools) =
        hub::clever::districts::register(&ctx, &id, credentials).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    // The simulator's server task keeps running for the life of this process.
    Ok(format!("Clever simulator on http://127.0.0.1:4600: demo district {id} with {schools} schools registered"))
}

fn function_env(
    template: &Template,
    stack: &LocalStack,
    binary: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let def = template
        .functions()?
        .into_iter()
        .find(|f| f.binary == binary)
        .with_context(|| format!("template.yaml has no function with binary {binary}"))?;
    stack.function_env(template, &def.logical_id)
}
