//! Invitations: a student invites someone by email; the person accepts with the code of the email.
//!
//! An invitation is bound to its address: accepting while signed in as anyone else is refused. Its
//! code is single-use (the acceptance is one conditional transaction), stored only as a hash, and
//! replaced each time the email is (re)sent. Invitations lapse after 7 days.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Invitation, InvitationStatus, Link, OBSERVER_LINKED, Permissions, RELATIONSHIPS};
use crate::domain::auth::email_sign_in::{account_of, create_observer, public_base_url, valid_email};
use crate::domain::auth::guard::Principal;
use crate::domain::auth::sessions::{TokenPair, start_session};
use crate::domain::auth::{Role, User, display_name, email_key};
use crate::runtime::email::jobs::{self, EmailJob};
use crate::runtime::email::{self, templates};
use crate::runtime::events::{self, DomainEvent};
use crate::runtime::ratelimit::{self, Rule};
use crate::store::WriteError;
use crate::support::text::clean_text;
use crate::{ApiError, Context, support::crypto};

pub const VALID_DAYS: i64 = 7;
/// Pending invitations one student may have at once.
pub const MAX_PENDING: usize = 20;
/// Invitations one student may send per hour (each one is an email to an address they chose), and
/// invitations one address may receive per day (from any students).
const INVITES_PER_STUDENT: Rule = Rule { name: "observer-invite", limit: 10, window_secs: 3600 };
const INVITES_PER_ADDRESS: Rule = Rule { name: "observer-invite-address", limit: 5, window_secs: 24 * 3600 };
/// Longest personal message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    pub email: String,
    /// parent, guardian, grandparent, mentor, coach, teacher or other.
    pub relationship: String,
    #[serde(default)]
    pub can_view_evidence: bool,
    #[serde(default)]
    pub can_comment: bool,
    /// A personal note for the email (plain text, at most 500 characters).
    pub message: Option<String>,
}

/// An invitation as its student sees it (the code is never shown: it only travels by email).
#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub relationship: String,
    pub can_view_evidence: bool,
    pub can_comment: bool,
    pub message: Option<String>,
    pub status: InvitationStatus,
    pub created_at: i64,
    pub expires_at: i64,
}

impl InvitationView {
    pub fn of(inv: &Invitation, now: i64) -> Self {
        Self {
            id: inv.id.clone(),
            email: inv.email.clone(),
            relationship: inv.relationship.clone(),
            can_view_evidence: inv.permissions.can_view_evidence,
            can_comment: inv.permissions.can_comment,
            message: inv.message.clone(),
            status: inv.status_at(now),
            created_at: inv.created_at,
            expires_at: inv.valid_until,
        }
    }
}

/// Creates an invitation and queues its email (students only).
pub async fn invite(ctx: &Context, principal: &Principal, new: NewInvitation) -> Result<InvitationView, ApiError> {
    principal.require_role(&[Role::Student])?;
    if !valid_email(&new.email) {
        return Err(ApiError::bad_request("invalid_email", "Enter a valid email address"));
    }
    if !RELATIONSHIPS.contains(&new.relationship.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_relationship",
            format!("relationship must be one of {}", RELATIONSHIPS.join(", ")),
        ));
    }
    let message = match new.message.as_deref().map(|m| clean_text(m, MAX_MESSAGE_CHARS)).transpose() {
        Ok(m) => m.flatten(),
        Err(why) => {
            return Err(ApiError::bad_request(
                "invalid_message",
                format!("message is {why} (at most {MAX_MESSAGE_CHARS} characters)"),
            ));
        }
    };
    let store = ctx.store();
    let student = store.get_user(&principal.user_id).await?.ok_or_else(account_gone)?;
    if student.email.as_deref().map(email_key) == Some(email_key(&new.email)) {
        return Err(ApiError::bad_request("cannot_invite_self", "You cannot invite yourself"));
    }
    let now = ctx.clock.now();
    let to_address = store.invitations_for_email(&new.email).await?;
    if to_address.iter().any(|i| i.student_id == student.id && i.valid_until > now) {
        return Err(ApiError::conflict(
            "invitation_pending",
            "This address already has a pending invitation; cancel it to send a new one",
        ));
    }
    // The newest 100 are enough to count: at 10 invitations an hour, 100 newer ones take 10 hours.
    let mine = store.invitations_of(&student.id, 100).await?;
    let pending = mine.iter().filter(|i| i.status_at(now) == InvitationStatus::Pending).count();
    if pending >= MAX_PENDING {
        return Err(ApiError::conflict(
            "too_many_pending_invitations",
            format!("At most {MAX_PENDING} invitations may be pending; cancel some first"),
        ));
    }
    if let Some(existing) = store.user_id_by_proven_email(&new.email).await?
        && store.link(&student.id, &existing).await?.is_some()
    {
        return Err(ApiError::conflict(
            "already_observer",
            "This person already follows you; change their permissions instead",
        ));
    }
    ratelimit::check(ctx, INVITES_PER_STUDENT, &student.id).await?;
    ratelimit::check(ctx, INVITES_PER_ADDRESS, &crypto::sha256_hex(email_key(&new.email).as_bytes())).await?;
    let invitation = Invitation {
        id: format!("inv_{}", crypto::random_token(12)),
        student_id: student.id.clone(),
        email: new.email.trim().to_string(),
        relationship: new.relationship,
        permissions: Permissions { can_view_evidence: new.can_view_evidence, can_comment: new.can_comment },
        message,
        status: InvitationStatus::Pending,
        code_hash: None,
        created_at: now,
        valid_until: now + VALID_DAYS * 24 * 3600,
    };
    store.create_invitation(&invitation).await.map_err(write_error)?;
    if let Err(e) = jobs::enqueue(ctx, &EmailJob::Invitation { invitation_id: invitation.id.clone() }).await {
        // Nothing half-done: without its email the invitation would only wait for nothing, and keep
        // the address blocked (`invitation_pending`) for a week. Said loudly when even that fails.
        if let Err(cancel) = store.cancel_invitation(&invitation, now).await {
            tracing::error!(
                alert = "invitation_left_pending",
                invitation_id = invitation.id,
                error = ?cancel,
                "an invitation whose email could not be queued is still pending; the student may cancel it"
            );
        }
        return Err(e);
    }
    tracing::info!(user_id = student.id, invitation_id = invitation.id, "observer invited");
    Ok(InvitationView::of(&invitation, now))
}

