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

pub use crate::store::observers::{Comment, Invitation, InvitationStatus, Link, Permissions};

/// Event types, as webhook subscribers see them.
pub const OBSERVER_LINKED: &str = "observer.linked";
pub const OBSERVER_COMMENT_POSTED: &str = "observer.comment.posted";

/// What an observer is to the student.
pub const RELATIONSHIPS: &[&str] = &["parent", "guardian", "grandparent", "mentor", "coach", "teacher", "other"];

#[cfg(test)]
mod tests {
    use super::*;

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
