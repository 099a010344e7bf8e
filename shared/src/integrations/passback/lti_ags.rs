//! The LTI adapter (Assignment and Grade Services): a student's progress in a quest they launched
//! from an LMS becomes a score on the line item of the resource link they launched.
//!
//! - `task.completed`: the XP earned in the quest out of its total, `InProgress` until every task is
//!   done, then `Completed`; `PendingManual`: a partial score until a teacher grades the work (a student
//!   completes tasks on their own say-so, which must not read as a final grade in the gradebook).
//! - `grade.updated` (a teacher grades a completion): a numeric grade is sent as a percentage
//!   (`scoreGiven` out of 100, which the platform scales to its line item), `FullyGraded`; a text grade
//!   goes as the comment of the partial XP score. Once a teacher graded a task of the quest, the
//!   student's later completions send nothing: the teacher's grade stands in the gradebook.
//!
//! A score is read from the student's state when the job is queued, and carries the event's time as
//! its `timestamp`: a platform applies a given timestamp once and never lets an older score override
//! a newer one, so a retried or late job answered 409 (already applied, or superseded) is done.
//! Scores go only to the registration of the student's own organization (DESIGN.md §3a).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Delivery, GRADE_UPDATED};
use crate::domain::learning::submissions::TASK_COMPLETED;
use crate::runtime::events::DomainEvent;
use crate::store::StoreError;
use crate::{Context, integrations::lti};

pub const SCORE_CONTENT_TYPE: &str = "application/vnd.ims.lis.v1.score+json";

/// One score for one student on one line item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LtiScore {
    pub completion_id: String,
    pub registration_id: String,
    pub lineitem_url: String,
    /// The platform's id of the student.
    pub user_id: String,
    pub score_given: Option<f64>,
    pub score_maximum: f64,
    pub activity_progress: String,
    pub grading_progress: String,
    pub comment: Option<String>,
    pub timestamp: String,
}

impl LtiScore {
    /// The score as AGS wants it.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "userId": self.user_id,
            "activityProgress": self.activity_progress,
            "gradingProgress": self.grading_progress,
            "timestamp": self.timestamp,
        });
        if let Some(given) = self.score_given {
            body["scoreGiven"] = json!(given);
            body["scoreMaximum"] = json!(self.score_maximum);
        }
        if let Some(comment) = &self.comment {
            body["comment"] = json!(comment);
        }
        body
    }
}

/// The score an event asks for, when the student launched the quest from an LMS that takes scores.
pub async fn job(ctx: &Context, event: &DomainEvent) -> Result<Option<LtiScore>, StoreError> {
    if event.event_type != TASK_COMPLETED && event.event_type != GRADE_UPDATED {
        return Ok(None);
    }
    let (Some(user_id), Some(quest_id), Some(completion_id)) =
        (event.data["user_id"].as_str(), event.data["quest_id"].as_str(), event.data["completion_id"].as_str())
    else {
        return Ok(None);
    };
    let store = ctx.store();
    let Some(target) = store.lti_grade_target(user_id, quest_id).await? else { return Ok(None) };
    let registration = store.lti_registration(&target.registration_id).await?;
    let Some(quest) = store.get_quest(quest_id).await? else { return Ok(None) };
    let organization = event.organization_id.as_deref().unwrap_or_default();
    if registration.is_none_or(|r| r.organization_id != organization || quest.organization_id != organization) {
        tracing::warn!(
            alert = "integration_tenant_mismatch",
            completion_id,
            organization_id = organization,
            "score not passed back: the LMS registration is gone or belongs to another organization"
        );
        return Ok(None);
    }
    let state = store.learning_state(user_id, Some(quest_id)).await?.remove(quest_id).unwrap_or_default();
    if event.event_type == TASK_COMPLETED {
        // A teacher's grade of this quest stands: the student's own progress does not replace it.
        for completion_id in state.tasks.values().filter_map(|t| t.completion_id.as_deref()) {
            if store.completion(completion_id).await?.is_some_and(|c| c.graded) {
                tracing::info!(completion_id, "score not passed back: a teacher graded this quest");
                return Ok(None);
            }
        }
    }
    let earned: i64 =
        quest.tasks.iter().filter(|t| state.tasks.get(&t.id).is_some_and(|s| s.completed)).map(|t| t.xp).sum();
    let total: i64 = quest.tasks.iter().map(|t| t.xp).sum();
    let done = quest.tasks.iter().all(|t| state.tasks.get(&t.id).is_some_and(|s| s.completed));
    let mut score = LtiScore {
        completion_id: completion_id.to_string(),
        registration_id: target.registration_id,
        lineitem_url: target.lineitem_url,
        user_id: target.subject,
        score_given: Some(earned as f64),
        score_maximum: total.max(1) as f64,
        activity_progress: if done { "Completed" } else { "InProgress" }.into(),
        grading_progress: "PendingManual".into(),
        comment: None,
        timestamp: crate::runtime::events::rfc3339(event.occurred_at),
    };
    if event.event_type == GRADE_UPDATED {
        match &event.data["grade"] {
            Value::Number(n) => {
                score.grading_progress = "FullyGraded".into();
                score.score_given = n.as_f64().map(|g| g.clamp(0.0, 1000.0));
                score.score_maximum = 100.0;
            }
            // Not a number the gradebook can hold: the teacher's words beside the partial XP score.
            Value::String(text) => score.comment = Some(text.chars().take(100).collect()),
            _ => {}
        }
    }
    Ok(Some(score))
}

/// The score service of a line item: its URL with `/scores` added to the path.
pub fn scores_url(lineitem_url: &str) -> Option<String> {
    let mut url = url::Url::parse(lineitem_url).ok()?;
    let path = format!("{}/scores", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Some(url.to_string())
}

/// Posts one score (asking for a new token once if the platform no longer takes the cached one).
pub async fn post(ctx: &Context, score: &LtiScore) -> Delivery {
    let registration = match ctx.store().lti_registration(&score.registration_id).await {
        Ok(Some(registration)) => registration,
        Ok(None) => return Delivery::Refused("the LMS registration was deleted".into()),
        Err(e) => return Delivery::Unavailable(e.to_string()),
    };
    let Some(url) = scores_url(&score.lineitem_url) else {
        return Delivery::Refused("the line item is not a URL".into());
    };
    let body = score.body().to_string();
    let posted = lti::services::call(ctx, &registration, lti::links::SCORE_SCOPE, &url, |client| {
        Ok(client.post(&url)?.header("content-type", SCORE_CONTENT_TYPE).body(body.clone()))
    })
    .await;
    match posted.map(|r| r.status().as_u16()) {
        // Already applied, or a newer score is there: either way the gradebook is as it should be.
        Ok(409) => Delivery::Done,
        Ok(401) => Delivery::Retry("the LMS refused a fresh token".into()),
        Ok(status) => Delivery::of_status(status, "the LMS"),
        Err(e) => e.into(),
    }
}
