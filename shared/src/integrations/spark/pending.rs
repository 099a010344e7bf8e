//! Submissions kept for an assignment no quest maps yet, as the organization's admins see them, and
//! the daily check that alarms before any of them is forgotten (they are kept 30 days): an admin who
//! maps the assignment in time loses nothing.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::submission_jobs::submission_id;
use super::webhook::{SOURCE, SubmissionPayload};
use crate::domain::auth::guard::Principal;
use crate::domain::tenancy;
use crate::store::pending::{PENDING_RETENTION_SECS, PendingPageError, PendingSubmission};
use crate::{ApiError, Context};

/// The check alarms for submissions this close to being forgotten.
pub const WARN_BEFORE_SECS: i64 = 7 * 24 * 3600;
/// Submissions the check reads at most (it reports "at least" beyond).
const CHECK_LIMIT: usize = 1000;

/// One kept submission: where it is for, whose it is, and until when it waits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingView {
    /// The id Spark's `202` answer gave (`sub_...`).
    pub submission_id: String,
    pub platform: String,
    pub course_id: String,
    pub assignment_id: String,
    /// Spark's id of the student.
    pub student_external_id: Option<String>,
    /// As Spark signed it.
    pub submitted_at: Option<String>,
    pub received_at: i64,
    /// When it is forgotten unless a quest maps its assignment first.
    pub expires_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingPage {
    pub organization_id: String,
    /// Oldest first: the first ones expire first.
    pub submissions: Vec<PendingView>,
    pub next_cursor: Option<String>,
}

fn view(p: PendingSubmission) -> PendingView {
    let payload: Option<SubmissionPayload> = serde_json::from_str(&p.payload).ok();
    PendingView {
        submission_id: submission_id(&p.key),
        platform: p.mapping.platform,
        course_id: p.mapping.course_id,
        assignment_id: p.mapping.assignment_id,
        student_external_id: payload.as_ref().map(|p| p.spark_user_id.clone()),
        submitted_at: payload.map(|p| p.submitted_at),
        received_at: p.received_at,
        expires_at: p.expires_at,
    }
}

/// A page of the organization's kept submissions (its admins; platform admins name it).
pub async fn list(
    ctx: &Context,
    principal: &Principal,
    organization_id: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<PendingPage, ApiError> {
    let org = principal.administered_organization(organization_id)?;
    let (found, next) =
        ctx.store().pending_submissions_of(&org, i64::MAX, limit, cursor).await.map_err(|e| match e {
            PendingPageError::Cursor(_) => ApiError::bad_request("invalid_cursor", "cursor is not one this API gave"),
            PendingPageError::Store(e) => e.into(),
        })?;
    Ok(PendingPage { organization_id: org, submissions: found.into_iter().map(view).collect(), next_cursor: next })
}

/// Scheduled daily: counts Spark's kept submissions that expire within [`WARN_BEFORE_SECS`] and, when
/// there are any, logs `alert=pending_submission_expiring` (the `PendingSubmissionsExpiring` alarm).
pub async fn check_expiry(ctx: Arc<Context>, _schedule: Value) -> Result<Value, ApiError> {
    let Ok(org) = tenancy::organization_of(&ctx, SOURCE) else {
        return Ok(json!({ "checked": false, "reason": "Spark has no organization (SparkOrganizationId)" }));
    };
    let now = ctx.clock.now();
    let received_before = now + WARN_BEFORE_SECS - PENDING_RETENTION_SECS;
    let (mut expiring, mut cursor) = (Vec::new(), None);
    loop {
        let page = ctx.store().pending_submissions_of(&org, received_before, 100, cursor.as_deref()).await;
        let (found, next) = page.map_err(|e| ApiError::unavailable(e.to_string()))?;
        expiring.extend(found);
        cursor = next;
        if cursor.is_none() || expiring.len() >= CHECK_LIMIT {
            break;
        }
    }
    let first_expiry = expiring.iter().map(|p| p.expires_at).min();
    if let Some(first_expiry) = first_expiry {
        tracing::error!(
            alert = "pending_submission_expiring",
            organization_id = org,
            count = expiring.len(),
            first_expiry,
            "Spark submissions kept for unmapped assignments expire within 7 days: map their assignments to quests"
        );
    }
    Ok(json!({ "checked": true, "organization_id": org, "expiring": expiring.len(), "first_expiry": first_expiry }))
}
