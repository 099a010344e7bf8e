//! Names and Role Provisioning Services: an instructor or admin syncs a course's members from the
//! platform. `POST /api/lti/contexts/{course_id}/roster-sync` answers `202` with a sync at once; the
//! `lti-roster-sync-worker` (up to 15 minutes) reads the membership page by page (following
//! `Link: <...>; rel="next"` on the service's own origin, each URL through the SSRF guard) and creates
//! or updates active members through the launch's provisioning path, 8 at a time, as students or
//! teachers (no login or roster changes an existing account's role, and an asserted address links only
//! under provisioning's rules); inactive or deleted members are reported, never deleted.
//! `GET /api/lti/roster-syncs/{sync_id}` tells where it stands and, once finished, its summary.
//!
//! One sync per course at a time: a request while one is queued or running answers that one. At most
//! [`MAX_SYNCS_PER_ORGANIZATION`] run at once per organization, and five requests a course a minute.
//! A run whose lease expired died (killed by its timeout, its message lost): the next request for
//! the course records it as failed (`alert=lti_roster_sync_stale`) and starts a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsMessage;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::links::Course;
use super::registration::Registration;
use super::roles::map_roles;
use super::services::ServiceError;
use crate::domain::auth::Role;
use crate::domain::auth::guard::Principal;
use crate::domain::auth::provisioning::{ExternalProfile, Provisioned, provision_user};
use crate::runtime::jobs::{self, QueueError};
use crate::store::WriteError;
use crate::store::roster_syncs::{MemberError, RosterSync, RosterSyncStatus, RosterSyncSummary};
use crate::support::crypto;
use crate::{ApiError, Context};

pub const MEMBERSHIP_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";
const MEMBERSHIP_MEDIA_TYPE: &str = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";
/// A course larger than this is refused (a page is at most a few MB).
const MAX_MEMBERS: usize = 10_000;
const MAX_PAGES: usize = 200;
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Members provisioned at once.
const CONCURRENCY: usize = 8;
/// Roster syncs one organization runs at once.
pub const MAX_SYNCS_PER_ORGANIZATION: usize = 2;
/// A queued sync holds its course this long before a worker starts it; a running one, the worker's
/// timeout (900 s) and a minute.
const QUEUED_LEASE_SECS: i64 = 20 * 60;
const RUNNING_LEASE_SECS: i64 = 16 * 60;
/// What a run may take: well under the worker's 15 minutes, so it always records its end.
const RUN_BUDGET: Duration = Duration::from_secs(13 * 60);
/// Failed members listed in a summary at most.
const MAX_LISTED_ERRORS: usize = 100;

/// Requests to sync one course a minute.
const SYNCS_PER_COURSE: crate::runtime::ratelimit::Rule =
    crate::runtime::ratelimit::Rule { name: "lti-roster-sync", limit: 5, window_secs: 60 };

/// What the roster queue carries.
#[derive(Debug, Serialize, Deserialize)]
struct SyncJob {
    sync_id: String,
}

/// Whether `principal` may sync a course and see its syncs: its instructors (whose latest launch into
/// it was as Instructor, whatever their account's role), the admins of its organization, platform
/// admins.
async fn may_sync(ctx: &Context, principal: &Principal, course: &Course) -> Result<bool, ApiError> {
    let same_org = principal.org_id.as_deref() == Some(course.organization_id.as_str());
    Ok(match principal.role {
        Role::Admin => true,
        Role::OrgAdmin => same_org,
        _ => {
            same_org
                && ctx.store().lti_course_role(&course.id, &principal.user_id).await?
                    == Some(super::roles::CourseRole::Instructor)
        }
    })
}

