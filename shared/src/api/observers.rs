//! Observers: the student's side (`/api/observers/invitations`, `/api/observers`, `/api/me/comments`)
//! and the observer's side (`/api/observers/students`, portfolio, comments, pending invitations).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;

use crate::ErrorBody;
use crate::api::StatusBody;
use crate::domain::auth::email_sign_in::CODE_FAILURES;
use crate::domain::auth::guard::authenticate;
use crate::domain::auth::sessions::session_cookies;
use crate::integrations::observers::Comment;
use crate::integrations::observers::comments::{self, CommentPage, DEFAULT_PAGE, MAX_PAGE, NewComment, valid_cursor};
use crate::integrations::observers::invitations::{self, Accepted, InvitationView, NewInvitation};
use crate::integrations::observers::links::{self, ObserverView, PendingView, PermissionsUpdate, StudentView};
use crate::integrations::observers::portfolio::{self, Portfolio};
use crate::runtime::ratelimit;
use crate::support::http::{
    ApiResult, MAX_JSON_BODY, client_ip, json, json_body, path_param, query_number, query_param, with_cookies,
};
use crate::{ApiError, Context};

/// Invites someone to follow the caller's learning; the invitation goes out by email.
#[utoipa::path(post, path = "/api/observers/invitations", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    request_body = NewInvitation,
    responses(
        (status = 201, description = "Invitation created; the email is on its way", body = InvitationView),
        (status = 400, description = "`invalid_email`, `invalid_relationship`, `invalid_message`, `cannot_invite_self`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "Only students invite observers", body = ErrorBody),
        (status = 409, description = "`invitation_pending`, `already_observer`, `too_many_pending_invitations`", body = ErrorBody),
        (status = 429, description = "Too many invitations this hour", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn create_invitation(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: NewInvitation = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::CREATED, &invitations::invite(&ctx, &principal, body).await?)
}

/// The caller's invitations, newest first, with their status.
#[utoipa::path(get, path = "/api/observers/invitations", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "pending, accepted, expired or cancelled", body = [InvitationView]),
        (status = 403, description = "Students only", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn list_invitations(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &invitations::list(&ctx, &principal).await?)
}

/// Cancels a pending invitation; its link stops working at once.
#[utoipa::path(delete, path = "/api/observers/invitations/{invitation_id}", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(("invitation_id" = String, Path, description = "The invitation (`inv_...`)")),
    responses(
        (status = 200, description = "Cancelled", body = InvitationView),
        (status = 403, description = "Students only", body = ErrorBody),
        (status = 404, description = "`invitation_not_found` (also another student's)", body = ErrorBody),
        (status = 409, description = "`invitation_closed`: accepted, expired or cancelled already", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn cancel_invitation(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &invitations::cancel(&ctx, &principal, &path_param(&req, "invitation_id")).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The code of the invitation email's link.
    pub code: String,
}

/// Accepts an invitation and opens the observer's session. Signed in, the account's address must be
/// the invitation's; signed out, the account of the invited address is used (created as an
/// observer when there is none).
#[utoipa::path(post, path = "/api/observers/invitations/accept", tag = "observers", security((), ("bearer" = []), ("cookie" = [])),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Linked; the observer's token pair (also set as cookies)", body = Accepted),
        (status = 400, description = "`cannot_observe_self`, `invalid_json`", body = ErrorBody),
        (status = 401, description = "An invalid token was sent; or `sign_in_required` (the address belongs to an administrator)", body = ErrorBody),
        (status = 403, description = "`invitation_email_mismatch`: signed in as another address", body = ErrorBody),
        (status = 404, description = "`invitation_not_found`", body = ErrorBody),
        (status = 410, description = "`invitation_used`, `invitation_cancelled`, `invitation_expired`", body = ErrorBody),
        (status = 429, description = "Too many wrong codes from this address", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn accept_invitation(ctx: Arc<Context>, req: Request) -> ApiResult {
    let ip = client_ip(&req);
    ratelimit::refuse_if_spent(&ctx, CODE_FAILURES, &ip).await?;
    let body: AcceptRequest = json_body(&req, MAX_JSON_BODY)?;
    let sent_credentials = crate::support::http::bearer_token(&req).is_some()
        || crate::support::http::cookie(&req, crate::domain::auth::guard::ACCESS_COOKIE).is_some();
    let principal = match sent_credentials {
        true => Some(authenticate(&ctx, &req).await?),
        false => None,
    };
    let (accepted, _) = match invitations::accept(&ctx, &body.code, principal.as_ref()).await {
        Err(e) if e.code == "invitation_not_found" => {
            return Err(ratelimit::count_failure(&ctx, CODE_FAILURES, &ip, e).await);
        }
        other => other?,
    };
    with_cookies(json(StatusCode::OK, &accepted)?, &session_cookies(&accepted.tokens))
}

/// Invitations waiting for the caller's email address (accept each with its emailed link).
#[utoipa::path(get, path = "/api/observers/pending", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Pending invitations to the caller's address", body = [PendingView]),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn pending(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &links::pending(&ctx, &principal).await?)
}

/// The caller's observers, with what each may do.
#[utoipa::path(get, path = "/api/observers", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The student's observers", body = [ObserverView]),
        (status = 403, description = "Students only", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn list_observers(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &links::observers(&ctx, &principal).await?)
}

/// Changes what one observer may see and do; effective on their next request.
#[utoipa::path(put, path = "/api/observers/{observer_id}", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(("observer_id" = String, Path, description = "The observer's user id")),
    request_body = PermissionsUpdate,
    responses(
        (status = 200, description = "The observer, as now allowed", body = ObserverView),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 403, description = "Students only", body = ErrorBody),
        (status = 404, description = "`observer_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn update_observer(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: PermissionsUpdate = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::OK, &links::set_permissions(&ctx, &principal, &path_param(&req, "observer_id"), body).await?)
}

/// Removes an observer: their next request is refused.
#[utoipa::path(delete, path = "/api/observers/{observer_id}", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(("observer_id" = String, Path, description = "The observer's user id")),
    responses(
        (status = 200, description = "`{\"status\": \"removed\"}`", body = StatusBody),
        (status = 403, description = "Students only", body = ErrorBody),
        (status = 404, description = "`observer_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn remove_observer(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    links::remove(&ctx, &principal, &path_param(&req, "observer_id")).await?;
    json(StatusCode::OK, &StatusBody { status: "removed".into() })
}

/// The students the caller follows.
#[utoipa::path(get, path = "/api/observers/students", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Followed students and the caller's permissions for each", body = [StudentView]),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn students(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &links::students(&ctx, &principal).await?)
}

/// A followed student's portfolio: XP by pillar, badges, quests and tasks; evidence (files as
/// presigned links valid 5 minutes) only with `can_view_evidence`.
#[utoipa::path(get, path = "/api/observers/students/{student_id}/portfolio", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(("student_id" = String, Path, description = "The student's user id")),
    responses(
        (status = 200, description = "The portfolio", body = Portfolio),
        (status = 404, description = "`student_not_found`: not a student the caller follows", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn portfolio(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    json(StatusCode::OK, &portfolio::portfolio(&ctx, &principal, &path_param(&req, "student_id")).await?)
}

/// Leaves a comment on a followed student's work (with `can_comment`).
#[utoipa::path(post, path = "/api/observers/comments", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    request_body = NewComment,
    responses(
        (status = 201, description = "Posted (and announced as `observer.comment.posted`)", body = Comment),
        (status = 400, description = "`invalid_comment` (empty, over 2,000 characters, control characters), `invalid_json`", body = ErrorBody),
        (status = 403, description = "`comment_not_allowed`", body = ErrorBody),
        (status = 404, description = "`student_not_found`, `quest_not_found`, `task_not_found`", body = ErrorBody),
        (status = 429, description = "Too many comments this hour", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn post_comment(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: NewComment = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::CREATED, &comments::post(&ctx, &principal, body).await?)
}

/// Comments on a followed student's work that the student has not hidden, newest first.
#[utoipa::path(get, path = "/api/observers/students/{student_id}/comments", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(
        ("student_id" = String, Path, description = "The student's user id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1-100, default 50"),
        ("after" = Option<String>, Query, description = "`next` of the previous page")
    ),
    responses(
        (status = 200, description = "A page of comments", body = CommentPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 404, description = "`student_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn student_comments(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let (after, limit) = page_params(&req)?;
    let page =
        comments::for_observer(&ctx, &principal, &path_param(&req, "student_id"), after.as_deref(), limit).await?;
    json(StatusCode::OK, &page)
}

/// Comments observers left on the caller's work, hidden ones included, newest first.
#[utoipa::path(get, path = "/api/me/comments", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1-100, default 50"),
        ("after" = Option<String>, Query, description = "`next` of the previous page")
    ),
    responses(
        (status = 200, description = "A page of comments", body = CommentPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn my_comments(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let (after, limit) = page_params(&req)?;
    json(StatusCode::OK, &comments::for_student(&ctx, &principal, after.as_deref(), limit).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentVisibility {
    /// `true` hides the comment from every observer; `false` shows it again.
    pub hidden: bool,
}

/// Hides (or shows again) a comment on the caller's work.
#[utoipa::path(put, path = "/api/me/comments/{comment_id}", tag = "observers", security(("bearer" = []), ("cookie" = [])),
    params(("comment_id" = String, Path, description = "The comment (`cm_...`)")),
    request_body = CommentVisibility,
    responses(
        (status = 200, description = "The comment, as now shown", body = Comment),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 404, description = "`comment_not_found` (also comments on someone else's work)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn update_my_comment(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: CommentVisibility = json_body(&req, MAX_JSON_BODY)?;
    json(StatusCode::OK, &comments::set_hidden(&ctx, &principal, &path_param(&req, "comment_id"), body.hidden).await?)
}

fn page_params(req: &Request) -> Result<(Option<String>, i32), ApiError> {
    let limit = match query_number(req, "limit")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => n as i32,
        Some(_) => return Err(ApiError::bad_request("invalid_query", format!("limit must be 1-{MAX_PAGE}"))),
    };
    let after = query_param(req, "after");
    if after.as_deref().is_some_and(|a| !valid_cursor(a)) {
        return Err(ApiError::bad_request("invalid_query", "after must be the next of a previous page"));
    }
    Ok((after, limit))
}
