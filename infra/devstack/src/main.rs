//! `devstack`: the local stack's command line (see the README's tour; `devstack help` and
//! `devstack COMMAND --help` describe every command and option).
//!
//! ```text
//! devstack up        [--stack hub-dev] [--port 3000]   provision from template.yaml, then serve the gateway
//! devstack provision [--stack hub-dev]                 create the template's resources only
//! devstack env FUNCTION [--stack hub-dev]              a function's environment (KEY=VALUE lines)
//! devstack invoke BINARY EVENT_FILE [--stack hub-dev]  run a function binary on a local Runtime API
//! devstack token --email E [--role R] [--org O]        a signed-in session for trying the API
//! devstack secret LOGICAL_ID [--stack hub-dev]         a template secret's value (e.g. SparkSsoSecret)
//! devstack fire FUNCTION [--stack hub-dev]             run a scheduled function now
//! devstack bench-spark [--requests 200] [--concurrency 8] Spark SSO and webhook latency and throughput
//! devstack bench-webhooks [--deliveries 500] [--workers 4] outbound webhook deliveries per second
//! devstack bench-observers [--quests 50] [--tasks 10] [--blocks 10] an observer's portfolio: DynamoDB requests, latency
//! devstack bench-oauth [--requests 200] [--concurrency 4] [--reference-token-url URL --reference-introspect-url URL]
//! devstack bench-clever [--schools 1] [--students 10000] [--teachers 500] [--sections 400] [--realistic-users]
//!                    [--page-size N] [--events-page-size N] [--rollover] [--concurrency 5] [--worker PATH]
//! devstack bench-fairness [--deliveries 200] [--neighbour 200] [--workers 25] a healthy school's deliveries behind a hanging one
//! devstack bench-outbound-cache [--hosts 10000]        memory of the per-host outbound clients
//! devstack coldstart BINARY... [--runs 10]              init time, first invocation and peak memory
//! ```
//! Every command takes `--parameter-overrides "Key=Value Key2=Value2"` (repeatable), like
//! `sam local start-api --parameter-overrides`, over the local stack's parameters.
//! It talks only to loopback endpoints: DynamoDB at `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local) when set,
//! everything else at `AWS_ENDPOINT_URL` (moto server).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use devstack::provision::{LocalStack, provision};
use devstack::runtime_api::{FunctionProcess, Outcome};
use devstack::template::Template;