/// Asks for a sync of a course's roster: the new queued sync, or the one already queued or running.
pub async fn request(ctx: &Context, principal: &Principal, course_id: &str) -> Result<RosterSync, ApiError> {
    let not_found = || ApiError::not_found("course_not_found", "No such course");
    let store = ctx.store();
    let course = store.lti_course(course_id).await?.ok_or_else(not_found)?;
    if !may_sync(ctx, principal, &course).await? {
        return Err(not_found());
    }
    crate::runtime::ratelimit::check(ctx, SYNCS_PER_COURSE, &course.id).await?;
    store
        .lti_registration(&course.registration_id)
        .await?
        .filter(|r| r.organization_id == course.organization_id)
        .ok_or_else(not_found)?;
    if course.memberships_url.is_none() {
        return Err(ApiError::conflict("roster_unavailable", "The LMS offers no roster service for this course"));
    }
    let queue = ctx
        .config
        .lti_roster_queue_url
        .as_deref()
        .ok_or_else(|| ApiError::unavailable("LTI_ROSTER_QUEUE_URL is not set"))?;
    for _ in 0..3 {
        let now = ctx.clock.now();
        if let Some(lease) = store.roster_lease(&course.id).await? {
            if lease.until >= now {
                if let Some(running) = store.roster_sync(&lease.sync_id).await? {
                    return Ok(running);
                }
            } else {
                record_dead(ctx, &lease.sync_id).await?;
            }
        }
        let slots = store.roster_slots(&course.organization_id).await?;
        for (_, lease) in slots.iter().filter(|(_, lease)| lease.until < now) {
            record_dead(ctx, &lease.sync_id).await?;
        }
        let Some(slot) =
            (0..MAX_SYNCS_PER_ORGANIZATION).find(|n| !slots.iter().any(|(held, l)| held == n && l.until >= now))
        else {
            return Err(ApiError {
                retry_after: Some(60),
                ..ApiError::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_roster_syncs",
                    format!(
                        "This organization already runs {MAX_SYNCS_PER_ORGANIZATION} roster syncs; retry when one ends"
                    ),
                )
            });
        };
        let sync = RosterSync {
            id: format!("rsy_{}", crypto::random_token(16)),
            course_id: course.id.clone(),
            organization_id: course.organization_id.clone(),
            requested_by: principal.user_id.clone(),
            status: RosterSyncStatus::Queued,
            requested_at: now,
            started_at: None,
            finished_at: None,
            summary: None,
            error: None,
            slot,
        };
        match store.create_roster_sync(&sync, now + QUEUED_LEASE_SECS, now).await {
            Ok(()) => {}
            // Another request took the course or the slot meanwhile: look again.
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
        if let Err(e) = jobs::enqueue(ctx, queue, &SyncJob { sync_id: sync.id.clone() }).await {
            // Nothing would run it: end it now, so the course is free for the retry.
            let failed = finished(&sync, None, Some("the sync could not be queued".into()), now);
            if let Err(end) = store.finish_roster_sync(&failed, RosterSyncStatus::Queued).await {
                tracing::error!(sync_id = sync.id, error = %end, "unqueued roster sync not ended");
            }
            return Err(ApiError::unavailable(e));
        }
        tracing::info!(sync_id = sync.id, course_id = course.id, user_id = principal.user_id, "LTI roster sync queued");
        return Ok(sync);
    }
    // Requests of the same organization raced for its slots three times: a moment later one is free.
    Err(ApiError::too_many_requests(1))
}

/// A run that held a lease past its time died (or never held its lease): recorded as failed, once.
async fn record_dead(ctx: &Context, sync_id: &str) -> Result<Option<RosterSync>, ApiError> {
    let error = "the run stopped before it finished (timed out or lost); its members provisioned so far stay";
    let failed = ctx.store().fail_dead_roster_sync(sync_id, error, ctx.clock.now()).await?;
    if let Some(failed) = &failed {
        tracing::error!(alert = "lti_roster_sync_stale", sync_id, course_id = failed.course_id, "LTI roster sync died");
    }
    Ok(failed)
}

/// A sync, for whoever may sync its course (or asked for it).
pub async fn status(ctx: &Context, principal: &Principal, sync_id: &str) -> Result<RosterSync, ApiError> {
    let not_found = || ApiError::not_found("roster_sync_not_found", "No such roster sync");
    let store = ctx.store();
    let sync = store.roster_sync(sync_id).await?.ok_or_else(not_found)?;
    let course = store.lti_course(&sync.course_id).await?.ok_or_else(not_found)?;
    if sync.requested_by != principal.user_id && !may_sync(ctx, principal, &course).await? {
        return Err(not_found());
    }
    // A sync still queued or running whose course lease is gone or past its time died: say so now.
    if !sync.status.is_finished() {
        let lease = store.roster_lease(&sync.course_id).await?;
        if !lease.is_some_and(|l| l.sync_id == sync.id && l.until >= ctx.clock.now()) {
            if let Some(failed) = record_dead(ctx, &sync.id).await? {
                return Ok(failed);
            }
            return store.roster_sync(sync_id).await?.ok_or_else(not_found);
        }
    }
    Ok(sync)
}

fn finished(sync: &RosterSync, summary: Option<RosterSyncSummary>, error: Option<String>, now: i64) -> RosterSync {
    let status = if error.is_some() { RosterSyncStatus::Failed } else { RosterSyncStatus::Succeeded };
    RosterSync { status, finished_at: Some(now), summary, error, ..sync.clone() }
}

