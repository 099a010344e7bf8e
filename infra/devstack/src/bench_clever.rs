//! `devstack bench-clever`: the real `clever-sync-worker` binary (release build) through the local
//! Lambda Runtime API against the Clever simulator and the local AWS stack, a fresh process per run so
//! each run's peak memory is its own.
//!
//! - **One school** (`--schools 1`): a first full sync, a full sync with nothing changed, an
//!   incremental sync with nothing changed, one after 25 changes, and with `--rollover` one after a
//!   year rollover (every student moves up a grade, a quarter graduate, as many arrive, every section
//!   is replaced: about 2 events per student). `--realistic-users` gives students Clever's optional
//!   fields (3 to 5 KB each, as real districts send); `--page-size` and `--events-page-size` set the
//!   worker's `CLEVER_PAGE_SIZE` and `CLEVER_EVENTS_PAGE_SIZE`. Then `GET /health/clever-auth` latency.
//! - **Many schools** (`--schools N --concurrency C`): one district's N schools queued for a full sync
//!   (each job twice, as an SQS redelivery or an admin's request during the nightly run would), drained
//!   by C worker processes at once (warm instances, like Lambda's), with Clever's real rate limit
//!   (1,200 requests a minute per token): wall time, Clever requests (peak per minute), 429s, roster
//!   writes, jobs skipped by the school lease, and each worker's peak memory.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::SdkConfig;
use clever_sim::{DistrictSpec, Simulator, World};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::bench::{BenchStack, bench_stack, function_context};
use crate::runtime_api::{FunctionProcess, Outcome};
use crate::template::Template;

pub struct Options {
    pub spec: DistrictSpec,
    pub worker: PathBuf,
    pub page_size: Option<usize>,
    pub events_page_size: Option<usize>,
    pub rollover: bool,
    pub concurrency: usize,
}

/// The simulator, a registered district and the worker's environment.
struct Bench {
    sim: Simulator,
    stack: BenchStack,
    district: String,
    env: BTreeMap<String, String>,
    sample: Value,
}

async fn prepare(template: &Template, sdk: &SdkConfig, options: &Options) -> anyhow::Result<Bench> {
    let sim = Simulator::start(World::generate(3, &[options.spec]), 0).await?;
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let stack =
        bench_stack(template, sdk, &[("CleverApiUrl", sim.base_url.as_str()), ("CleverOauthUrl", oauth.as_str())])
            .await?;
    let (district, client_id, client_secret) = {
        let w = sim.world.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let d = &w.districts[0];
        (d.id.clone(), d.client_id.clone(), d.client_secret.clone())
    };
    let admin = function_context(template, &stack.stack, sdk, "clever-districts-put")?;
    let credentials =
        hub::integrations::clever::districts::DistrictCredentials { name: "Bench".into(), client_id, client_secret };
    hub::integrations::clever::districts::register(&admin, &district, credentials)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let def = template.functions()?.into_iter().find(|f| f.binary == "clever-sync-worker").context("worker")?;
    let mut env = stack.stack.function_env(template, &def.logical_id)?;
    if let Some(size) = options.page_size {
        env.insert("CLEVER_PAGE_SIZE".into(), size.to_string());
    }
    if let Some(size) = options.events_page_size {
        env.insert("CLEVER_EVENTS_PAGE_SIZE".into(), size.to_string());
    }
    let sample =
        serde_json::from_str(&std::fs::read_to_string(crate::repo_root().join("events/clever-sync-worker.json"))?)?;
    Ok(Bench { sim, stack, district, env, sample })
}

impl Bench {
    fn job(&self, school: &str, mode: &str) -> String {
        let job = json!({"district_id": self.district, "school_id": school, "mode": mode, "force": false, "trigger": "bench"});
        let mut event = self.sample.clone();
        event["Records"][0]["body"] = Value::String(job.to_string());
        event.to_string()
    }

