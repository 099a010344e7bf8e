//! Both sides of the links: a student's observers (list, permissions, removal) and an observer's
//! students and waiting invitations.

use serde::{Deserialize, Serialize};

use super::{InvitationStatus, Link, Permissions};
use crate::domain::auth::display_name;
use crate::domain::auth::guard::Principal;
use crate::domain::auth::{Role, User};
use crate::store::{ItemExt, WriteError};
use crate::{ApiError, Context};

/// One of a student's observers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ObserverView {
    pub observer_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub relationship: String,
    pub can_view_evidence: bool,
    pub can_comment: bool,
    /// How the link was made: `invitation`, or an LMS (`lti`).
    pub source: String,
    pub since: i64,
}

impl From<Link> for ObserverView {
    fn from(l: Link) -> Self {
        Self {
            observer_id: l.observer_id,
            name: l.observer_name,
            email: l.observer_email,
            relationship: l.relationship,
            can_view_evidence: l.permissions.can_view_evidence,
            can_comment: l.permissions.can_comment,
            source: l.source,
            since: l.created_at,
        }
    }
}

/// The student's observers.
pub async fn observers(ctx: &Context, principal: &Principal) -> Result<Vec<ObserverView>, ApiError> {
    principal.require_role(&[Role::Student])?;
    Ok(ctx.store().observers_of(&principal.user_id).await?.into_iter().map(ObserverView::from).collect())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionsUpdate {
    pub can_view_evidence: bool,
    pub can_comment: bool,
}

/// Changes what one observer may do; effective on their next request.
pub async fn set_permissions(
    ctx: &Context,
    principal: &Principal,
    observer_id: &str,
    update: PermissionsUpdate,
) -> Result<ObserverView, ApiError> {
    principal.require_role(&[Role::Student])?;
    let p = Permissions { can_view_evidence: update.can_view_evidence, can_comment: update.can_comment };
    let store = ctx.store();
    match store.update_permissions(&principal.user_id, observer_id, p).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => return Err(observer_not_found()),
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(user_id = principal.user_id, observer_id, "observer permissions changed");
    store.link(&principal.user_id, observer_id).await?.map(ObserverView::from).ok_or_else(observer_not_found)
}

/// Removes an observer; their next request is refused.
pub async fn remove(ctx: &Context, principal: &Principal, observer_id: &str) -> Result<(), ApiError> {
    principal.require_role(&[Role::Student])?;
    match ctx.store().remove_link(&principal.user_id, observer_id).await {
        Ok(()) => {
            tracing::info!(user_id = principal.user_id, observer_id, "observer removed");
            Ok(())
        }
        Err(WriteError::Conflict) => Err(observer_not_found()),
        Err(WriteError::Store(e)) => Err(e.into()),
    }
}

/// A student an observer follows.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StudentView {
    pub student_id: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub relationship: String,
    pub can_view_evidence: bool,
    pub can_comment: bool,
}

/// The students the caller follows, with what each lets them do (one query, one batch read).
pub async fn students(ctx: &Context, principal: &Principal) -> Result<Vec<StudentView>, ApiError> {
    let store = ctx.store();
    let followed = store.students_of(&principal.user_id).await?;
    let mut keys = Vec::new();
    for (student_id, _) in &followed {
        keys.push((format!("USER#{student_id}"), "PROFILE".to_string()));
        keys.push((format!("USER#{student_id}"), format!("OBSERVER#{}", principal.user_id)));
    }
    let items = store.get_many(keys).await?;
    let mut out = Vec::new();
    for (student_id, _) in followed {
        let pk = format!("USER#{student_id}");
        let of = |sk: &str| items.iter().find(|i| i.str("pk") == Some(pk.as_str()) && i.str("sk") == Some(sk));
        // The student's side decides: a link being removed right now is not listed.
        let (Some(profile), Some(link)) = (of("PROFILE"), of(&format!("OBSERVER#{}", principal.user_id))) else {
            continue;
        };
        let Some(link) = crate::store::observers::link_from_item(&student_id, link) else { continue };
        out.push(StudentView {
            student_id,
            given_name: profile.str("given_name").map(str::to_string),
            family_name: profile.str("family_name").map(str::to_string),
            relationship: link.relationship,
            can_view_evidence: link.permissions.can_view_evidence,
            can_comment: link.permissions.can_comment,
        });
    }
    Ok(out)
}

/// An invitation waiting for the caller's address.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingView {
    pub invitation_id: String,
    pub student_name: String,
    pub relationship: String,
    pub can_view_evidence: bool,
    pub can_comment: bool,
    pub message: Option<String>,
    pub expires_at: i64,
}

/// Invitations still pending for the signed-in account's email (accepted with the emailed link).
/// Only a proven address lists them: one a provider asserted says nothing about whose mailbox it is.
pub async fn pending(ctx: &Context, principal: &Principal) -> Result<Vec<PendingView>, ApiError> {
    let store = ctx.store();
    let user: User = store
        .get_user(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "The account no longer exists"))?;
    let Some(email) = user.email.filter(|_| user.email_proven) else { return Ok(Vec::new()) };
    let now = ctx.clock.now();
    let waiting: Vec<String> = store
        .invitations_for_email(&email)
        .await?
        .into_iter()
        .filter(|i| i.valid_until > now && i.student_id != user.id)
        .map(|i| i.invitation_id)
        .collect();
    let mut out = Vec::new();
    for id in waiting {
        let Some(inv) = store.get_invitation(&id).await? else { continue };
        if inv.status_at(now) != InvitationStatus::Pending {
            continue;
        }
        let student_name = store.get_user(&inv.student_id).await?.map(|s| display_name(&s, "A student"));
        out.push(PendingView {
            invitation_id: inv.id,
            student_name: student_name.unwrap_or_else(|| "A student".into()),
            relationship: inv.relationship,
            can_view_evidence: inv.permissions.can_view_evidence,
            can_comment: inv.permissions.can_comment,
            message: inv.message,
            expires_at: inv.valid_until,
        });
    }
    Ok(out)
}

/// The link that lets the caller see a student; 404 (not 403) otherwise, so student ids reveal nothing.
pub async fn require_link(ctx: &Context, principal: &Principal, student_id: &str) -> Result<Link, ApiError> {
    ctx.store()
        .link(student_id, &principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("student_not_found", "You do not follow this student"))
}

fn observer_not_found() -> ApiError {
    ApiError::not_found("observer_not_found", "No such observer")
}
