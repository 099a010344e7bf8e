//! `POST /api/admin/quests`, `GET /api/admin/quests`, `POST /api/admin/badges` (organization or
//! platform admins) and `GET /api/me/quests` (a student's own quests, tasks, evidence, XP and badges).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Context;
use crate::domain::auth::guard::authenticate;
use crate::domain::learning::Quest;
use crate::domain::learning::progress::{QuestProgress, TaskProgress, XpSummary};
use crate::domain::learning::quests::{self, NewQuest};
use crate::integrations::oauth::token::authenticate_for;
use crate::support::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id};

/// Creates a quest (with an optional LMS mapping: only the integration's own organization may map its
/// assignments) and takes the submissions that were waiting for that mapping.
#[utoipa::path(post, path = "/api/admin/quests", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    request_body = NewQuest,
    responses(
        (status = 201, description = "The quest, with ids and order added", body = crate::domain::learning::Quest),
        (status = 400, description = "`invalid_quest`, `invalid_json`, `unknown_integration`", body = crate::ErrorBody),
        (status = 403, description = "Not an admin of that organization, or `integration_tenant_mismatch`", body = crate::ErrorBody),
        (status = 409, description = "`lms_mapping_taken`: another quest maps that assignment", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn create_quest(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let new: NewQuest = json_body(&req, MAX_JSON_BODY)?;
    // Submissions that arrived before their assignment was mapped follow from the quest's
    // `quest.mapped` event, on the events queue (retried, then dead-lettered), not in this request.
    let quest = quests::create_quest(&ctx, &principal, new).await?;
    json(StatusCode::CREATED, &quest)
}

#[utoipa::path(post, path = "/api/admin/badges", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    request_body = crate::domain::learning::badges::NewBadge,
    responses(
        (status = 201, description = "The badge", body = crate::domain::learning::badges::Badge),
        (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn create_badge(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let new: crate::domain::learning::badges::NewBadge = json_body(&req, MAX_JSON_BODY)?;
    let badge = crate::domain::learning::badges::create_badge(&ctx, &principal, new).await?;
    json(StatusCode::CREATED, &badge)
}

/// An organization's quests, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QuestList {
    pub organization_id: String,
    pub quests: Vec<Quest>,
}

#[utoipa::path(get, path = "/api/admin/quests", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    params(("organization_id" = Option<String>, Query, description = "Platform admins: whose quests (organization admins: their own)")),
    responses(
        (status = 200, description = "The organization's quests, newest first", body = QuestList),
        (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn list_quests(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "quests:read").await?;
    let requested = query_id(&req, "organization_id")?;
    let organization_id = principal.administered_organization(requested.as_deref())?;
    let quests = ctx.store().quests_of_organization(&organization_id, 100).await?;
    json(StatusCode::OK, &QuestList { organization_id, quests })
}

/// The caller's learning: XP, badges of their organization with progress, quests with their tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MyLearning {
    pub xp: XpSummary,
    pub badges: Vec<BadgeProgress>,
    pub quests: Vec<MyQuest>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BadgeProgress {
    pub id: String,
    pub name: String,
    pub description: String,
    pub requirements: crate::domain::learning::badges::Requirements,
    /// When the caller earned it; null while not earned.
    pub earned_at: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MyQuest {
    #[serde(flatten)]
    pub progress: QuestProgress,
    pub tasks: Vec<MyTask>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MyTask {
    #[serde(flatten)]
    pub progress: TaskProgress,
    pub completion_id: Option<String>,
    pub evidence: Vec<crate::domain::learning::EvidenceBlock>,
}

impl MyQuest {
    /// A quest as the learner sees it: its tasks with their own progress and evidence.
    pub fn of(quest: &crate::domain::learning::Quest, state: &crate::store::learning::QuestState) -> Self {
        let tasks = quest
            .tasks
            .iter()
            .map(|t| {
                let mine = state.tasks.get(&t.id);
                MyTask {
                    progress: TaskProgress::of(t, mine),
                    completion_id: mine.and_then(|m| m.completion_id.clone()),
                    evidence: state.evidence.get(&t.id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let progress = match &state.enrollment {
            Some(enrollment) => QuestProgress::of(quest, enrollment),
            None => QuestProgress {
                quest_id: quest.id.clone(),
                title: quest.title.clone(),
                pillar: quest.pillar.clone(),
                status: "not_started".into(),
                completed_at: None,
            },
        };
        Self { progress, tasks }
    }
}

/// The caller's learning: every quest they are enrolled in, with their tasks, evidence and XP.
#[utoipa::path(get, path = "/api/me/quests", tag = "learning", security(("bearer" = []), ("cookie" = [])), responses(
    (status = 200, description = "The caller's own learning only", body = MyLearning),
    (status = 401, description = "No valid access token", body = crate::ErrorBody),
    (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
))]
pub async fn my_quests(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "progress:read").await?;
    let store = ctx.store();
    let states = store.learning_state(&principal.user_id, None).await?;
    let ids: Vec<String> = states.keys().cloned().collect();
    let definitions = store.quests_by_id(&ids).await?;
    let xp = store.xp(&principal.user_id).await?;
    let mut quests = Vec::new();
    for quest in definitions {
        let Some(state) = states.get(&quest.id) else { continue };
        if state.enrollment.is_some() {
            quests.push(MyQuest::of(&quest, state));
        }
    }
    let earned = store.earned_badges(&principal.user_id).await?;
    let badges = match &principal.org_id {
        Some(org) => store
            .badges_of_organization(org)
            .await?
            .into_iter()
            .map(|b| BadgeProgress {
                earned_at: earned.get(&b.id).copied(),
                id: b.id,
                name: b.name,
                description: b.description,
                requirements: b.requirements,
            })
            .collect(),
        None => Vec::new(),
    };
    let xp = XpSummary {
        total: xp.total,
        by_pillar: xp.by_pillar.into_iter().collect(),
        quests_completed: xp.quests_completed,
    };
    json(StatusCode::OK, &MyLearning { xp, badges, quests })
}

/// One quest of the caller's organization with their own progress: where an LTI launch sends a student
/// (`next=/quests/<id>`), before their first submission too.
#[utoipa::path(get, path = "/api/quests/{quest_id}", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    params(("quest_id" = String, Path, description = "The quest")),
    responses(
        (status = 200, description = "The quest, its tasks and the caller's progress and evidence (`status` `not_started` before any submission)", body = MyQuest),
        (status = 404, description = "`quest_not_found` (also another organization's)", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn get_quest(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "progress:read").await?;
    let quest_id = path_param(&req, "quest_id");
    let not_found = || crate::ApiError::not_found("quest_not_found", "No such quest");
    let quest = ctx.store().get_quest(&quest_id).await?.ok_or_else(not_found)?;
    if principal.role != crate::domain::auth::Role::Admin
        && principal.org_id.as_deref() != Some(quest.organization_id.as_str())
    {
        return Err(not_found());
    }
    let state =
        ctx.store().learning_state(&principal.user_id, Some(&quest.id)).await?.remove(&quest.id).unwrap_or_default();
    json(StatusCode::OK, &MyQuest::of(&quest, &state))
}

/// `{"grade": ...}`: a number or a short string, as the LMS takes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GradeRequest {
    pub grade: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Graded {
    /// `graded`.
    pub status: String,
    pub completion_id: String,
    pub grade: Value,
}

/// `PUT /api/completions/{completion_id}/grade` with `{"grade": ...}` (teachers and admins of the
/// completion's organization); the grade goes back to the LMS the task came from.
#[utoipa::path(put, path = "/api/completions/{completion_id}/grade", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    params(("completion_id" = String, Path, description = "The completion (`cmp_...`)")),
    request_body = GradeRequest,
    responses(
        (status = 200, description = "Stored and announced (`grade.updated`)", body = Graded),
        (status = 400, description = "`invalid_grade`, `invalid_json`", body = crate::ErrorBody),
        (status = 403, description = "Students do not grade; `cannot_grade_own_work`: nobody grades their own completion", body = crate::ErrorBody),
        (status = 404, description = "`completion_not_found` (also another organization's)", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn grade_completion(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let completion_id = path_param(&req, "completion_id");
    let body: GradeRequest = json_body(&req, MAX_JSON_BODY)?;
    crate::domain::learning::submissions::grade(&ctx, &principal, &completion_id, &body.grade).await?;
    json(StatusCode::OK, &Graded { status: "graded".into(), completion_id, grade: body.grade })
}

/// A student's evidence for a task.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TaskSubmission {
    pub evidence: Vec<crate::domain::learning::submissions::EvidenceInput>,
}

/// The recorded submission.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SubmissionRecorded {
    pub completion_id: String,
    /// The same submission (its `Idempotency-Key`) had been recorded before: nothing changed.
    pub duplicate: bool,
}

/// `POST /api/quests/{quest_id}/tasks/{task_id}/submissions`: a student's evidence for a task of a
/// quest of their organization; completes the task (XP, `task.completed`, the quest when it is the
/// last; a score to the LMS the quest was launched from).
#[utoipa::path(post, path = "/api/quests/{quest_id}/tasks/{task_id}/submissions", tag = "learning", security(("bearer" = []), ("cookie" = [])),
    params(
        ("quest_id" = String, Path, description = "The quest"),
        ("task_id" = String, Path, description = "One of its tasks"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key again records nothing twice (up to 128 characters)")
    ),
    request_body = TaskSubmission,
    responses(
        (status = 201, description = "Recorded", body = SubmissionRecorded),
        (status = 200, description = "Already recorded under this Idempotency-Key", body = SubmissionRecorded),
        (status = 400, description = "`invalid_evidence`, `invalid_json`, `invalid_idempotency_key`", body = crate::ErrorBody),
        (status = 403, description = "`forbidden`: students submit work", body = crate::ErrorBody),
        (status = 404, description = "`quest_not_found` (also another organization's), `task_not_found`", body = crate::ErrorBody),
        (status = 409, description = "`task_already_graded`: the task's work came from an LMS or was graded", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn submit_task(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: TaskSubmission = json_body(&req, MAX_JSON_BODY)?;
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => crate::support::crypto::random_token(16),
        Some(Ok(k)) if !k.is_empty() && k.len() <= 128 => k.to_string(),
        Some(_) => {
            return Err(crate::ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key is 1 to 128 characters",
            ));
        }
    };
    let recorded = crate::domain::learning::submissions::submit_own(
        &ctx,
        &principal,
        &path_param(&req, "quest_id"),
        &path_param(&req, "task_id"),
        &key,
        &body.evidence,
    )
    .await?;
    let status = if recorded.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    json(status, &SubmissionRecorded { completion_id: recorded.completion_id, duplicate: recorded.duplicate })
}
