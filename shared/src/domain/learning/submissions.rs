//! Recording a submission: enrollment on first contact, evidence (replacing the task's previous
//! blocks), task completion, XP and quest completion, with their events, in one transaction.
//!
//! Idempotent by the submission's key: the same submission again (a retry, or a concurrent
//! duplicate) yields the same completion and awards nothing twice. A task completes once; later
//! submissions replace its evidence. A finished quest is reactivated by a new submission and
//! completes again, but `quest.completed` is announced only the first time. Files of replaced evidence
//! are deleted once the new evidence is written. Badges whose requirements
//! the submission fulfils are earned in the same transaction (`badge.earned`), each once.

use serde_json::json;

use std::collections::HashSet;

use super::badges::{Badge, Standing, newly_earned};
use super::{EvidenceBlock, Quest};
use crate::runtime::events::{self, DomainEvent};
use crate::store::WriteError;
use crate::store::learning::SubmissionWrite;
use crate::{ApiError, Context, support::crypto};

pub const TASK_SUBMITTED: &str = "task.submitted";
pub const TASK_COMPLETED: &str = "task.completed";
pub const QUEST_COMPLETED: &str = "quest.completed";
pub const BADGE_EARNED: &str = "badge.earned";
/// A teacher graded a completion (score and comment); grade passback sends it to the LMS.
pub const GRADE_UPDATED: &str = "grade.updated";

pub struct Submission<'a> {
    /// Where it came from (`spark`, ...): idempotency keys are per source.
    pub source: &'a str,
    /// Identifies this submission across retries.
    pub key: &'a str,
    pub user_id: &'a str,
    pub quest: &'a Quest,
    /// The task it is evidence for; `None`: the quest's assignment task (what an LMS submission completes).
    pub task_id: Option<&'a str>,
    pub evidence: &'a [EvidenceBlock],
    /// A grade that came with the submission, and where it belongs in the LMS (for passback).
    pub grade: Option<&'a serde_json::Value>,
    pub lms_ref: Option<serde_json::Value>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Recorded {
    pub completion_id: String,
    /// The same submission had been recorded before: nothing was written.
    pub duplicate: bool,
}

/// Each attempt re-reads the state; a concurrent writer costs one attempt.
const ATTEMPTS: usize = 5;

