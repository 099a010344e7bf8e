//! Names and Role Provisioning Services: an instructor or admin syncs a course's members from the
//! platform (`POST /api/lti/contexts/{course_id}/roster-sync`). The membership is read page by page
//! (following `Link: <...>; rel="next"` on the service's own origin, each URL through the SSRF guard);
//! active members are created or updated through the launch's provisioning path, 8 at a time, as
//! students or teachers (no login or roster changes an existing account's role, and an asserted
//! address links only under provisioning's rules); inactive or deleted members are reported, never
//! deleted. Five syncs of a course a minute at most. The answer is seed 004's summary: `total`,
//! `successful`, `failed`, and one result per member.

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::links::Course;
use super::registration::Registration;
use super::roles::map_roles;
use super::services::ServiceError;
use crate::domain::auth::Role;
use crate::domain::auth::guard::Principal;
use crate::domain::auth::provisioning::{ExternalProfile, provision_user};
use crate::{ApiError, Context};

pub const MEMBERSHIP_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";
const MEMBERSHIP_MEDIA_TYPE: &str = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";
/// A course larger than this is refused (a page is at most a few MB).
const MAX_MEMBERS: usize = 10_000;
const MAX_PAGES: usize = 200;
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Members provisioned at once.
const CONCURRENCY: usize = 8;

/// One member's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberResult {
    /// The platform's user id.
    pub member_id: String,
    /// Our user id, when the member has (or now has) an account.
    pub user_id: Option<String>,
    pub success: bool,
    /// `created`, `updated`, `unchanged`, or why not.
    pub message: String,
}

/// The roster sync's answer.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RosterSummary {
    pub course_id: String,
    pub total: usize,
    pub successful: usize,
    pub failed: usize,
    /// Inactive or deleted in the course: reported, not provisioned, nothing deleted.
    pub inactive: usize,
    /// Membership pages read from the platform.
    pub pages: usize,
    pub members: Vec<MemberResult>,
}

/// Syncs of one course a minute: each reads the whole roster and writes every member.
const SYNCS_PER_COURSE: crate::runtime::ratelimit::Rule =
    crate::runtime::ratelimit::Rule { name: "lti-roster-sync", limit: 5, window_secs: 60 };

/// Syncs a course's roster: its instructors (whose latest launch into it was as Instructor, whatever
/// their account's role), the admins of its organization, platform admins.
pub async fn sync(ctx: &Context, principal: &Principal, course_id: &str) -> Result<RosterSummary, ApiError> {
    let not_found = || ApiError::not_found("course_not_found", "No such course");
    let course = ctx.store().lti_course(course_id).await?.ok_or_else(not_found)?;
    let same_org = principal.org_id.as_deref() == Some(course.organization_id.as_str());
    let allowed = match principal.role {
        Role::Admin => true,
        Role::OrgAdmin => same_org,
        _ => {
            same_org
                && ctx.store().lti_course_role(&course.id, &principal.user_id).await?
                    == Some(super::roles::CourseRole::Instructor)
        }
    };
    if !allowed {
        return Err(not_found());
    }
    crate::runtime::ratelimit::check(ctx, SYNCS_PER_COURSE, &course.id).await?;
    let registration = ctx
        .store()
        .lti_registration(&course.registration_id)
        .await?
        .filter(|r| r.organization_id == course.organization_id)
        .ok_or_else(not_found)?;
    let url = course
        .memberships_url
        .clone()
        .ok_or_else(|| ApiError::conflict("roster_unavailable", "The LMS offers no roster service for this course"))?;
    let (members, pages) = read_members(ctx, &registration, &url).await.map_err(|e| {
        tracing::warn!(registration_id = registration.id, course_id, error = e.message, "roster read failed");
        ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "roster_unavailable",
            format!("The LMS roster could not be read: {}", e.message),
        )
    })?;
    let (registration_ref, course_ref) = (&registration, &course);
    let results: Vec<MemberResult> = futures_util::stream::iter(members)
        .map(|member| async move { provision_member(ctx, registration_ref, course_ref, &member).await })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let inactive = results.iter().filter(|r| r.message.starts_with("inactive")).count();
    let successful = results.iter().filter(|r| r.success).count();
    let summary = RosterSummary {
        course_id: course.id.clone(),
        total: results.len(),
        successful,
        failed: results.len() - successful,
        inactive,
        pages,
        members: results,
    };
    tracing::info!(
        course_id,
        registration_id = registration.id,
        user_id = principal.user_id,
        total = summary.total,
        failed = summary.failed,
        pages,
        "LTI roster synced"
    );
    Ok(summary)
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

async fn provision_member(ctx: &Context, registration: &Registration, course: &Course, member: &Value) -> MemberResult {
    let text = |k: &str| member[k].as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let member_id = text("user_id").unwrap_or_default();
    let failed = |message: &str| MemberResult {
        member_id: member_id.clone(),
        user_id: None,
        success: false,
        message: message.to_string(),
    };
    if member_id.is_empty() || member_id.len() > 255 {
        return failed("the member has no valid user_id");
    }
    let status = text("status").unwrap_or_else(|| "Active".into());
    if status != "Active" {
        let user_id = ctx.store().user_id_by_identity(&registration.provider(), &member_id).await.ok().flatten();
        return MemberResult {
            member_id,
            user_id,
            success: false,
            message: format!("inactive in the course ({status}): not provisioned, nothing deleted"),
        };
    }
    let roles: Vec<String> =
        member["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect();
    let mapped = map_roles(&roles);
    if mapped.mentor {
        return MemberResult {
            member_id,
            user_id: None,
            success: true,
            message: "skipped: mentors join through their own launch".into(),
        };
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
        Ok((user, provisioned)) => MemberResult {
            member_id,
            user_id: Some(user.id),
            success: true,
            message: match provisioned {
                crate::domain::auth::provisioning::Provisioned::Created => "created",
                crate::domain::auth::provisioning::Provisioned::Linked => "linked",
                crate::domain::auth::provisioning::Provisioned::Existing => "updated",
            }
            .into(),
        },
        Err(e) => failed(&e.message),
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