/// Worker: (re)issues the invitation's code and emails it, if the invitation is still pending.
pub async fn send_invitation(ctx: &Context, invitation_id: &str) -> Result<(), ApiError> {
    let store = ctx.store();
    let now = ctx.clock.now();
    let Some(inv) = store.get_invitation(invitation_id).await? else { return Ok(()) };
    if inv.status_at(now) != InvitationStatus::Pending {
        tracing::info!(invitation_id, "invitation no longer pending: not sent");
        return Ok(());
    }
    let Some(student) = store.get_user(&inv.student_id).await? else { return Ok(()) };
    let code = crypto::random_token(32);
    match store.issue_invitation_code(&inv, &code).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => return Ok(()),
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    let link = format!("{}/observers/accept?code={code}", public_base_url(ctx)?);
    let text = templates::InvitationText {
        student_name: &display_name(&student, "A student"),
        relationship: &inv.relationship,
        message: inv.message.as_deref(),
        can_view_evidence: inv.permissions.can_view_evidence,
        can_comment: inv.permissions.can_comment,
        link: &link,
        days: VALID_DAYS,
    };
    email::send(ctx, &templates::invitation(&inv.email, &text)).await.map_err(ApiError::unavailable)?;
    tracing::info!(invitation_id, "invitation sent");
    Ok(())
}

/// A student's invitations, newest first.
pub async fn list(ctx: &Context, principal: &Principal) -> Result<Vec<InvitationView>, ApiError> {
    principal.require_role(&[Role::Student])?;
    let now = ctx.clock.now();
    Ok(ctx.store().invitations_of(&principal.user_id, 100).await?.iter().map(|i| InvitationView::of(i, now)).collect())
}

/// Cancels one of the student's pending invitations; its link stops working at once.
pub async fn cancel(ctx: &Context, principal: &Principal, invitation_id: &str) -> Result<InvitationView, ApiError> {
    principal.require_role(&[Role::Student])?;
    let store = ctx.store();
    let not_found = || ApiError::not_found("invitation_not_found", "No such invitation");
    let inv = store
        .get_invitation(invitation_id)
        .await?
        .filter(|i| i.student_id == principal.user_id)
        .ok_or_else(not_found)?;
    let now = ctx.clock.now();
    if inv.status_at(now) != InvitationStatus::Pending {
        return Err(ApiError::conflict("invitation_closed", "Only a pending invitation can be cancelled"));
    }
    match store.cancel_invitation(&inv, now).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => {
            return Err(ApiError::conflict("invitation_closed", "Only a pending invitation can be cancelled"));
        }
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    let cancelled = Invitation { status: InvitationStatus::Cancelled, ..inv };
    Ok(InvitationView::of(&cancelled, now))
}

/// What the accept page shows before the person decides.
pub struct Preview {
    pub invitation: Invitation,
    pub student_name: String,
    /// The student's organization (the events of an acceptance belong to it).
    pub student_org: Option<String>,
}