/// Consumer of the roster queue: runs one queued sync and records its end. A sync that is not queued
/// any more (a duplicate message, one found dead) is left alone.
pub async fn work(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: SyncJob = jobs::parse(&message)?;
    let store = ctx.store();
    let store_error = |e: crate::store::StoreError| QueueError(e.to_string());
    let Some(sync) = store.roster_sync(&job.sync_id).await.map_err(store_error)? else {
        tracing::warn!(sync_id = job.sync_id, "roster sync message without its sync; dropped");
        return Ok(());
    };
    if sync.status != RosterSyncStatus::Queued {
        return Ok(());
    }
    let started = ctx.clock.now();
    match store.start_roster_sync(&sync, started + RUNNING_LEASE_SECS).await {
        Ok(()) => {}
        // Another worker took it, or its leases are not its own any more (found dead, taken since):
        // one still queued will never run.
        Err(WriteError::Conflict) => {
            let now = store.roster_sync(&sync.id).await.map_err(store_error)?;
            if now.is_some_and(|s| s.status == RosterSyncStatus::Queued) {
                let error = "its course was taken by another sync before it started";
                store.fail_dead_roster_sync(&sync.id, error, started).await.map_err(store_error)?;
            }
            return Ok(());
        }
        Err(WriteError::Store(e)) => return Err(store_error(e)),
    }
    let running = RosterSync { status: RosterSyncStatus::Running, started_at: Some(started), ..sync };
    let (summary, error) = match run_sync(&ctx, &running, Instant::now() + RUN_BUDGET).await {
        Ok(summary) => (Some(summary), None),
        Err((summary, error)) => (summary, Some(error)),
    };
    let end = finished(&running, summary, error, ctx.clock.now());
    match store.finish_roster_sync(&end, RosterSyncStatus::Running).await {
        Ok(()) | Err(WriteError::Conflict) => {}
        Err(WriteError::Store(e)) => return Err(store_error(e)),
    }
    let summary = end.summary.clone().unwrap_or_default();
    tracing::info!(
        sync_id = end.id,
        course_id = end.course_id,
        status = ?end.status,
        total = summary.total,
        failed = summary.failed,
        pages = summary.pages,
        "LTI roster sync finished"
    );
    Ok(())
}

/// Reads the course's roster and provisions its members before `deadline`. A failure keeps what was
/// done (the summary so far) with why it stopped.
async fn run_sync(
    ctx: &Context,
    sync: &RosterSync,
    deadline: Instant,
) -> Result<RosterSyncSummary, (Option<RosterSyncSummary>, String)> {
    let gone = || (None, "the course or its registration no longer exists".to_string());
    let store = ctx.store();
    let course = store.lti_course(&sync.course_id).await.map_err(|e| (None, e.to_string()))?.ok_or_else(gone)?;
    let registration = store
        .lti_registration(&course.registration_id)
        .await
        .map_err(|e| (None, e.to_string()))?
        .filter(|r| r.organization_id == course.organization_id)
        .ok_or_else(gone)?;
    run(ctx, &registration, &course, deadline).await
}

/// Reads a course's roster from its platform and provisions every member, stopping at `deadline`.
pub async fn run(
    ctx: &Context,
    registration: &Registration,
    course: &Course,
    deadline: Instant,
) -> Result<RosterSyncSummary, (Option<RosterSyncSummary>, String)> {
    let url = course.memberships_url.clone().ok_or((None, "the LMS offers no roster service".to_string()))?;
    let read = tokio::time::timeout_at(deadline.into(), read_members(ctx, registration, &url)).await;
    let (members, pages) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            tracing::warn!(
                registration_id = registration.id,
                course_id = course.id,
                error = e.message,
                "roster read failed"
            );
            return Err((None, format!("The LMS roster could not be read: {}", e.message)));
        }
        Err(_) => return Err((None, "ran out of time reading the roster".into())),
    };
    let mut summary = RosterSyncSummary { total: members.len(), pages, ..Default::default() };
    let mut results = futures_util::stream::iter(members)
        .map(|member| async move { provision_member(ctx, registration, course, &member).await })
        .buffered(CONCURRENCY);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), results.next()).await;
        let Ok(next) = next else {
            let done = summary.successful + summary.failed;
            return Err((Some(summary), format!("ran out of time after {done} members; a new sync continues")));
        };
        let Some(result) = next else { return Ok(summary) };
        count(&mut summary, result);
    }
}

fn count(summary: &mut RosterSyncSummary, result: MemberResult) {
    match result.outcome {
        Outcome::Provisioned(Provisioned::Created) => summary.created += 1,
        Outcome::Provisioned(Provisioned::Linked) => summary.linked += 1,
        Outcome::Provisioned(Provisioned::Existing) => summary.updated += 1,
        Outcome::Skipped => summary.skipped += 1,
        Outcome::Inactive | Outcome::Failed => {}
    }
    if matches!(result.outcome, Outcome::Inactive) {
        summary.inactive += 1;
    }
    if matches!(result.outcome, Outcome::Provisioned(_) | Outcome::Skipped) {
        summary.successful += 1;
    } else {
        summary.failed += 1;
        if summary.errors.len() < MAX_LISTED_ERRORS {
            summary.errors.push(MemberError { member_id: result.member_id, message: result.message });
        }
    }
}

