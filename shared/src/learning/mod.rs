//! The learning core every integration feeds: quests made of tasks, enrollment, evidence, task
//! completion, XP per skill pillar and quest completion, each change announced by a domain event.
//!
//! An LMS assignment maps to one quest (`platform`, `course_id`, `assignment_id`); a submission for it
//! is evidence for, and completes, the quest's first task.

pub mod badges;
pub mod quests;
pub mod submissions;

use serde::{Deserialize, Serialize};

/// Where a quest comes from in an LMS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LmsMapping {
    pub platform: String,
    pub course_id: String,
    pub assignment_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuestTask {
    pub id: String,
    pub title: String,
    pub pillar: String,
    pub xp: i64,
    /// 1-based position in the quest.
    pub order: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quest {
    pub id: String,
    pub organization_id: String,
    pub title: String,
    pub pillar: String,
    pub lms: Option<LmsMapping>,
    pub tasks: Vec<QuestTask>,
    pub created_at: i64,
}

impl Quest {
    /// The task an LMS submission completes.
    pub fn assignment_task(&self) -> &QuestTask {
        self.tasks.iter().min_by_key(|t| t.order).expect("quests have at least one task")
    }
}

/// One piece of evidence, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceBlock {
    pub order: u32,
    #[serde(rename = "type")]
    pub block_type: BlockType,
    /// Text for `text` blocks; the URL for `link` blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The stored file of image, video and document blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<StoredFile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockType {
    Text,
    Image,
    Video,
    Document,
    Link,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredFile {
    /// Unguessable S3 key in the evidence bucket.
    pub key: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// A pillar or other short identifier: lower-case letters, digits, `_` and `-`.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