/// Finds the invitation a code opens, refusing used, cancelled and expired ones with their reason.
pub async fn open(ctx: &Context, code: &str) -> Result<Preview, ApiError> {
    let store = ctx.store();
    let inv = match code.len() {
        1..=128 => store.invitation_by_code(code).await?,
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::not_found(
            "invitation_not_found",
            "This invitation link is not valid (a newer email may have replaced it)",
        )
    })?;
    match inv.status_at(ctx.clock.now()) {
        InvitationStatus::Pending => {}
        InvitationStatus::Accepted => return Err(gone("invitation_used", "This invitation was already accepted")),
        InvitationStatus::Cancelled => {
            return Err(gone("invitation_cancelled", "The student cancelled this invitation"));
        }
        InvitationStatus::Expired => {
            return Err(gone("invitation_expired", "This invitation has expired; ask the student for a new one"));
        }
    }
    let student = store
        .get_user(&inv.student_id)
        .await?
        .ok_or_else(|| gone("invitation_cancelled", "The student's account no longer exists"))?;
    Ok(Preview { student_name: display_name(&student, "A student"), student_org: student.org_id, invitation: inv })
}

/// What an acceptance gives the observer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub student_id: String,
    pub student_name: String,
    pub relationship: String,
    pub permissions: Permissions,
    /// The observer's session (also set as cookies).
    #[serde(flatten)]
    pub tokens: TokenPair,
}

/// Accepts an invitation: as the signed-in account (whose *proven* address must be the invitation's), or,
/// signed out, as a new observer account of the invited address (the code came by email); an
/// address that has an account must sign in first. Opens a session for the observer.
pub async fn accept(ctx: &Context, code: &str, signed_in: Option<&Principal>) -> Result<(Accepted, User), ApiError> {
    let Preview { invitation: inv, student_name, student_org } = open(ctx, code).await?;
    let store = ctx.store();
    let observer = match signed_in {
        Some(principal) => {
            let user = store.get_user(&principal.user_id).await?.ok_or_else(account_gone)?;
            // An address a provider asserted proves nothing: another school's LMS could assert it.
            if !user.has_proven(&inv.email) {
                return Err(ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "invitation_email_mismatch",
                    "This invitation was sent to an address this account has not proven; sign out, or sign in with that address's emailed link",
                ));
            }
            user
        }
        // Signed out: the code proves the mailbox, which is enough to create an observer account
        // for it, but never to open an existing account (an invitation lives 7 days and gets
        // forwarded): its owner signs in first, then accepts.
        None => match account_of(ctx, &inv.email).await? {
            Some(_) => return Err(sign_in_required()),
            None => create_observer(ctx, &inv.email).await?.ok_or_else(sign_in_required)?,
        },
    };
    if observer.id == inv.student_id {
        return Err(ApiError::bad_request("cannot_observe_self", "You cannot follow yourself"));
    }
    let now = ctx.clock.now();
    let link = Link {
        student_id: inv.student_id.clone(),
        observer_id: observer.id.clone(),
        relationship: inv.relationship.clone(),
        permissions: inv.permissions,
        source: "invitation".into(),
        observer_email: observer.email.clone(),
        observer_name: Some(display_name(&observer, &inv.relationship)),
        created_at: now,
    };
    let event = DomainEvent::new(
        OBSERVER_LINKED,
        student_org,
        json!({
            "student_id": link.student_id,
            "observer_id": link.observer_id,
            "relationship": link.relationship,
            "source": link.source,
            "invitation_id": inv.id,
        }),
        now,
    );
    match store.accept_invitation(&inv, code, &link, &event, now).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => {
            // Accepted, cancelled or re-sent meanwhile: answer what it is now.
            open(ctx, code).await?;
            return Err(ApiError::conflict("conflict", "The invitation changed meanwhile; retry"));
        }
        Err(WriteError::Store(e)) => return Err(e.into()),
    }
    events::publish(ctx, &[event]).await;
    tracing::info!(user_id = observer.id, invitation_id = inv.id, "invitation accepted");
    let tokens = start_session(ctx, &observer).await?;
    let accepted = Accepted {
        student_id: inv.student_id,
        student_name,
        relationship: inv.relationship,
        permissions: inv.permissions,
        tokens,
    };
    Ok((accepted, observer))
}

fn gone(code: &'static str, message: &str) -> ApiError {
    ApiError::new(http::StatusCode::GONE, code, message)
}

/// The invited address has an account: its owner signs in (email link) before accepting.
pub fn sign_in_required() -> ApiError {
    ApiError::unauthorized(
        "sign_in_required",
        "This address already has an account: sign in with it, then accept the invitation",
    )
}

fn account_gone() -> ApiError {
    ApiError::unauthorized("invalid_token", "The account no longer exists")
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Conflict => ApiError::conflict("conflict", "A concurrent change interfered; retry"),
        WriteError::Store(e) => e.into(),
    }
}
