//! `devstack bench-lti`: what an LTI launch and a roster sync cost.
//!
//! 1. **Launch validation with a warm key cache**: the same signed launches (RS256, 2048-bit, from the
//!    LTI platform simulator) checked by the launch handler's path (the state taken from DynamoDB, the
//!    registration read, the platform key from the instance's cache, then format, signature, audience,
//!    times, nonce, deployment, version, message claims) and, in the same run, by pylti1p3's
//!    `MessageLaunch.validate()` (`bench/lti/pylti1p3_validate.py`): CPU time per launch for both (ours
//!    also by the wall clock).
//! 2. **Names and Role Provisioning**: a course of `members` members in pages of `page_size`, synced
//!    by `lti::roster::run` (what the roster worker runs) against the simulator and DynamoDB Local, twice (accounts created, then
//!    updated): time, platform requests, items written.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use aws_config::SdkConfig;
use serde_json::{Value, json};

use crate::bench::{bench_stack, function_context};
use crate::template::Template;

pub struct Options {
    pub launches: usize,
    pub members: usize,
    pub page_size: usize,
    /// The Python with pylti1p3 installed; none skips the comparison.
    pub python: Option<PathBuf>,
}

const CLIENT_ID: &str = "bench-tool";
const DEPLOYMENT: &str = "bench-deployment";
const CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";

pub async fn run(template: &Template, sdk: &SdkConfig, options: Options) -> anyhow::Result<()> {
    launch_validation(template, sdk, options.launches, options.python.as_deref()).await?;
    roster(template, sdk, options.members, options.page_size).await
}

fn launch_claims(issuer: &str, i: usize, now: i64) -> Value {
    json!({
        "iss": issuer, "aud": CLIENT_ID, "sub": format!("student-{i}"), "nonce": format!("nonce-{i}"),
        "iat": now, "exp": now + 3600, "email": format!("student-{i}@school.example"), "given_name": "Ada",
        format!("{CLAIM}deployment_id"): DEPLOYMENT,
        format!("{CLAIM}message_type"): "LtiResourceLinkRequest",
        format!("{CLAIM}version"): "1.3.0",
        format!("{CLAIM}roles"): ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
        format!("{CLAIM}context"): {"id": "course-1", "title": "Biology"},
        format!("{CLAIM}resource_link"): {"id": "link-1"},
        format!("{CLAIM}target_link_uri"): "https://hub.example/api/lti/launch",
        format!("{CLAIM}custom"): {"quest_id": "qst_bench"},
    })
}

/// Mean, p50 and p99 of microsecond samples (the first tenth, at most 20, dropped as warm-up).
fn summary(mut samples: Vec<f64>) -> (f64, f64, f64) {
    let warm = samples.split_off(samples.len().min(20).min(samples.len() / 10));
    let mut sorted = warm;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (sorted.iter().sum::<f64>() / sorted.len() as f64, at(0.5), at(0.99))
}

