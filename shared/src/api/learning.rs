//! `POST /api/admin/quests`, `GET /api/admin/quests`, `POST /api/admin/badges` (organization or
//! platform admins) and `GET /api/me/quests` (a student's own quests, tasks, evidence, XP and badges).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde_json::{Value, json};

use crate::Context;
use crate::auth::guard::authenticate;
use crate::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id};
use crate::learning::quests::{self, NewQuest};

pub async fn create_quest(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let new: NewQuest = json_body(&req, MAX_JSON_BODY)?;
    let quest = quests::create_quest(&ctx, &principal, new).await?;
    // Submissions that arrived before their assignment was mapped are processed now.
    let processed = crate::spark::webhook::process_pending(&ctx, &quest).await;
    if processed > 0 {
        tracing::info!(quest_id = quest.id, processed, "pending submissions processed");
    }
    json(StatusCode::CREATED, &quest)
}

pub async fn create_badge(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let new: crate::learning::badges::NewBadge = json_body(&req, MAX_JSON_BODY)?;
    let badge = crate::learning::badges::create_badge(&ctx, &principal, new).await?;
    json(StatusCode::CREATED, &badge)
}

pub async fn list_quests(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let requested = query_id(&req, "organization_id")?;
    let org = principal.administered_organization(requested.as_deref())?;
    let quests = ctx.store().quests_of_organization(&org, 100).await?;
    json(StatusCode::OK, &json!({ "organization_id": org, "quests": quests }))
}

/// The caller's learning: every quest they are enrolled in, with their tasks, evidence and XP.
pub async fn my_quests(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let store = ctx.store();
    let states = store.learning_state(&principal.user_id, None).await?;
    let ids: Vec<String> = states.keys().cloned().collect();
    let definitions = store.quests_by_id(&ids).await?;
    let xp = store.xp(&principal.user_id).await?;
    let mut quests = Vec::new();
    for quest in definitions {
        let Some(state) = states.get(&quest.id) else { continue };
        let Some(enrollment) = &state.enrollment else { continue };
        let tasks: Vec<Value> = quest
            .tasks
            .iter()
            .map(|t| {
                let mine = state.tasks.get(&t.id);
                json!({
                    "id": t.id, "title": t.title, "pillar": t.pillar, "xp": t.xp, "order": t.order,
                    "status": if mine.is_some_and(|m| m.completed) { "completed" } else { "pending" },
                    "completion_id": mine.and_then(|m| m.completion_id.clone()),
                    "completed_at": mine.and_then(|m| m.completed_at),
                    "evidence": state.evidence.get(&t.id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        quests.push(json!({
            "quest_id": quest.id, "title": quest.title, "pillar": quest.pillar, "status": enrollment.status,
            "completed_at": enrollment.completed_at, "tasks": tasks,
        }));
    }
    let by_pillar: BTreeMap<String, i64> = xp.by_pillar.into_iter().collect();
    let earned = store.earned_badges(&principal.user_id).await?;
    let badges: Vec<Value> = match &principal.org_id {
        Some(org) => store
            .badges_of_organization(org)
            .await?
            .into_iter()
            .map(|b| {
                json!({ "id": b.id, "name": b.name, "description": b.description,
                             "requirements": b.requirements, "earned_at": earned.get(&b.id) })
            })
            .collect(),
        None => Vec::new(),
    };
    json(
        StatusCode::OK,
        &json!({ "xp": { "total": xp.total, "by_pillar": by_pillar, "quests_completed": xp.quests_completed },
                 "badges": badges, "quests": quests }),
    )
}

/// `PUT /api/completions/{completion_id}/grade` with `{"grade": ...}` (teachers and admins of the
/// completion's organization).
pub async fn grade_completion(ctx: Arc<Context>, req: Request) -> ApiResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GradeRequest {
        grade: Value,
    }
    let principal = authenticate(&ctx, &req).await?;
    let completion_id = path_param(&req, "completion_id");
    let body: GradeRequest = json_body(&req, MAX_JSON_BODY)?;
    crate::learning::submissions::grade(&ctx, &principal, &completion_id, &body.grade).await?;
    json(StatusCode::OK, &json!({ "status": "graded", "completion_id": completion_id, "grade": body.grade }))
}