/// The local stand-in for AWS: provisions the resources of template.yaml in DynamoDB Local and moto
/// server, serves every HTTP function on a dev gateway, runs function binaries on a local Lambda
/// Runtime API, and benchmarks them.
#[derive(Parser)]
#[command(name = "devstack", after_help = ENV_HELP)]
struct Cli {
    /// Stack name: the prefix of every local resource name.
    #[arg(long, global = true, default_value = "hub-dev")]
    stack: String,
    /// Template parameters over the local defaults, as `sam local start-api --parameter-overrides` takes
    /// them: "Key=Value Key2=Value2" (or ParameterKey=Key,ParameterValue=Value); repeatable.
    #[arg(long, global = true, value_name = "KEY=VALUE ...")]
    parameter_overrides: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

const ENV_HELP: &str = "Environment: AWS_ENDPOINT_URL (moto server: S3, SQS, Secrets Manager) and \
AWS_ENDPOINT_URL_DYNAMODB (DynamoDB Local), both on loopback; AWS_REGION and any AWS_ACCESS_KEY_ID / \
AWS_SECRET_ACCESS_KEY. `make dev` and `make test` set them.";

#[derive(Subcommand)]
enum Command {
    /// Provision from template.yaml, then serve every route on the dev gateway, poll the queues and run
    /// the Clever simulator with a demo district (Ctrl-C stops).
    Up {
        /// The gateway's port on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Create (or keep) the template's tables, buckets, queues and secrets, and nothing else.
    Provision,
    /// Print a function's environment as Lambda would set it (KEY=VALUE lines).
    Env {
        /// The function's binary name (Metadata.BuildProperties.Binary), e.g. auth-me.
        function: String,
    },
    /// Run a function binary once on a local Lambda Runtime API with an event, like `sam local invoke`.
    Invoke {
        /// The binary, e.g. target/debug/health (or a cargo-lambda `bootstrap` with --function).
        binary: PathBuf,
        /// A JSON event file, e.g. events/health.json.
        event_file: PathBuf,
        /// The function's binary name, when BINARY is named `bootstrap`.
        #[arg(long)]
        function: Option<String>,
    },
    /// Sign a user in and print a session as shell exports ($ACCESS, $REFRESH).
    Token {
        /// The user's email (the account is created on first use).
        #[arg(long)]
        email: String,
        /// student, teacher, org_admin or admin.
        #[arg(long, default_value = "student")]
        role: String,
        /// The user's organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Print a template secret's value, e.g. SparkSsoSecret.
    Secret {
        /// The secret's logical id in template.yaml.
        logical_id: String,
    },
    /// Run a scheduled function now, as its EventBridge schedule would.
    Fire {
        /// The function's binary name, e.g. outbox-relay.
        function: String,
    },
    /// Spark SSO and webhook latency and throughput through the dev gateway (fresh stack).
    BenchSpark {
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Outbound webhook deliveries per second (fresh stack).
    BenchWebhooks {
        #[arg(long, default_value_t = 500)]
        deliveries: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
    },
    /// An observer's portfolio of a student with a long history: DynamoDB requests and latency.
    BenchObservers {
        #[arg(long, default_value_t = 50)]
        quests: usize,
        #[arg(long, default_value_t = 10)]
        tasks: usize,
        /// Evidence blocks per quest (half of them files).
        #[arg(long, default_value_t = 10)]
        blocks: usize,
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// The OAuth token endpoint and introspection, ours and (optionally) a reference server's.
    BenchOauth {
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// A reference OAuth server's token endpoint (node-oidc-provider), e.g. http://127.0.0.1:4700/token
        #[arg(long)]
        reference_token_url: Option<String>,
        #[arg(long)]
        reference_introspect_url: Option<String>,
        #[arg(long, default_value = "bench-client")]
        reference_client_id: String,
        #[arg(long, default_value = "bench-secret")]
        reference_client_secret: String,
        /// Extra form fields of the reference's client-credentials request, `k=v&k2=v2`.
        #[arg(long, default_value = "")]
        reference_extra: String,
    },
    /// Schools of the Clever simulator synced by the real clever-sync-worker binary: one school's runs
    /// (full, unchanged, incremental, year rollover), or many schools by several workers at once.
    BenchClever {
        #[arg(long, default_value_t = 1)]
        schools: usize,
        #[arg(long, default_value_t = 10_000)]
        students: usize,
        #[arg(long, default_value_t = 500)]
        teachers: usize,
        #[arg(long, default_value_t = 400)]
        sections: usize,
        /// Students carry Clever's optional fields (3 to 5 KB each, as real districts send).
        #[arg(long)]
        realistic_users: bool,
        /// The worker's CLEVER_PAGE_SIZE (Data API pages; default the template's 10,000).
        #[arg(long)]
        page_size: Option<usize>,
        /// The worker's CLEVER_EVENTS_PAGE_SIZE (default the template's 1,000).
        #[arg(long)]
        events_page_size: Option<usize>,
        /// Adds an incremental run after a year rollover (one school).
        #[arg(long)]
        rollover: bool,
        /// Worker processes at once (many schools).
        #[arg(long, default_value_t = 5)]
        concurrency: usize,
        /// The worker binary.
        #[arg(long, default_value = "target/release/clever-sync-worker")]
        worker: PathBuf,
    },
    /// LTI launch validation (ours and, with --python, pylti1p3's on the same launches) and an NRPS
    /// roster sync against the LTI platform simulator.
    BenchLti {
        #[arg(long, default_value_t = 2000)]
        launches: usize,
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 100)]
        page_size: usize,
        /// A Python with pylti1p3 installed (bench/lti makes one).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Run schemathesis against the dev gateway on a fresh stack, as each role; fails on any answer
    /// ≥ 500, any answer that does not conform to the OpenAPI document, or too few requests.
    Contract {
        /// The schemathesis executable (make test installs it into .venv-schemathesis).
        #[arg(long, default_value = ".venv-schemathesis/bin/schemathesis")]
        schemathesis: PathBuf,
        #[arg(long, default_value_t = 25)]
        max_examples: usize,
        #[arg(long, default_value_t = 2000)]
        min_requests: usize,
    },
    /// A healthy organization's webhook deliveries alone, then behind a neighbour whose receiver hangs.
    BenchFairness {
        #[arg(long, default_value_t = 200)]
        deliveries: usize,
        #[arg(long, default_value_t = 200)]
        neighbour: usize,
        #[arg(long, default_value_t = 25)]
        workers: usize,
    },
    /// Resident memory of the outbound clients one warm instance keeps as launches name new hosts.
    BenchOutboundCache {
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
    },
    /// Print the API's OpenAPI 3.1 document (derived from the handlers; docs/openapi.json is this).
    Openapi,
    /// Init time, first invocation and peak memory of function binaries on a local Runtime API.
    Coldstart {
        /// The binaries, e.g. target/release/health.
        #[arg(required = true)]
        binaries: Vec<PathBuf>,
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The functions' own JSON log lines (on stderr), as `sam local start-api` shows them (RUST_LOG filters).
    hub::support::logging::init_stderr();
    if let Command::Openapi = cli.command {
        print!("{}", hub::api::openapi::document_json());
        return std::process::ExitCode::SUCCESS;
    }
    if let Command::BenchOutboundCache { hosts } = cli.command {
        // No AWS needed: only the context's client cache is measured.
        return match devstack::bench_fairness::outbound_cache(hosts) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("devstack: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Errors are the user's to read: their chain of causes, without a backtrace.
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devstack: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let stack_name = cli.stack.clone();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let endpoints = devstack::provision::local_endpoints(&sdk)?;
    let endpoint = describe_endpoints(&endpoints);
    let template = Template::load(&devstack::repo_root().join("template.yaml"))?;
    let overrides =
        devstack::provision::parse_parameter_overrides(&cli.parameter_overrides, &template.parameter_names())?;
    let parameters: Vec<(&str, &str)> = devstack::provision::LOCAL_PARAMETERS
        .iter()
        .copied()
        .chain(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let stack = provision(&template, &stack_name, &sdk, &parameters).await?;

    match cli.command {
        Command::Provision => {
            println!("provisioned {} resources of stack {stack_name} ({endpoint})", stack.refs.len())
        }
        Command::Env { function } => {
            for (k, v) in function_env(&template, &stack, &function)? {
                println!("{k}={v}");
            }
        }
        Command::Invoke { binary, event_file, function } => {
            let name = binary.file_name().and_then(|n| n.to_str()).context("binary name")?;
            let name = if name == "bootstrap" {
                function.as_deref().context("--function NAME for a bootstrap binary")?
            } else {
                name
            };
            let env = function_env(&template, &stack, name)?;
            let event =
                std::fs::read_to_string(&event_file).with_context(|| format!("reading {}", event_file.display()))?;
            let process = FunctionProcess::spawn(&binary, name, &env).await?;
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
        Command::Token { email, role, org } => {
            let role = hub::domain::auth::Role::parse(&role).with_context(|| format!("unknown --role {role}"))?;
            let env = function_env(&template, &stack, "auth-me")?;
            let config = hub::Config::from_lookup(|k| env.get(k).cloned())?;
            let ctx = hub::Context::new(config, sdk.clone());
            let profile = hub::domain::auth::provisioning::ExternalProfile {
                provider: "dev".into(),
                external_id: email.to_lowercase(),
                email: Some(email.clone()),
                email_proven: true,
                email_is_school_record: true,
                given_name: None,
                family_name: None,
                role,
                org_id: org,
            };
            // The operator of the local stack vouches for the address and grants the role (even `admin`).
            let user = hub::domain::auth::provisioning::provision_as_operator(&ctx, &profile)
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            let pair = hub::domain::auth::sessions::start_session(&ctx, &user)
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            // Shell assignments, for `eval "$(make -s token ...)"`; the user as a comment.
            println!("# {}", serde_json::to_string(&user)?);
            println!("export ACCESS='{}'", pair.access_token);
            println!("export REFRESH='{}'", pair.refresh_token);
        }
        Command::Up { port } => {
            let gateway = Arc::new(devstack::gateway::Gateway::new(&template, &stack, &sdk)?);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("port {port} is taken"))?;
            println!("Local AWS stack {stack_name}: {} resources from template.yaml ({endpoint})", stack.refs.len());
            for (key, value) in &overrides {
                println!("  parameter override {key}={value}");
            }
            // The demo district is a convenience: the stack serves without it.
            match demo_clever(&template, &stack, &sdk).await {
                Ok(clever) => println!("{clever}"),
                Err(e) => println!("WARNING: no demo Clever district: {e:#}. The stack runs without it."),
            }
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
        Command::Secret { logical_id } => {
            // The value of a template secret, e.g. the Spark SSO secret to give `spark-cli`.
            let arn =
                stack.refs.get(&logical_id).with_context(|| format!("template.yaml has no secret {logical_id}"))?;
            let sm = aws_sdk_secretsmanager::Client::new(&sdk);
            let value =
                sm.get_secret_value().secret_id(arn).send().await?.secret_string.context("not a string secret")?;
            println!("{value}");
        }
        Command::BenchSpark { requests, concurrency } => {
            devstack::bench::spark(&template, &sdk, requests, concurrency).await?;
        }
        Command::BenchWebhooks { deliveries, workers } => {
            devstack::bench::webhooks(&template, &sdk, deliveries, workers).await?;
        }
        Command::BenchObservers { quests, tasks, blocks, requests } => {
            devstack::bench::observers(&template, &sdk, quests, tasks, blocks, requests).await?;
        }
        Command::BenchOauth {
            requests,
            concurrency,
            reference_token_url,
            reference_introspect_url,
            reference_client_id,
            reference_client_secret,
            reference_extra,
        } => {
            let reference = match (reference_token_url, reference_introspect_url) {
                (Some(token_url), Some(introspect_url)) => Some(devstack::bench::OAuthTarget {
                    name: "node-oidc-provider".into(),
                    token_url,
                    introspect_url,
                    client_id: reference_client_id,
                    secret: reference_client_secret,
                    scope: "webhooks:manage".into(),
                    extra: url::form_urlencoded::parse(reference_extra.as_bytes()).into_owned().collect(),
                }),
                _ => None,
            };
            devstack::bench::oauth(&template, &sdk, requests, concurrency, reference).await?;
        }
        Command::BenchClever {
            schools,
            students,
            teachers,
            sections,
            realistic_users,
            page_size,
            events_page_size,
            rollover,
            concurrency,
            worker,
        } => {
            let spec = clever_sim::DistrictSpec {
                realistic_users,
                ..clever_sim::DistrictSpec::sized(schools.max(1), students, teachers, sections)
            };
            let options = devstack::bench_clever::Options {
                spec,
                worker,
                page_size,
                events_page_size,
                rollover,
                concurrency: concurrency.max(1),
            };
            devstack::bench_clever::run(&template, &sdk, options).await?;
        }
        Command::BenchLti { launches, members, page_size, python } => {
            let options = devstack::bench_lti::Options { launches, members, page_size, python };
            devstack::bench_lti::run(&template, &sdk, options).await?;
        }
        Command::Fire { function } => {
            let gateway = devstack::gateway::Gateway::new(&template, &stack, &sdk)?;
            println!("{}", gateway.fire(&function).await?);
        }
        Command::BenchFairness { deliveries, neighbour, workers } => {
            let options = devstack::bench_fairness::Options { deliveries, neighbour, workers };
            devstack::bench_fairness::run(&template, &sdk, options).await?;
        }
        Command::Openapi | Command::BenchOutboundCache { .. } => unreachable!("run before any AWS set-up"),
        Command::Contract { schemathesis, max_examples, min_requests } => {
            let options = devstack::contract::Options { schemathesis: &schemathesis, max_examples, min_requests };
            devstack::contract::run(&template, &sdk, options).await?;
        }
        Command::Coldstart { binaries, runs } => {
            println!(
                "{:<16} {:>9} {:>9} {:>9} {:>12} {:>9}",
                "function", "init p50", "init p90", "init max", "1st invoke", "peak RSS"
            );
            for path in &binaries {
                let name = path.file_name().and_then(|n| n.to_str()).context("binary name")?;
                // The baseline has no template entry; the hub's functions get their real environment.
                let env = function_env(&template, &stack, name).unwrap_or_default();
                let event_file = devstack::repo_root().join("events").join(format!("{name}.json"));
                let event = std::fs::read_to_string(&event_file).unwrap_or_else(|_| {
                    std::fs::read_to_string(devstack::repo_root().join("events/health.json")).unwrap_or_default()
                });
                let (mut inits, mut firsts, mut peak, mut refused) = (Vec::new(), Vec::new(), 0u64, false);
                for _ in 0..runs {
                    let process = FunctionProcess::spawn(path, name, &env).await?;
                    let ready = process.api.wait_ready(Duration::from_secs(10)).await?;
                    inits.push(ready.duration_since(process.spawned_at));
                    let started = std::time::Instant::now();
                    // A sample a function must refuse (a rotation step of a secret version that does not
                    // exist) is still its first invocation; it is marked, not fatal.
                    refused |= matches!(process.api.invoke(&event, Duration::from_secs(30)).await?, Outcome::Error(_));
                    firsts.push(started.elapsed());
                    peak = peak.max(process.peak_rss_kib().unwrap_or(0));
                }
                inits.sort();
                firsts.sort();
                let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
                println!(
                    "{:<16} {:>9} {:>9} {:>9} {:>12} {:>6.1} MiB{}",
                    name,
                    ms(inits[inits.len() / 2]),
                    ms(inits[inits.len() * 9 / 10]),
                    ms(*inits.last().context("no runs")?),
                    ms(firsts[firsts.len() / 2]),
                    peak as f64 / 1024.0,
                    if refused { "  (its sample event is refused, as it should be)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// Where each service of the local stack is, e.g. `DynamoDB at http://127.0.0.1:8000; S3, SQS, Secrets
/// Manager at http://127.0.0.1:4566`.
fn describe_endpoints(endpoints: &[(&str, String)]) -> String {
    let mut distinct: Vec<(&str, Vec<&str>)> = Vec::new();
    for (service, url) in endpoints {
        match distinct.iter_mut().find(|(u, _)| u == url) {
            Some((_, services)) => services.push(service),
            None => distinct.push((url, vec![service])),
        }
    }
    let parts: Vec<String> =
        distinct.iter().map(|(url, services)| format!("{} at {url}", services.join(", "))).collect();
    parts.join("; ")
}

/// The Clever simulator of `make dev` (port 4600, as the local template parameters say) with a demo
/// district of two schools, registered in the stack as an admin would (`PUT /api/clever/districts/{id}`).
/// When `--parameter-overrides` point Clever elsewhere (a real sandbox), there is no demo district:
/// the simulator's credentials mean nothing there.
async fn demo_clever(template: &Template, stack: &LocalStack, sdk: &aws_config::SdkConfig) -> anyhow::Result<String> {
    let simulated = |key: &str| {
        let local = devstack::provision::LOCAL_PARAMETERS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        stack.parameters.get(key).map(String::as_str) == local
    };
    if !simulated("CleverApiUrl") || !simulated("CleverOauthUrl") {
        return Ok(format!(
            "Clever at {} (parameter override): no demo district; register yours with PUT /api/clever/districts/{{id}}",
            stack.parameters.get("CleverApiUrl").map_or("?", String::as_str)
        ));
    }
    let spec = clever_sim::DistrictSpec::sized(2, 300, 20, 24);
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
    let credentials = hub::integrations::clever::districts::DistrictCredentials {
        name: "Demo Unified".into(),
        client_id,
        client_secret,
    };
    let (_, schools) = tokio::time::timeout(
        Duration::from_secs(30),
        hub::integrations::clever::districts::register(&ctx, &id, credentials),
    )
    .await
    .context("registering the demo district took over 30 s")?
    .map_err(|e| anyhow::anyhow!(e.to_string()))
    .with_context(|| format!("registering demo district {id} with the simulator"))?;
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