    fn world(&self) -> anyhow::Result<std::sync::MutexGuard<'_, World>> {
        self.sim.world.lock().map_err(|_| anyhow::anyhow!("simulator state poisoned"))
    }

    fn schools(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.world()?.schools.keys().cloned().collect())
    }

    /// The runs of one school since `since`: (sync id, status, roster writes).
    async fn runs(&self, school: &str, since: i64) -> anyhow::Result<Vec<(String, String, u64)>> {
        let store = self.stack.ctx.store();
        let now = self.stack.ctx.clock.now();
        let records =
            store.sync_history(school, since, now + 60, None, 500).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let mut runs: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for r in records {
            let run = runs.entry(r.sync_id.clone()).or_insert((r.status.clone(), 0));
            run.1 += r.created + r.updated + r.deleted;
            if r.status != "Success" {
                run.0 = r.status;
            }
        }
        Ok(runs.into_iter().map(|(id, (status, writes))| (id, status, writes)).collect())
    }
}

pub async fn run(template: &Template, sdk: &SdkConfig, options: Options) -> anyhow::Result<()> {
    let bench = prepare(template, sdk, &options).await?;
    if options.spec.schools > 1 {
        return many_schools(&bench, &options).await;
    }
    one_school(&bench, &options).await
}

async fn one_school(bench: &Bench, options: &Options) -> anyhow::Result<()> {
    let spec = options.spec;
    let school = bench.schools()?.into_iter().next().context("a school")?;
    {
        // A district with events: one (a no-op update) gives the first full sync a baseline id.
        let mut w = bench.world()?;
        let first = w.school_users(&school, "student").first().and_then(|u| u["id"].as_str()).map(str::to_string);
        if let Some(id) = first {
            w.update_user(&id, |_| {});
        }
    }
    let page = options.page_size.unwrap_or(10_000);
    let user_bytes = {
        let w = bench.world()?;
        let users = w.school_users(&school, "student");
        users.iter().map(|u| u.to_string().len()).sum::<usize>() / users.len().max(1)
    };
    println!(
        "school: {} students ({} users, {user_bytes} bytes each on average), {} teachers, {} sections; \
         page size {page}, events page size {}",
        spec.students_per_school,
        if spec.realistic_users { "realistic" } else { "compact" },
        spec.teachers_per_school,
        spec.sections_per_school,
        options.events_page_size.unwrap_or(1_000),
    );
    println!(
        "{:<34} {:>9} {:>8} {:>9} {:>14} {:>10} {:>9}",
        "run", "status", "seconds", "events", "Clever requests", "writes", "peak RSS"
    );
    let mut runs: Vec<(&str, &str, Change)> = vec![
        ("full (first)", "full", Change::None),
        ("full (nothing changed)", "full", Change::None),
        ("incremental (nothing changed)", "incremental", Change::None),
        ("incremental (25 changes)", "incremental", Change::Renames(25)),
    ];
    if options.rollover {
        runs.push(("incremental (year rollover)", "incremental", Change::Rollover));
    }
    for (label, mode, change) in runs {
        let events = match change {
            Change::None => 0,
            Change::Renames(n) => {
                let mut w = bench.world()?;
                let ids: Vec<String> = w
                    .school_users(&school, "student")
                    .iter()
                    .take(n)
                    .filter_map(|u| u["id"].as_str().map(str::to_string))
                    .collect();
                for id in &ids {
                    w.update_user(id, |u| u["name"]["first"] = "Changed".into());
                }
                ids.len()
            }
            Change::Rollover => bench.world()?.year_rollover(&school),
        };
        let process = FunctionProcess::spawn(&options.worker, "clever-sync-worker", &bench.env).await?;
        process.api.wait_ready(Duration::from_secs(10)).await?;
        let before = bench.sim.count("/");
        let since = bench.stack.ctx.clock.now() - 1;
        let started = Instant::now();
        let outcome = process.api.invoke(&bench.job(&school, mode), Duration::from_secs(900)).await?;
        let took = started.elapsed();
        anyhow::ensure!(matches!(outcome, Outcome::Response(_)), "worker failed: {outcome:?}");
        let requests = bench.sim.count("/") - before;
        let (status, writes) =
            bench.runs(&school, since).await?.last().map(|(_, s, w)| (s.clone(), *w)).unwrap_or_default();
        println!(
            "{label:<34} {status:>9} {:>8.2} {events:>9} {requests:>14} {writes:>10} {:>12}",
            took.as_secs_f64(),
            mib(process.peak_rss_kib())
        );
    }
    health_latency(&bench.stack.base).await
}