/// A registration of the LTI platform simulator, stored as an admin would.
async fn registered_platform(
    ctx: &hub::Context,
    tool_jwks: &str,
) -> anyhow::Result<(lti_platform_sim::Platform, hub::integrations::lti::registration::Registration)> {
    let platform = lti_platform_sim::Platform::start(0).await?;
    platform.trust_tool(CLIENT_ID, tool_jwks);
    let now = ctx.clock.now();
    let registration = hub::integrations::lti::registration::Registration {
        id: hub::integrations::lti::registration::registration_id(&platform.base_url, CLIENT_ID),
        organization_id: "bench".into(),
        name: "Bench LMS".into(),
        issuer: platform.base_url.clone(),
        client_id: CLIENT_ID.into(),
        deployment_ids: vec![DEPLOYMENT.into()],
        auth_url: format!("{}/authorize", platform.base_url),
        token_url: platform.token_url(),
        jwks_url: platform.jwks_url(),
        emails_are_school_records: false,
        created_at: now,
        updated_at: now,
    };
    ctx.store().put_lti_registration(&registration, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((platform, registration))
}

/// This process's CPU time (every thread), in microseconds: the clock pylti1p3's side uses too.
fn cpu_us() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// Each launch as the launch handler checks it after the browser's state cookie: the state taken
/// from DynamoDB (single use), the registration read, the platform's key from the instance's cache
/// (warm after the first launch), then the signature and every claim with the state's nonce. Timed
/// with the process's CPU clock, like pylti1p3's `validate()` on the same launches (its state, nonce
/// and registration in memory), and by the wall clock (ours includes DynamoDB Local's answers).
async fn launch_validation(
    template: &Template,
    sdk: &SdkConfig,
    launches: usize,
    python: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let bench = bench_stack(template, sdk, &[]).await?;
    let ctx = function_context(template, &bench.stack, sdk, "lti-launch")?;
    let (platform, registration) = registered_platform(&ctx, &format!("{}/api/lti/jwks", bench.base)).await?;
    let issuer = platform.base_url.clone();
    let now = ctx.clock.now();
    let launches: Vec<(String, String, String)> = (0..launches)
        .map(|i| (format!("state-{i:06}"), format!("nonce-{i}"), platform.sign(&launch_claims(&issuer, i, now))))
        .collect();
    for (state, nonce, _) in &launches {
        let record = hub::store::lti::LaunchState {
            registration_id: registration.id.clone(),
            nonce: nonce.clone(),
            expires_at: now + 600,
        };
        ctx.store().put_lti_state(state, &record).await?;
    }
    let (mut cpu, mut wall) = (Vec::with_capacity(launches.len()), Vec::with_capacity(launches.len()));
    for (state, _, token) in &launches {
        let (cpu_started, started) = (cpu_us(), Instant::now());
        let taken = ctx.store().take_lti_state(state).await?.context("the launch's state")?;
        let unverified = hub::integrations::lti::launch::parse(token)?;
        let found = ctx.store().lti_registration(&registration.id).await?.context("the registration")?;
        anyhow::ensure!(found.id == taken.registration_id, "the state names another registration");
        hub::integrations::lti::launch::verify_with_registration(&ctx, unverified, &found, &taken.nonce).await?;
        cpu.push(cpu_us() - cpu_started);
        wall.push(started.elapsed().as_nanos() as f64 / 1000.0);
    }
    println!("== launch validation, warm key cache ({} launches, RS256 2048-bit, one at a time)", launches.len());
    println!("{:<44} {:>9} {:>9} {:>9}", "", "mean µs", "p50 µs", "p99 µs");
    let row = |name: &str, (mean, p50, p99): (f64, f64, f64)| {
        println!("{name:<44} {mean:>9.1} {p50:>9.1} {p99:>9.1}");
    };
    row("hub: state, registration, key, verify (CPU)", summary(cpu));
    row("hub: the same, wall clock (DynamoDB Local)", summary(wall));
    let Some(python) = python else {
        println!("(pylti1p3 skipped: no --python)");
        return Ok(());
    };
    let jwks = json!({"keys": platform.keys.lock().unwrap().iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    let file = std::env::temp_dir().join(format!("bench-lti-{}.json", std::process::id()));
    let given = json!({"issuer": issuer, "client_id": CLIENT_ID, "deployment_id": DEPLOYMENT, "jwks": jwks,
        "launches": launches.iter().map(|(state, nonce, token)| json!({"id_token": token, "nonce": nonce, "state": state})).collect::<Vec<_>>()});
    std::fs::write(&file, given.to_string())?;
    let out = tokio::process::Command::new(python)
        .arg(crate::repo_root().join("bench/lti/pylti1p3_validate.py"))
        .arg(&file)
        .output()
        .await?;
    let _ = std::fs::remove_file(&file);
    anyhow::ensure!(out.status.success(), "pylti1p3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let theirs: Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(
        theirs["validated"] == launches.len(),
        "pylti1p3 validated {} of {}",
        theirs["validated"],
        launches.len()
    );
    let figure = |name: &str| theirs[name].as_f64().unwrap_or_default();
    row("pylti1p3 MessageLaunch.validate() (CPU)", (figure("mean_us"), figure("p50_us"), figure("p99_us")));
    Ok(())
}

async fn item_count(ctx: &hub::Context) -> anyhow::Result<i64> {
    let (mut count, mut start) = (0i64, None);
    loop {
        let out = ctx
            .dynamodb()
            .scan()
            .table_name(&ctx.config.table_name)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        count += i64::from(out.count);
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(count);
        }
    }
}

async fn roster(template: &Template, sdk: &SdkConfig, members: usize, page_size: usize) -> anyhow::Result<()> {
    let bench = bench_stack(template, sdk, &[]).await?;
    let ctx = function_context(template, &bench.stack, sdk, "lti-roster-sync-worker")?;
    let (platform, registration) = registered_platform(&ctx, &format!("{}/api/lti/jwks", bench.base)).await?;
    *platform.page_size.lock().unwrap() = page_size;
    let now = ctx.clock.now();
    let roster: Vec<Value> = (0..members)
        .map(|i| {
            let role = if i % 50 == 0 { "Instructor" } else { "Learner" };
            json!({"user_id": format!("member-{i}"), "status": "Active", "given_name": "Member", "family_name": format!("N{i}"),
                   "email": format!("member-{i}@school.example"), "roles": [format!("http://purl.imsglobal.org/vocab/lis/v2/membership#{role}")]})
        })
        .collect();
    let course = hub::integrations::lti::links::Course {
        id: hub::integrations::lti::links::course_id(&registration.id, "course-1"),
        registration_id: registration.id.clone(),
        organization_id: "bench".into(),
        context_id: "course-1".into(),
        label: None,
        title: Some("Biology".into()),
        deployment_id: DEPLOYMENT.into(),
        memberships_url: Some(platform.set_members("course-1", roster)),
        updated_at: now,
    };
    ctx.store().put_lti_course(&course).await?;
    println!();
    println!(
        "== NRPS roster sync: {members} members in pages of {page_size} (simulator and DynamoDB Local on loopback)"
    );
    println!(
        "{:<10} {:>9} {:>7} {:>14} {:>8} {:>10} {:>9} {:>9}",
        "run", "seconds", "pages", "platform reqs", "tokens", "items +", "created", "updated"
    );
    for run in ["first", "again"] {
        let before = item_count(&ctx).await?;
        let (requests, tokens) =
            (*platform.membership_requests.lock().unwrap(), *platform.token_requests.lock().unwrap());
        let started = Instant::now();
        // What the roster worker runs for one queued sync, with its time budget.
        let deadline = Instant::now() + std::time::Duration::from_secs(13 * 60);
        let summary = hub::integrations::lti::roster::run(&ctx, &registration, &course, deadline)
            .await
            .map_err(|(_, e)| anyhow::anyhow!("{e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(summary.failed == 0, "{} members failed: {:?}", summary.failed, summary.errors.first());
        let platform_requests = *platform.membership_requests.lock().unwrap() - requests;
        let token_requests = *platform.token_requests.lock().unwrap() - tokens;
        let written = item_count(&ctx).await? - before;
        println!(
            "{run:<10} {seconds:>9.2} {:>7} {platform_requests:>14} {token_requests:>8} {written:>10} {:>9} {:>9}",
            summary.pages, summary.created, summary.updated,
        );
    }
    Ok(())
}