pub async fn record(ctx: &Context, sub: &Submission<'_>) -> Result<Recorded, ApiError> {
    let store = ctx.store();
    let task = match sub.task_id {
        None => sub.quest.assignment_task(),
        Some(id) => sub
            .quest
            .tasks
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::not_found("task_not_found", "The quest has no such task"))?,
    };
    for _ in 0..ATTEMPTS {
        if let Some(completion_id) = store.submission_completion(sub.source, sub.key).await? {
            return Ok(Recorded { completion_id, duplicate: true });
        }
        let state =
            store.learning_state(sub.user_id, Some(&sub.quest.id)).await?.remove(&sub.quest.id).unwrap_or_default();
        let existing = state.tasks.get(&task.id);
        let completes_task = !existing.is_some_and(|t| t.completed);
        // Work without an LMS reference (the hub's own) never replaces work from an LMS or graded work:
        // that is what was graded (the write checks it again).
        if sub.lms_ref.is_none()
            && !completes_task
            && let Some(done) = existing.and_then(|t| t.completion_id.as_deref())
            && let Some(done) = store.completion(done).await?
            && (done.lms_ref.is_some() || done.graded)
        {
            return Err(ApiError::conflict(
                "task_already_graded",
                "This task's work came from an LMS or was graded: it is not replaced from here",
            ));
        }
        let completion_id = existing
            .and_then(|t| t.completion_id.clone())
            .unwrap_or_else(|| format!("cmp_{}", crypto::random_token(16)));
        let now = ctx.clock.now();
        let done_after = state.enrollment.as_ref().map_or(0, |e| e.tasks_completed) + i64::from(completes_task);
        let first_completion = done_after >= sub.quest.tasks.len() as i64
            && state.enrollment.as_ref().is_none_or(|e| e.completed_at.is_none());

        let org = Some(sub.quest.organization_id.clone());
        let mut events = vec![DomainEvent::new(
            TASK_SUBMITTED,
            org.clone(),
            json!({ "user_id": sub.user_id, "quest_id": sub.quest.id, "task_id": task.id,
                    "completion_id": completion_id, "source": sub.source }),
            now,
        )];
        if completes_task {
            events.push(DomainEvent::new(
                TASK_COMPLETED,
                org.clone(),
                json!({ "user_id": sub.user_id, "quest_id": sub.quest.id, "task_id": task.id, "task_title": task.title,
                        "xp_awarded": task.xp, "pillar": task.pillar, "completion_id": completion_id, "completed_at": now }),
                now,
            ));
        }
        if let Some(grade) = sub.grade.filter(|g| !g.is_null()) {
            events.push(DomainEvent::new(
                GRADE_UPDATED,
                org.clone(),
                json!({ "user_id": sub.user_id, "quest_id": sub.quest.id, "task_id": task.id, "completion_id": completion_id,
                        "grade": grade, "source": sub.source, "lms": sub.lms_ref }),
                now,
            ));
        }
        // Badges the student reaches with this submission.
        let badges = store.badges_of_organization(&sub.quest.organization_id).await?;
        let earning: Vec<&Badge> = if badges.is_empty() {
            Vec::new()
        } else {
            let earned: HashSet<String> = store.earned_badges(sub.user_id).await?.into_keys().collect();
            let xp = store.xp(sub.user_id).await?;
            let mut after = Standing {
                xp_by_pillar: xp.by_pillar,
                quests_completed: xp.quests_completed + i64::from(first_completion),
            };
            if completes_task {
                *after.xp_by_pillar.entry(task.pillar.clone()).or_default() += task.xp;
            }
            newly_earned(&badges, &earned, &after)
        };
        for badge in &earning {
            events.push(DomainEvent::new(
                BADGE_EARNED,
                org.clone(),
                json!({ "user_id": sub.user_id, "badge_id": badge.id, "badge_name": badge.name, "earned_at": now }),
                now,
            ));
        }
        if first_completion {
            let total_xp: i64 = sub.quest.tasks.iter().map(|t| t.xp).sum();
            events.push(DomainEvent::new(
                QUEST_COMPLETED,
                org,
                json!({ "user_id": sub.user_id, "quest_id": sub.quest.id, "quest_title": sub.quest.title,
                        "tasks_completed": sub.quest.tasks.len(), "total_xp_earned": total_xp, "completed_at": now }),
                now,
            ));
        }
        let write = SubmissionWrite {
            source: sub.source,
            key: sub.key,
            user_id: sub.user_id,
            quest: sub.quest,
            task,
            completion_id: &completion_id,
            seen: state.enrollment.as_ref(),
            completes_task,
            evidence: sub.evidence,
            events: &events,
            badges: &earning,
            lms_ref: sub.lms_ref.as_ref(),
            now,
        };
        match store.write_submission(&write).await {
            Ok(()) => {
                tracing::info!(
                    user_id = sub.user_id,
                    quest_id = sub.quest.id,
                    completion_id,
                    completes_task,
                    "submission recorded"
                );
                events::publish(ctx, &events).await;
                // The task's previous evidence was replaced: its files belong to nothing now.
                let replaced: Vec<String> = state
                    .evidence
                    .get(&task.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.file.as_ref().map(|f| f.key.clone()))
                    .collect();
                if !replaced.is_empty() {
                    crate::domain::learning::files::delete(ctx, &replaced).await;
                }
                return Ok(Recorded { completion_id, duplicate: false });
            }
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable("submission kept conflicting with concurrent writes"))
}