/// Every member, page after page.
async fn read_members(
    ctx: &Context,
    registration: &Registration,
    first: &str,
) -> Result<(Vec<Value>, usize), ServiceError> {
    let mut members = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(url) = next.take() {
        if pages == MAX_PAGES {
            return Err(ServiceError::refused("the roster has too many pages"));
        }
        let (page, link) = read_page(ctx, registration, &url).await?;
        pages += 1;
        members.extend(page["members"].as_array().cloned().unwrap_or_default());
        if members.len() > MAX_MEMBERS {
            return Err(ServiceError::refused("the course has more than 10,000 members"));
        }
        // The next page is on the roster service's own origin (the token goes with it).
        next = link.and_then(|l| next_link(&l)).map(|n| same_origin(first, &n)).transpose()?;
    }
    Ok((members, pages))
}

async fn read_page(
    ctx: &Context,
    registration: &Registration,
    url: &str,
) -> Result<(Value, Option<String>), ServiceError> {
    let response = super::services::call(ctx, registration, MEMBERSHIP_SCOPE, url, |client| {
        Ok(client.get(url)?.header("accept", MEMBERSHIP_MEDIA_TYPE))
    })
    .await?;
    let status = response.status().as_u16();
    if status == 401 {
        return Err(ServiceError::retry("the roster service refused a fresh token"));
    }
    if !response.status().is_success() {
        return Err(ServiceError::of_status(status, "the roster service"));
    }
    let link = response.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
    let body = crate::support::outbound::read_capped(response, MAX_PAGE_BYTES)
        .await
        .map_err(|_| ServiceError::refused("a roster page is too large"))?;
    let page: Value = serde_json::from_slice(&body).map_err(|_| ServiceError::refused("a roster page is not JSON"))?;
    Ok((page, Some(link).filter(|l| !l.is_empty())))
}

fn same_origin(first: &str, next: &str) -> Result<String, ServiceError> {
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    match (origin(first), origin(next)) {
        (Some(a), Some(b)) if a == b => Ok(next.to_string()),
        _ => Err(ServiceError::refused("a roster page links to another origin")),
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// What became of one member.
enum Outcome {
    Provisioned(Provisioned),
    /// A mentor: they join through their own launch.
    Skipped,
    Inactive,
    Failed,
}

struct MemberResult {
    member_id: String,
    outcome: Outcome,
    message: String,
}

async fn provision_member(ctx: &Context, registration: &Registration, course: &Course, member: &Value) -> MemberResult {
    let text = |k: &str| member[k].as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let member_id = text("user_id").unwrap_or_default();
    let result =
        |outcome, message: &str| MemberResult { member_id: member_id.clone(), outcome, message: message.into() };
    if member_id.is_empty() || member_id.len() > 255 {
        return result(Outcome::Failed, "the member has no valid user_id");
    }
    let status = text("status").unwrap_or_else(|| "Active".into());
    if status != "Active" {
        return result(
            Outcome::Inactive,
            &format!("inactive in the course ({status}): not provisioned, nothing deleted"),
        );
    }
    let roles: Vec<String> =
        member["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect();
    let mapped = map_roles(&roles);
    if mapped.mentor {
        return result(Outcome::Skipped, "skipped: mentors join through their own launch");
    }
    // A roster says what someone is in one course: it creates students and teachers; an existing
    // account keeps its role (provisioning's rule for every door).
    let role = match mapped.role {
        Role::Teacher | Role::OrgAdmin | Role::Admin => Role::Teacher,
        _ => Role::Student,
    };
    let profile = ExternalProfile {
        provider: registration.provider(),
        external_id: member_id.clone(),
        email: text("email").filter(|e| e.len() <= 254),
        email_proven: false,
        email_is_school_record: registration.emails_are_school_records,
        given_name: super::clean_name(text("given_name").as_deref()),
        family_name: super::clean_name(text("family_name").as_deref()),
        role,
        org_id: Some(course.organization_id.clone()),
    };
    match provision_user(ctx, &profile).await {
        Ok((_, provisioned)) => result(Outcome::Provisioned(provisioned), "provisioned"),
        Err(e) => result(Outcome::Failed, &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn the_next_page_is_found_among_link_relations() {
        assert_eq!(
            next_link(r#"<https://lms.example/m?p=2>; rel="next", <https://lms.example/m?p=9>; rel="last""#),
            Some("https://lms.example/m?p=2".into())
        );
        assert_eq!(next_link(r#"<https://lms.example/m?p=1>; rel="prev""#), None);
        assert_eq!(next_link(r#"<https://x/y>;rel=next"#), Some("https://x/y".into()));
        assert_eq!(next_link("garbage"), None);
    }
}
