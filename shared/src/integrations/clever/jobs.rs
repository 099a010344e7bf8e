//! Sync jobs: the nightly schedule and `POST /api/clever/sync` queue one job per school; the worker
//! syncs one school per job. One school's failure is its own: it is recorded in its history and
//! metrics, and the other schools' jobs run regardless.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::districts;
use super::sync::{Mode, sync_school};
use crate::domain::auth::Role;
use crate::domain::auth::guard::Principal;
use crate::runtime::jobs::QueueError;
use crate::store::clever::CleverSchool;
use crate::{ApiError, Context, runtime::jobs};

/// One school to sync.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncJob {
    pub district_id: String,
    pub school_id: String,
    /// `full` or `incremental` (an incremental job still runs a full sync when the school needs one).
    pub mode: String,
    /// A full sync may delete past the shrink guard.
    #[serde(default)]
    pub force: bool,
    /// `schedule` or `api`.
    pub trigger: String,
}

/// `POST /api/clever/sync`'s body: every district, one district or one school.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub district_id: Option<String>,
    pub school_id: Option<String>,
    #[serde(default = "incremental")]
    pub mode: String,
    #[serde(default)]
    pub force: bool,
}

fn incremental() -> String {
    "incremental".into()
}

fn queue(ctx: &Context) -> Result<&str, String> {
    ctx.config.clever_sync_queue_url.as_deref().ok_or_else(|| "CLEVER_SYNC_QUEUE_URL not configured".to_string())
}

async fn enqueue_all(
    ctx: &Context,
    schools: &[CleverSchool],
    mode: &str,
    force: bool,
    trigger: &str,
) -> Result<usize, String> {
    let queue = queue(ctx)?;
    for school in schools.iter().filter(|s| s.active) {
        let job = SyncJob {
            district_id: school.district_id.clone(),
            school_id: school.id.clone(),
            mode: mode.to_string(),
            force,
            trigger: trigger.to_string(),
        };
        jobs::enqueue(ctx, queue, &job).await.map_err(|e| e.0)?;
    }
    Ok(schools.iter().filter(|s| s.active).count())
}

/// Scheduled (nightly): refreshes each district's school list from Clever, then queues an
/// incremental job per active school. A district Clever cannot answer for still gets its known
/// schools queued (their syncs record the failure).
pub async fn nightly(ctx: Arc<Context>, _event: Value) -> Result<Value, ApiError> {
    let store = ctx.store();
    let mut queued = 0;
    let mut errors = Vec::new();
    for district in store.clever_districts().await? {
        match districts::client(&ctx, &district).await {
            Ok(client) => {
                if let Err(e) = districts::discover_schools(&ctx, &client, &district.id).await {
                    tracing::warn!(district_id = district.id, error = %e, "schools not refreshed");
                    errors.push(json!({"district_id": district.id, "error": e.to_string()}));
                }
            }
            Err(e) => {
                tracing::error!(district_id = district.id, error = %e, "district credentials unavailable");
                errors.push(json!({"district_id": district.id, "error": e.to_string()}));
            }
        }
        let schools = store.clever_schools(&district.id).await?;
        queued += enqueue_all(&ctx, &schools, "incremental", false, "schedule").await.map_err(ApiError::unavailable)?;
    }
    Ok(json!({ "queued": queued, "errors": errors }))
}

/// The worker: syncs the school of one job. A sync that fails is recorded (history, metrics) and the
/// job ends; only failures to run at all (storage, credentials) are retried by SQS.
pub async fn worker(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: SyncJob = jobs::parse(&message)?;
    let store = ctx.store();
    let fail = |e: crate::store::StoreError| QueueError(e.to_string());
    let Some(school) = store.clever_school(&job.school_id).await.map_err(fail)? else {
        tracing::warn!(school_id = job.school_id, "sync job for an unknown school dropped");
        return Ok(());
    };
    if !school.active {
        return Ok(());
    }
    let district = store
        .clever_district(&school.district_id)
        .await
        .map_err(fail)?
        .ok_or_else(|| QueueError(format!("district {} is not registered", school.district_id)))?;
    let client = districts::client(&ctx, &district).await.map_err(|e| QueueError(e.to_string()))?;
    let mode = if job.mode == "full" { Mode::Full } else { Mode::Incremental };
    // The sync logs its own progress and outcome; this line says what started it.
    tracing::info!(
        school_id = school.id,
        trigger = job.trigger,
        mode = job.mode,
        force = job.force,
        "sync job received"
    );
    sync_school(&ctx, &client, &school, mode, job.force).await.map_err(|e| QueueError(e.0))?;
    Ok(())
}

/// `POST /api/clever/sync` (platform admins): queues the schools asked for.
pub async fn request(ctx: &Context, principal: &Principal, request: SyncRequest) -> Result<SyncQueued, ApiError> {
    principal.require_role(&[Role::Admin])?;
    if !matches!(request.mode.as_str(), "full" | "incremental") {
        return Err(ApiError::bad_request("invalid_mode", "mode is full or incremental"));
    }
    if request.force && request.mode != "full" {
        return Err(ApiError::bad_request("invalid_mode", "force applies to full syncs only"));
    }
    let store = ctx.store();
    let schools = match (&request.school_id, &request.district_id) {
        (Some(school), district) => {
            let found = store
                .clever_school(school)
                .await?
                .filter(|s| district.as_ref().is_none_or(|d| *d == s.district_id))
                .ok_or_else(|| ApiError::not_found("school_not_found", "No such Clever school"))?;
            vec![found]
        }
        (None, Some(district)) => {
            store
                .clever_district(district)
                .await?
                .ok_or_else(|| ApiError::not_found("district_not_found", "No such district"))?;
            store.clever_schools(district).await?
        }
        (None, None) => {
            let mut all = Vec::new();
            for district in store.clever_districts().await? {
                all.extend(store.clever_schools(&district.id).await?);
            }
            all
        }
    };
    let queued =
        enqueue_all(ctx, &schools, &request.mode, request.force, "api").await.map_err(ApiError::unavailable)?;
    let school_ids = schools.iter().filter(|s| s.active).map(|s| s.id.clone()).collect();
    Ok(SyncQueued { queued, mode: request.mode, force: request.force, school_ids })
}

/// What `POST /api/clever/sync` queued: one job per active school.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncQueued {
    pub queued: usize,
    pub mode: String,
    pub force: bool,
    pub school_ids: Vec<String>,
}
