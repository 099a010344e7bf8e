//! `devstack contract`: the running API against its own OpenAPI document. A fresh local stack (with
//! the Clever simulator), the dev gateway on a free port, a signed-in user of each role, then
//! schemathesis (generated requests: examples, coverage and fuzzing phases) once per role. The
//! gateway counts every request it answers by status; the run fails on any answer ≥ 500, on any
//! schemathesis failure (undocumented status, a body not matching its schema, invalid data
//! accepted), or when fewer than `min_requests` requests were made.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use aws_config::SdkConfig;
use clever_sim::{DistrictSpec, Simulator, World};
use hub::domain::auth::Role;
use hub::domain::auth::provisioning::{ExternalProfile, provision_as_operator};

use crate::gateway::Gateway;
use crate::provision::{LOCAL_PARAMETERS, provision};
use crate::template::Template;

/// What schemathesis checks on every answer (the others need state or links the API does not declare).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection";

pub struct Options<'a> {
    pub schemathesis: &'a Path,
    pub max_examples: usize,
    pub min_requests: usize,
}

pub async fn run(template: &Template, sdk: &SdkConfig, options: Options<'_>) -> anyhow::Result<()> {
    let spec = DistrictSpec::sized(1, 20, 2, 2);
    let sim = Simulator::start(World::generate(7, &[spec]), 0).await?;
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let parameters = [("CleverApiUrl", sim.base_url.as_str()), ("CleverOauthUrl", oauth.as_str())];
    let stack_name = format!("contract-{:08x}", rand::random::<u32>());
    let stack = provision(template, &stack_name, sdk, &[LOCAL_PARAMETERS.as_slice(), &parameters].concat()).await?;
    let gateway = Arc::new(Gateway::new(template, &stack, sdk)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway.clone().serve(listener));

    let def = template.functions()?.into_iter().find(|f| f.binary == "auth-me").context("auth-me")?;
    let env = stack.function_env(template, &def.logical_id)?;
    let ctx = hub::Context::new(hub::Config::from_lookup(|k| env.get(k).cloned())?, sdk.clone());
    let document = tempfile_with(&hub::api::openapi::document_json())?;

    let mut failed = Vec::new();
    for (role, org) in
        [(Role::Student, "demo"), (Role::Teacher, "demo"), (Role::OrgAdmin, "demo"), (Role::Admin, "platform")]
    {
        let token = session(&ctx, role, org).await?;
        println!("== schemathesis as {} (max {} examples per operation)", role.as_str(), options.max_examples);
        let status = tokio::process::Command::new(options.schemathesis)
            .arg("run")
            .arg(document.path())
            .args(["--url", &base, "--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", CHECKS, "--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", &options.max_examples.to_string(), "--max-redirects", "0"])
            // One worker: CPython 3.11 can fail compiling schemathesis' generated code from two threads.
            .args(["--workers", "1", "--suppress-health-check", "all", "--request-timeout", "30"])
            .args(["--seed", "20261129"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("NO_COLOR", "1")
            .status()
            .await
            .with_context(|| format!("running {}", options.schemathesis.display()))?;
        if !status.success() {
            failed.push(role.as_str());
        }
    }
    let stats = gateway.stats();
    println!(
        "contract: {} requests answered by the dev gateway: {} 2xx, {} 3xx, {} 4xx, {} 5xx",
        stats.total(),
        stats.by_class[2],
        stats.by_class[3],
        stats.by_class[4],
        stats.by_class[5]
    );
    ensure!(stats.by_class[5] == 0, "{} answers were server errors (≥ 500)", stats.by_class[5]);
    ensure!(
        stats.total() >= options.min_requests,
        "only {} requests were generated (at least {} expected)",
        stats.total(),
        options.min_requests
    );
    if !failed.is_empty() {
        bail!("schemathesis found failures as: {}", failed.join(", "));
    }
    println!("contract: 0 server errors; every answer conforms to docs/openapi.json");
    Ok(())
}

/// A signed-in user of `role` in `org`, made as an operator would (any role, a proven address).
async fn session(ctx: &hub::Context, role: Role, org: &str) -> anyhow::Result<String> {
    let email = format!("{}@contract.example", role.as_str().replace('_', "-"));
    let profile = ExternalProfile {
        provider: "contract".into(),
        external_id: email.clone(),
        email: Some(email),
        email_proven: true,
        email_is_school_record: true,
        given_name: Some("Schema".into()),
        family_name: Some("Thesis".into()),
        role,
        org_id: Some(org.into()),
    };
    let user = provision_as_operator(ctx, &profile).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let pair = hub::domain::auth::sessions::start_session(ctx, &user).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pair.access_token)
}

/// A file holding `text`, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_with(text: &str) -> anyhow::Result<TempFile> {
    let path = std::env::temp_dir().join(format!("openapi-{:08x}.json", rand::random::<u32>()));
    std::fs::write(&path, text)?;
    Ok(TempFile(path))
}