#[derive(Clone, Copy)]
enum Change {
    None,
    Renames(usize),
    Rollover,
}

/// GET /health/clever-auth through the dev gateway: the first answer builds the report, the others are
/// served from the warm instance's cache.
async fn health_latency(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let r = http.get(format!("{base}/health/clever-auth")).send().await?;
        anyhow::ensure!(r.status() == 200, "health answered {}", r.status());
        r.bytes().await?;
        latencies.push(started.elapsed());
    }
    let first = latencies[0];
    let mut warm = latencies[1..].to_vec();
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "GET /health/clever-auth: first {:.1} ms (builds the report), then p50 {:.2} ms, p99 {:.2} ms (cached)",
        ms(first),
        ms(warm[warm.len() / 2]),
        ms(warm[warm.len() * 99 / 100])
    );
    Ok(())
}

async fn many_schools(bench: &Bench, options: &Options) -> anyhow::Result<()> {
    let schools = bench.schools()?;
    let since = bench.stack.ctx.clock.now() - 1;
    // Every school twice, the second right after the first: the lease lets one run per school.
    let jobs: VecDeque<String> =
        schools.iter().flat_map(|school| [bench.job(school, "full"), bench.job(school, "full")]).collect();
    let job_count = jobs.len();
    let jobs = Arc::new(Mutex::new(jobs));
    println!(
        "{} schools of {} students, {} teachers, {} sections ({} users); {job_count} jobs, {} workers at once; \
         Clever limit 1,200 requests a minute per token",
        schools.len(),
        options.spec.students_per_school,
        options.spec.teachers_per_school,
        options.spec.sections_per_school,
        if options.spec.realistic_users { "realistic" } else { "compact" },
        options.concurrency,
    );
    // Clever requests per second, sampled, for the peak minute.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sim, sampling) = (bench.sim.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut counts = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                counts.push(sim.count("/v3."));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            counts
        })
    };
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..options.concurrency {
        let (jobs, env, worker) = (jobs.clone(), bench.env.clone(), options.worker.clone());
        lanes.push(tokio::spawn(async move {
            let process = FunctionProcess::spawn(&worker, "clever-sync-worker", &env).await?;
            process.api.wait_ready(Duration::from_secs(10)).await?;
            loop {
                let Some(job) = jobs.lock().await.pop_front() else { break };
                let outcome = process.api.invoke(&job, Duration::from_secs(900)).await?;
                anyhow::ensure!(matches!(outcome, Outcome::Response(_)), "worker failed: {outcome:?}");
            }
            Ok::<_, anyhow::Error>(process.peak_rss_kib())
        }));
    }
    let mut peaks = Vec::new();
    for lane in lanes {
        peaks.push(lane.await??);
    }
    let took = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let counts = sampler.await?;
    let peak_minute = counts.windows(61.min(counts.len())).map(|w| w[w.len() - 1] - w[0]).max().unwrap_or(0);
    let (mut runs, mut writes, mut failed) = (0, 0, 0);
    for school in &schools {
        for (_, status, w) in bench.runs(school, since).await? {
            runs += 1;
            writes += w;
            failed += usize::from(status != "Success");
        }
    }
    println!(
        "wall {:.1} s; {runs} runs ({failed} not Success), {} jobs skipped by the school lease; \
         {} Clever requests (peak {peak_minute} in a minute), {} answered 429; {writes} roster writes; \
         worker peak RSS {}",
        took.as_secs_f64(),
        job_count - runs,
        bench.sim.count("/v3."),
        bench.sim.answered(429),
        peaks.iter().map(|kib| mib(*kib)).collect::<Vec<_>>().join(", "),
    );
    Ok(())
}

/// A peak memory figure, or that there is none (the process was gone before it was read).
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "not measured".to_string(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}
