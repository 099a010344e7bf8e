//! Creating and listing quests (organization admins, platform admins).

use serde::Deserialize;
use serde_json::json;

use super::{LmsMapping, Quest, QuestTask, valid_slug};
use crate::domain::auth::guard::Principal;
use crate::runtime::events::{self, DomainEvent};
use crate::store::WriteError;
use crate::{ApiError, Context, support::crypto};

/// The most tasks one quest may have (keeps a first submission within one transaction).
pub const MAX_TASKS: usize = 50;
/// An LMS mapping's ids are at most this many characters each: the three make one DynamoDB key
/// (at most 2,048 bytes; a character is at most 4).
pub const MAX_LMS_ID_CHARS: usize = 150;
/// An internal event (never delivered to webhook subscribers): a quest now maps an LMS assignment,
/// so the integration may release what it kept for it (Spark's pending submissions).
pub const QUEST_MAPPED: &str = "quest.mapped";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuest {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: String,
    #[schema(pattern = r"^[a-z0-9_-]{1,40}$")]
    pub pillar: String,
    /// Platform admins name the organization; organization admins create in their own.
    pub organization_id: Option<String>,
    pub lms: Option<LmsMapping>,
    #[schema(min_items = 1, max_items = 50)]
    pub tasks: Vec<NewTask>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: String,
    /// Defaults to the quest's pillar.
    #[schema(pattern = r"^[a-z0-9_-]{1,40}$")]
    pub pillar: Option<String>,
    #[serde(deserialize_with = "crate::support::numbers::integer")]
    #[schema(minimum = 0, maximum = 10000)]
    pub xp: i64,
}

pub async fn create_quest(ctx: &Context, principal: &Principal, new: NewQuest) -> Result<Quest, ApiError> {
    let organization_id = principal.administered_organization(new.organization_id.as_deref())?;
    let bad = |m: &str| Err(ApiError::bad_request("invalid_quest", m));
    let title = new.title.trim();
    if title.is_empty() || new.title.chars().count() > 200 {
        return bad("title must be 1 to 200 characters");
    }
    if !valid_slug(&new.pillar) {
        return bad("pillar must be a short lower-case identifier");
    }
    if new.tasks.is_empty() || new.tasks.len() > MAX_TASKS {
        return bad("a quest has 1 to 50 tasks");
    }
    if let Some(lms) = &new.lms
        && [&lms.platform, &lms.course_id, &lms.assignment_id]
            .iter()
            .any(|v| v.trim().is_empty() || v.chars().count() > MAX_LMS_ID_CHARS || v.contains('#'))
    {
        return bad("lms needs platform, course_id and assignment_id (no '#')");
    }
    // Only the integration's own organization may map its assignments: its submissions land there.
    if let Some(lms) = &new.lms {
        crate::domain::tenancy::admit(ctx, &lms.platform, &organization_id)?;
    }
    let mut tasks = Vec::with_capacity(new.tasks.len());
    for (i, t) in new.tasks.into_iter().enumerate() {
        let pillar = t.pillar.unwrap_or_else(|| new.pillar.clone());
        if t.title.trim().is_empty()
            || t.title.chars().count() > 200
            || !valid_slug(&pillar)
            || !(0..=10_000).contains(&t.xp)
        {
            return bad("each task needs a title, a valid pillar and 0 to 10000 xp");
        }
        tasks.push(QuestTask {
            id: crypto::new_id(),
            title: t.title.trim().into(),
            pillar,
            xp: t.xp,
            order: i as u32 + 1,
        });
    }
    let quest = Quest {
        id: crypto::new_id(),
        organization_id,
        title: title.into(),
        pillar: new.pillar,
        lms: new.lms,
        tasks,
        created_at: ctx.clock.now(),
    };
    let mapped = quest.lms.as_ref().map(|lms| {
        DomainEvent::new(
            QUEST_MAPPED,
            Some(quest.organization_id.clone()),
            json!({ "quest_id": quest.id, "platform": lms.platform, "course_id": lms.course_id,
                    "assignment_id": lms.assignment_id }),
            quest.created_at,
        )
    });
    match ctx.store().create_quest(&quest, mapped.as_ref()).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => {
            return Err(ApiError::conflict("lms_mapping_taken", "Another quest already maps this LMS assignment"));
        }
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(quest_id = quest.id, organization_id = quest.organization_id, "quest created");
    events::publish(ctx, mapped.as_slice()).await;
    Ok(quest)
}
