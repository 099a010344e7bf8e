//! Observers: parents, mentors and coaches whom a student invites to follow their portfolio
//! read-only and, if allowed, to leave encouraging comments.
//!
//! A link is a general observer → student relation with a `source` (`invitation` today; an LMS
//! mentor launch later), so every way in ends in the same authorization check: the student's side
//! of the link, read strongly consistent on every request.

pub mod comments;
pub mod invitations;
pub mod links;
pub mod portfolio;

use serde::{Deserialize, Serialize};

use crate::auth::User;

/// Event types, as webhook subscribers see them.
pub const OBSERVER_LINKED: &str = "observer.linked";
pub const OBSERVER_COMMENT_POSTED: &str = "observer.comment.posted";

/// What an observer is to the student.
pub const RELATIONSHIPS: &[&str] = &["parent", "guardian", "grandparent", "mentor", "coach", "teacher", "other"];

/// What a student lets one observer do beyond seeing progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Permissions {
    /// Evidence blocks (texts, links, files) are shown; otherwise only progress.
    pub can_view_evidence: bool,
    pub can_comment: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Expired,
    Cancelled,
}

/// An invitation as stored.
#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: String,
    pub student_id: String,
    /// The address it was sent to; only that address may accept it.
    pub email: String,
    pub relationship: String,
    pub permissions: Permissions,
    pub message: Option<String>,
    pub status: InvitationStatus,
    /// SHA-256 of the code of the latest email (none before the email is sent).
    pub code_hash: Option<String>,
    pub created_at: i64,
    pub valid_until: i64,
}

impl Invitation {
    /// The status as the student sees it: a pending invitation past its time has expired.
    pub fn status_at(&self, now: i64) -> InvitationStatus {
        match self.status {
            InvitationStatus::Pending if now >= self.valid_until => InvitationStatus::Expired,
            other => other,
        }
    }
}

/// An observer → student link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub student_id: String,
    pub observer_id: String,
    pub relationship: String,
    pub permissions: Permissions,
    /// `invitation`, `lti`...
    pub source: String,
    pub observer_email: Option<String>,
    pub observer_name: Option<String>,
    pub created_at: i64,
}

/// A comment on a student's work, stored and returned as plain text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Comment {
    pub id: String,
    pub student_id: String,
    pub observer_id: String,
    /// The observer's name as it was when they commented (or their relationship).
    pub author_name: String,
    pub relationship: String,
    pub quest_id: Option<String>,
    pub task_id: Option<String>,
    /// Plain text: never interpreted as HTML by the hub; render it as text.
    pub body: String,
    /// Hidden by the student: observers no longer see it.
    pub hidden: bool,
    pub created_at: i64,
}

/// How a person is named to others: their given and family names, else `fallback`.
pub fn display_name(user: &User, fallback: &str) -> String {
    let name = [user.given_name.as_deref(), user.family_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() { fallback.to_string() } else { name }
}

/// Free text from a person (messages, comments): trimmed, at most `max` characters, no control
/// characters other than line breaks and tabs. `None` when empty after trimming.
pub fn clean_text(text: &str, max: usize) -> Result<Option<String>, &'static str> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err("too long");
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err("contains control characters");
    }
    Ok((!text.is_empty()).then(|| text.replace("\r\n", "\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(clean_text("  hi\r\nthere ", 20).unwrap().as_deref(), Some("hi\nthere"));
        assert_eq!(clean_text("   ", 20).unwrap(), None);
        assert!(clean_text(&"é".repeat(21), 20).is_err());
        assert!(clean_text(&"é".repeat(20), 20).is_ok());
        assert!(clean_text("a\u{0}b", 20).is_err());
        assert!(clean_text("a\u{1b}[31mb", 20).is_err());
    }

    #[test]
    fn pending_invitations_expire_at_their_time() {
        let inv = Invitation {
            id: "i".into(),
            student_id: "s".into(),
            email: "a@b.c".into(),
            relationship: "parent".into(),
            permissions: Permissions::default(),
            message: None,
            status: InvitationStatus::Pending,
            code_hash: None,
            created_at: 0,
            valid_until: 100,
        };
        assert_eq!(inv.status_at(99), InvitationStatus::Pending);
        assert_eq!(inv.status_at(100), InvitationStatus::Expired);
        let cancelled = Invitation { status: InvitationStatus::Cancelled, ..inv };
        assert_eq!(cancelled.status_at(200), InvitationStatus::Cancelled);
    }
}