/// A teacher or admin grades a completed task later: the grade is stored and announced
/// (`grade.updated`), which passes it back to the LMS the task came from.
pub async fn grade(
    ctx: &Context,
    principal: &crate::domain::auth::guard::Principal,
    completion_id: &str,
    grade: &serde_json::Value,
) -> Result<(), ApiError> {
    use crate::domain::auth::Role;
    if grade.is_null() || grade.to_string().len() > 100 {
        return Err(ApiError::bad_request("invalid_grade", "grade must be a number or a short string"));
    }
    let completion = ctx
        .store()
        .completion(completion_id)
        .await?
        .ok_or_else(|| ApiError::not_found("completion_not_found", "No such completion"))?;
    principal.require_role(&[Role::Teacher, Role::OrgAdmin, Role::Admin])?;
    if principal.role != Role::Admin && principal.org_id.as_deref() != Some(completion.organization_id.as_str()) {
        // Not theirs: answered as if it did not exist.
        return Err(ApiError::not_found("completion_not_found", "No such completion"));
    }
    if completion.user_id == principal.user_id {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "cannot_grade_own_work",
            "Nobody grades their own work",
        ));
    }
    let now = ctx.clock.now();
    let event = DomainEvent::new(
        GRADE_UPDATED,
        Some(completion.organization_id.clone()),
        json!({ "user_id": completion.user_id, "quest_id": completion.quest_id, "task_id": completion.task_id,
                "completion_id": completion_id, "grade": grade, "source": "platform", "graded_by": principal.user_id,
                "lms": completion.lms_ref }),
        now,
    );
    match ctx.store().grade_completion(completion_id, grade, &event, now).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => return Err(ApiError::not_found("completion_not_found", "No such completion")),
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(completion_id, user_id = principal.user_id, "completion graded");
    events::publish(ctx, &[event]).await;
    Ok(())
}

/// What a student sends as evidence of a task in the hub itself (texts and links; files come
/// through an LMS).
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct EvidenceInput {
    #[serde(rename = "type")]
    pub block_type: super::BlockType,
    /// The text of a `text` block, the https URL of a `link` block.
    pub content: String,
}

/// Evidence blocks the hub accepts from a student: 1 to 20, texts up to 10,000 characters, links
/// to https URLs up to 2,048.
pub fn evidence_blocks(input: &[EvidenceInput]) -> Result<Vec<EvidenceBlock>, ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request("invalid_evidence", m));
    if input.is_empty() || input.len() > 20 {
        return bad("send 1 to 20 evidence blocks");
    }
    let mut blocks = Vec::with_capacity(input.len());
    for (i, block) in input.iter().enumerate() {
        let content = block.content.trim();
        match block.block_type {
            super::BlockType::Text if !content.is_empty() && content.chars().count() <= 10_000 => {}
            super::BlockType::Link
                if content.len() <= 2048 && url::Url::parse(content).is_ok_and(|u| u.scheme() == "https") => {}
            super::BlockType::Text | super::BlockType::Link => {
                return bad("texts are 1 to 10,000 characters; links are https URLs of at most 2,048");
            }
            _ => return bad("only text and link blocks are accepted here; files come through an LMS"),
        }
        blocks.push(EvidenceBlock {
            order: i as u32 + 1,
            block_type: block.block_type,
            text: Some(content.into()),
            file: None,
        });
    }
    Ok(blocks)
}

/// A student's own submission for a task of a quest of their organization (an LTI-launched quest,
/// for example). `key` makes retries of the same submission record it once. Work that came from an
/// LMS, or that a teacher graded, is not replaced from here (its evidence and files are what was graded).
pub async fn submit_own(
    ctx: &Context,
    principal: &crate::domain::auth::guard::Principal,
    quest_id: &str,
    task_id: &str,
    key: &str,
    evidence: &[EvidenceInput],
) -> Result<Recorded, ApiError> {
    principal.require_role(&[crate::domain::auth::Role::Student])?;
    let not_found = || ApiError::not_found("quest_not_found", "No such quest");
    let quest = ctx.store().get_quest(quest_id).await?.ok_or_else(not_found)?;
    if principal.org_id.as_deref() != Some(quest.organization_id.as_str()) {
        // Not theirs: answered as if it did not exist.
        return Err(not_found());
    }
    let blocks = evidence_blocks(evidence)?;
    let key = crypto::sha256_hex(format!("{}\0{key}", principal.user_id).as_bytes());
    let submission = Submission {
        source: "hub",
        key: &key,
        user_id: &principal.user_id,
        quest: &quest,
        task_id: Some(task_id),
        evidence: &blocks,
        grade: None,
        lms_ref: None,
    };
    record(ctx, &submission).await
}
