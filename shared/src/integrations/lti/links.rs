//! What a launch says about the LMS beyond the user: its course (the LTI context), the resource link
//! and the quest it leads to, where the student's scores go, and whom a Mentor follows.
//!
//! - A **course** is recorded per registration and context id (`ltc_...`), with its membership URL
//!   for the roster sync, and each person's role in it (Instructor, Learner, Mentor) as their latest
//!   launch into it said: it decides their rights in that course, not their account's role.
//! - A **resource link** (`ltl_...`) leads to one quest of the registration's organization: the one an
//!   instructor chose by deep linking (our content item carries it as the custom parameter
//!   `quest_id`), or the one an admin assigned. Once set, a launch never changes it; a quest of another
//!   organization is ignored.
//! - A Learner's launch of a linked quest whose link has a line item (and the score scope) records a
//!   **grade target**: where their scores for that quest go (grade passback).
//! - A **Mentor** launch with `role_scope_mentor` links the mentor as an observer of those students
//!   (source `lti`, progress only) when they already have accounts through this registration; an
//!   existing link, whose permissions the student may have changed, is left as it is.

use serde_json::json;

pub use super::QUEST_PARAMETER;
use super::launch::Launch;
use super::registration::Registration;
use super::roles::CourseRole;
use crate::domain::auth::{Role, User};
use crate::domain::learning::Quest;
use crate::integrations::observers::{Link, OBSERVER_LINKED, Permissions};
use crate::runtime::events::{self, DomainEvent};
use crate::store::WriteError;
pub use crate::store::lti::{Course, DeepLinkingSession, GradeTarget, ResourceLinkRecord};
use crate::{ApiError, Context, support::crypto};

/// The AGS scope that lets the tool post scores.
pub const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";

fn digest_id(prefix: &str, registration_id: &str, id: &str) -> String {
    format!("{prefix}_{}", &crypto::sha256_hex(format!("{registration_id}\n{id}").as_bytes())[..24])
}

pub fn course_id(registration_id: &str, context_id: &str) -> String {
    digest_id("ltc", registration_id, context_id)
}

pub fn link_id(registration_id: &str, resource_link_id: &str) -> String {
    digest_id("ltl", registration_id, resource_link_id)
}

/// A quest of the organization, or `None` (unknown, or another organization's).
pub async fn quest_of(ctx: &Context, organization_id: &str, quest_id: &str) -> Result<Option<Quest>, ApiError> {
    if quest_id.is_empty() || quest_id.len() > 64 {
        return Ok(None);
    }
    Ok(ctx.store().get_quest(quest_id).await?.filter(|q| q.organization_id == organization_id))
}

/// Records what a resource link launch says about the course, the link and the user's place in it;
/// answers the quest the launch leads to.
pub async fn record_launch(
    ctx: &Context,
    registration: &Registration,
    launch: &Launch,
    user: &User,
) -> Result<Option<Quest>, ApiError> {
    let store = ctx.store();
    let now = ctx.clock.now();
    let course = launch.context.as_ref().map(|c| Course {
        id: course_id(&registration.id, &c.id),
        registration_id: registration.id.clone(),
        organization_id: registration.organization_id.clone(),
        context_id: c.id.clone(),
        label: c.label.clone(),
        title: c.title.clone(),
        deployment_id: launch.deployment_id.clone(),
        memberships_url: launch.memberships_url.clone(),
        updated_at: now,
    });
    let course_role = launch.role.course_role();
    if let Some(course) = &course {
        store.put_lti_course(course).await?;
        store.put_lti_course_role(&course.id, &user.id, course_role, now).await?;
    }
    if launch.role.mentor && !launch.mentor_of.is_empty() {
        link_mentor(ctx, registration, launch, user).await?;
    }
    let Some(resource_link) = &launch.resource_link else { return Ok(None) };
    let link = ResourceLinkRecord {
        id: link_id(&registration.id, &resource_link.id),
        registration_id: registration.id.clone(),
        organization_id: registration.organization_id.clone(),
        resource_link_id: resource_link.id.clone(),
        course_id: course.as_ref().map(|c| c.id.clone()),
        title: resource_link.title.clone(),
        lineitem_url: launch.lineitem_url.clone(),
        scores_allowed: launch.ags_scopes.iter().any(|s| s == SCORE_SCOPE),
        updated_at: now,
    };
    let chosen = match &launch.custom_quest_id {
        Some(id) => quest_of(ctx, &registration.organization_id, id).await?.map(|q| q.id),
        None => None,
    };
    let Some(quest_id) = store.put_lti_link(&link, chosen.as_deref()).await? else { return Ok(None) };
    let Some(quest) = quest_of(ctx, &registration.organization_id, &quest_id).await? else { return Ok(None) };
    if course_role == CourseRole::Learner
        && link.scores_allowed
        && let Some(lineitem_url) = &link.lineitem_url
    {
        let target = GradeTarget {
            registration_id: registration.id.clone(),
            lineitem_url: lineitem_url.clone(),
            subject: launch.subject.clone(),
            link_id: link.id.clone(),
        };
        store.put_lti_grade_target(&user.id, &quest.id, &target).await?;
    }
    Ok(Some(quest))
}

/// The students a Mentor launch names, linked to the mentor when they are this registration's users
/// of the same organization.
async fn link_mentor(
    ctx: &Context,
    registration: &Registration,
    launch: &Launch,
    mentor: &User,
) -> Result<(), ApiError> {
    let store = ctx.store();
    let provider = registration.provider();
    let mut linked = 0;
    for subject in launch.mentor_of.iter().take(50) {
        let Some(student_id) = store.user_id_by_identity(&provider, subject).await? else { continue };
        let Some(student) = store.get_user(&student_id).await? else { continue };
        if student.id == mentor.id
            || student.role != Role::Student
            || student.org_id.as_deref() != Some(registration.organization_id.as_str())
        {
            continue;
        }
        let now = ctx.clock.now();
        let link = Link {
            student_id: student.id.clone(),
            observer_id: mentor.id.clone(),
            relationship: "mentor".into(),
            permissions: Permissions::default(),
            source: "lti".into(),
            observer_email: mentor.email.clone(),
            observer_name: Some(crate::domain::auth::display_name(mentor, "mentor")),
            created_at: now,
        };
        let event = DomainEvent::new(
            OBSERVER_LINKED,
            Some(registration.organization_id.clone()),
            json!({ "student_id": link.student_id, "observer_id": link.observer_id, "relationship": "mentor",
                    "source": "lti", "registration_id": registration.id }),
            now,
        );
        match store.put_new_link(&link, &event).await {
            Ok(()) => {
                events::publish(ctx, &[event]).await;
                linked += 1;
            }
            Err(WriteError::Conflict) => {}
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
    }
    tracing::info!(user_id = mentor.id, registration_id = registration.id, linked, "LTI mentor links");
    Ok(())
}
