//! Where a learner stands: the student's own view and their observers' share these shapes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Quest, QuestTask};
use crate::store::learning::{Enrollment, UserTask};

#[derive(Serialize, utoipa::ToSchema)]
pub struct XpSummary {
    pub total: i64,
    pub by_pillar: BTreeMap<String, i64>,
    pub quests_completed: i64,
}

/// Where a learner stands in a quest (the student's own view and their observers' share it).
#[derive(Serialize, utoipa::ToSchema)]
pub struct QuestProgress {
    pub quest_id: String,
    pub title: String,
    pub pillar: String,
    /// `active` or `completed` (`not_started` before the first submission).
    pub status: String,
    pub completed_at: Option<i64>,
}

/// Where a learner stands in one task.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskProgress {
    pub id: String,
    pub title: String,
    pub pillar: String,
    pub xp: i64,
    pub order: u32,
    /// `pending` or `completed`.
    pub status: String,
    pub completed_at: Option<i64>,
}

impl QuestProgress {
    pub fn of(quest: &Quest, enrollment: &Enrollment) -> Self {
        Self {
            quest_id: quest.id.clone(),
            title: quest.title.clone(),
            pillar: quest.pillar.clone(),
            status: enrollment.status.clone(),
            completed_at: enrollment.completed_at,
        }
    }
}

impl TaskProgress {
    pub fn of(task: &QuestTask, mine: Option<&UserTask>) -> Self {
        Self {
            id: task.id.clone(),
            title: task.title.clone(),
            pillar: task.pillar.clone(),
            xp: task.xp,
            order: task.order,
            status: if mine.is_some_and(|m| m.completed) { "completed" } else { "pending" }.into(),
            completed_at: mine.and_then(|m| m.completed_at),
        }
    }
}
