//! Comments: observers allowed to comment leave plain-text notes on a student's work; the student
//! sees them all and may hide any, which hides it from every observer.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::links::require_link;
use super::{Comment, OBSERVER_COMMENT_POSTED};
use crate::domain::auth::display_name;
use crate::domain::auth::guard::Principal;
use crate::runtime::events::{self, DomainEvent};
use crate::runtime::ratelimit::{self, Rule};
use crate::store::WriteError;
use crate::support::text::clean_text;
use crate::{ApiError, Context, support::crypto};

pub const MAX_COMMENT_CHARS: usize = 2000;
const COMMENTS_PER_OBSERVER: Rule = Rule { name: "observer-comment", limit: 30, window_secs: 3600 };
pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 100;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    pub student_id: String,
    /// A quest of the student's (optional), and a task of it (optional, needs `quest_id`).
    pub quest_id: Option<String>,
    pub task_id: Option<String>,
    /// Plain text, at most 2,000 characters.
    pub body: String,
}

/// Posts a comment (observers with `can_comment` only).
pub async fn post(ctx: &Context, principal: &Principal, new: NewComment) -> Result<Comment, ApiError> {
    let link = require_link(ctx, principal, &new.student_id).await?;
    if !link.permissions.can_comment {
        return Err(not_allowed());
    }
    let body = match clean_text(&new.body, MAX_COMMENT_CHARS) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(ApiError::bad_request("invalid_comment", "The comment is empty")),
        Err(why) => {
            return Err(ApiError::bad_request(
                "invalid_comment",
                format!("The comment is {why} (at most {MAX_COMMENT_CHARS} characters)"),
            ));
        }
    };
    let store = ctx.store();
    match (&new.quest_id, &new.task_id) {
        (None, Some(_)) => return Err(ApiError::bad_request("invalid_comment", "task_id needs its quest_id")),
        (Some(quest_id), task_id) => {
            // Only the student's own quests (and their tasks) can be commented on.
            let enrolled = store.learning_state(&new.student_id, Some(quest_id)).await?;
            if enrolled.get(quest_id).is_none_or(|s| s.enrollment.is_none()) {
                return Err(ApiError::not_found("quest_not_found", "The student has no such quest"));
            }
            if let Some(task_id) = task_id {
                let quest = store.get_quest(quest_id).await?;
                if !quest.is_some_and(|q| q.tasks.iter().any(|t| &t.id == task_id)) {
                    return Err(ApiError::not_found("task_not_found", "The quest has no such task"));
                }
            }
        }
        (None, None) => {}
    }
    ratelimit::check(ctx, COMMENTS_PER_OBSERVER, &principal.user_id).await?;
    let author = store.get_user(&principal.user_id).await?;
    let now = ctx.clock.now();
    let comment = Comment {
        // Time-ordered ids: the newest comment sorts last.
        id: format!("cm_{now:011}{}", crypto::random_token(9)),
        student_id: new.student_id,
        observer_id: principal.user_id.clone(),
        author_name: author.as_ref().map_or_else(|| link.relationship.clone(), |a| display_name(a, &link.relationship)),
        relationship: link.relationship,
        quest_id: new.quest_id,
        task_id: new.task_id,
        body,
        hidden: false,
        created_at: now,
    };
    let student_org = store.get_user(&comment.student_id).await?.and_then(|s| s.org_id);
    let event = DomainEvent::new(
        OBSERVER_COMMENT_POSTED,
        student_org,
        json!({
            "comment_id": comment.id,
            "student_id": comment.student_id,
            "observer_id": comment.observer_id,
            "quest_id": comment.quest_id,
            "task_id": comment.task_id,
        }),
        now,
    );
    match store.post_comment(&comment, &event).await {
        Ok(()) => {}
        // The link went, or lost `can_comment`, since it was checked.
        Err(WriteError::Conflict) => return Err(not_allowed()),
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    events::publish(ctx, &[event]).await;
    tracing::info!(user_id = principal.user_id, comment_id = comment.id, "comment posted");
    Ok(comment)
}

/// A page of comments, newest first, and the cursor of the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CommentPage {
    pub comments: Vec<Comment>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// Comments on a student's work as an observer sees them (hidden ones left out).
pub async fn for_observer(
    ctx: &Context,
    principal: &Principal,
    student_id: &str,
    after: Option<&str>,
    limit: i32,
) -> Result<CommentPage, ApiError> {
    require_link(ctx, principal, student_id).await?;
    let (comments, next) = ctx.store().comments_on(student_id, after, limit).await?;
    Ok(CommentPage { comments: comments.into_iter().filter(|c| !c.hidden).collect(), next })
}

/// Comments on the caller's own work, hidden ones included.
pub async fn for_student(
    ctx: &Context,
    principal: &Principal,
    after: Option<&str>,
    limit: i32,
) -> Result<CommentPage, ApiError> {
    let (comments, next) = ctx.store().comments_on(&principal.user_id, after, limit).await?;
    Ok(CommentPage { comments, next })
}

/// Hides (or shows again) a comment on the caller's own work.
pub async fn set_hidden(
    ctx: &Context,
    principal: &Principal,
    comment_id: &str,
    hidden: bool,
) -> Result<Comment, ApiError> {
    let updated = match comment_id.starts_with("cm_") {
        true => ctx.store().set_comment_hidden(&principal.user_id, comment_id, hidden).await?,
        false => None,
    };
    let comment = updated.ok_or_else(|| ApiError::not_found("comment_not_found", "No such comment on your work"))?;
    tracing::info!(user_id = principal.user_id, comment_id, hidden, "comment visibility changed");
    Ok(comment)
}

/// `after` cursors are comment ids; anything else is refused before it reaches the database.
pub fn valid_cursor(after: &str) -> bool {
    after.starts_with("cm_")
        && after.len() <= 64
        && after.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn not_allowed() -> ApiError {
    ApiError::new(http::StatusCode::FORBIDDEN, "comment_not_allowed", "The student has not allowed you to comment")
}
