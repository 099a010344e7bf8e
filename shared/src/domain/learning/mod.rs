//! The learning core every integration feeds: quests made of tasks, enrollment, evidence, task
//! completion, XP per skill pillar and quest completion, each change announced by a domain event.
//!
//! An LMS assignment maps to one quest (`platform`, `course_id`, `assignment_id`); a submission for it
//! is evidence for, and completes, the quest's first task.

pub mod badges;
pub mod files;
pub mod progress;
pub mod quests;
pub mod submissions;

pub use crate::store::learning::{BlockType, EvidenceBlock, LmsMapping, Quest, QuestTask, StoredFile};

impl Quest {
    /// The task an LMS submission completes.
    pub fn assignment_task(&self) -> &QuestTask {
        self.tasks.iter().min_by_key(|t| t.order).expect("quests have at least one task")
    }
}

/// A pillar or other short identifier: lower-case letters, digits, `_` and `-`.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
