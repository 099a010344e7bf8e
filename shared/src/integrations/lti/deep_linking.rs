//! Deep linking: an instructor's `LtiDeepLinkingRequest` shows the organization's quests; the choice
//! goes back to the platform as a signed `LtiDeepLinkingResponse` (one `ltiResourceLink` content item
//! per quest, each with a line item scored out of the quest's XP and the custom parameter
//! `quest_id`), posted by an auto-submitting form to the request's return URL.
//!
//! The request is kept as a session (30 minutes) behind a random token that only the picker page
//! carries: the page is framed by the LMS, where our cookies may not reach, so the token is both the
//! session and the proof that the choice comes from that page. It is taken with one conditional
//! delete: one answer per request. The answer is addressed (`aud`) to the issuer of the registration
//! the request came through, and only to the return URL that request named.

use serde_json::{Value, json};

use super::launch::Launch;
use super::links::{DeepLinkingSession, QUEST_PARAMETER, quest_of};
use super::registration::Registration;
use super::roles::CourseRole;
use crate::domain::auth::User;
use crate::domain::learning::Quest;
use crate::support::html::{Page, escape};
use crate::{ApiError, Context, support::crypto};

/// How long an instructor may take to choose.
pub const SESSION_TTL_SECS: i64 = 1800;
/// The content item type we return.
const RESOURCE_LINK: &str = "ltiResourceLink";
/// Quests one answer may carry.
const MAX_ITEMS: usize = 20;

/// What a deep linking request must be before anyone is provisioned from it: an instructor's, for
/// links, with an https return URL.
pub fn admissible(ctx: &Context, launch: &Launch) -> Result<(), ApiError> {
    let settings = launch.deep_linking.as_ref().ok_or_else(|| ApiError::internal("deep linking settings"))?;
    // The course role decides: an Instructor of this course, whatever their account's role.
    if launch.role.course_role() != CourseRole::Instructor {
        return Err(forbidden());
    }
    if !settings.accept_types.iter().any(|t| t == RESOURCE_LINK) {
        return Err(ApiError::bad_request(
            "deep_linking_unsupported",
            "The LMS does not accept links here; this tool offers quests as links",
        ));
    }
    let https = url::Url::parse(&settings.return_url)
        .is_ok_and(|u| u.scheme() == "https" || ctx.config.stage == crate::support::config::Stage::Local);
    if !https {
        return Err(ApiError::bad_request("invalid_return_url", "The deep linking return URL is not https"));
    }
    Ok(())
}

fn forbidden() -> ApiError {
    ApiError::new(http::StatusCode::FORBIDDEN, "deep_linking_forbidden", "Only instructors add content to a course")
}

/// The picker page of an [`admissible`] request, framed by the LMS.
pub async fn start(ctx: &Context, registration: &Registration, launch: &Launch, user: &User) -> Result<Page, ApiError> {
    let settings = launch.deep_linking.as_ref().ok_or_else(|| ApiError::internal("deep linking settings"))?;
    let return_url = url::Url::parse(&settings.return_url).map_err(ApiError::internal)?;
    let token = crypto::random_token(32);
    let session = DeepLinkingSession {
        registration_id: registration.id.clone(),
        deployment_id: launch.deployment_id.clone(),
        user_id: user.id.clone(),
        organization_id: registration.organization_id.clone(),
        return_url: return_url.to_string(),
        accept_multiple: settings.accept_multiple,
        data: settings.data.clone().filter(|d| d.len() <= 4096),
        expires_at: ctx.clock.now() + SESSION_TTL_SECS,
    };
    ctx.store().put_lti_deep_linking(&token, &session).await?;
    let quests =
        ctx.store().organization_documents::<Quest>(&registration.organization_id, "QUESTS", true, 100).await?;
    tracing::info!(registration_id = registration.id, user_id = user.id, quests = quests.len(), "deep linking");
    let mut page = picker(&token, &quests, settings.accept_multiple);
    page.frame_ancestors = Some(super::frame_ancestors(ctx));
    Ok(page)
}

fn picker(token: &str, quests: &[Quest], multiple: bool) -> Page {
    let input = if multiple { "checkbox" } else { "radio" };
    let items: String = quests
        .iter()
        .map(|q| {
            let xp: i64 = q.tasks.iter().map(|t| t.xp).sum();
            format!(
                "<label><input type=\"{input}\" name=\"quest_id\" value=\"{}\"> {} <span class=\"muted\">({} tasks, {xp} XP)</span></label>",
                escape(&q.id),
                escape(&q.title),
                q.tasks.len()
            )
        })
        .collect();
    let choices = if quests.is_empty() {
        "<p>Your organization has no quests yet.</p>".to_string()
    } else {
        format!(
            "<fieldset><legend>Quests</legend>{items}</fieldset><button name=\"action\" value=\"add\">Add to the course</button> "
        )
    };
    Page::new(
        http::StatusCode::OK,
        "Add a quest",
        format!(
            "<h1>Add a quest to your course</h1><form method=\"post\" action=\"/api/lti/deep-linking\">\
             <input type=\"hidden\" name=\"session\" value=\"{}\">{choices}\
             <button name=\"action\" value=\"cancel\">Cancel</button></form>",
            escape(token)
        ),
    )
}

/// The instructor's choice (the picker's form): the signed answer, in a page that posts it to the LMS.
pub async fn respond(ctx: &Context, form: &[(String, String)]) -> Result<Page, ApiError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let expired = || {
        ApiError::bad_request(
            "invalid_session",
            "This choice was already sent, or took too long; start again from the LMS",
        )
    };
    let token = field("session").filter(|t| !t.is_empty() && t.len() <= 128).ok_or_else(expired)?;
    let chosen: Vec<&str> = form.iter().filter(|(k, _)| k == "quest_id").map(|(_, v)| v.as_str()).collect();
    let cancel = field("action") == Some("cancel");
    if !cancel && (chosen.is_empty() || chosen.len() > MAX_ITEMS) {
        return Err(ApiError::bad_request(
            "invalid_choice",
            "Choose one quest (or at most 20 where the LMS allows several)",
        ));
    }
    // Checked on a read first: a wrong choice does not use up the instructor's session.
    let session = ctx.store().lti_deep_linking(token).await?.ok_or_else(expired)?;
    if session.expires_at <= ctx.clock.now() {
        return Err(expired());
    }
    if !cancel && chosen.len() > 1 && !session.accept_multiple {
        return Err(ApiError::bad_request("invalid_choice", "The LMS accepts one quest here"));
    }
    let registration = ctx
        .store()
        .lti_registration(&session.registration_id)
        .await?
        .filter(|r| r.organization_id == session.organization_id)
        .ok_or_else(|| {
            ApiError::new(http::StatusCode::FORBIDDEN, "unknown_registration", "The LMS is no longer registered")
        })?;
    let mut items = Vec::new();
    if !cancel {
        for id in chosen {
            let quest = quest_of(ctx, &session.organization_id, id)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid_choice", "A chosen quest does not exist"))?;
            items.push(content_item(ctx, &quest)?);
        }
    }
    ctx.store().take_lti_deep_linking(token).await?.ok_or_else(expired)?;
    let jwt =
        super::tool_key::current(ctx).await?.sign(&response_claims(&registration, &session, items, ctx.clock.now()));
    tracing::info!(registration_id = registration.id, user_id = session.user_id, cancel, "deep linking answered");
    let mut page = answer_page(&session.return_url, &jwt);
    page.frame_ancestors = Some(super::frame_ancestors(ctx));
    Ok(page)
}

/// One quest as a resource link the platform adds to the course, with a line item for its grades.
fn content_item(ctx: &Context, quest: &Quest) -> Result<Value, ApiError> {
    let base = ctx.config.public_base_url.as_deref().ok_or_else(|| ApiError::internal("PUBLIC_BASE_URL is not set"))?;
    let xp: i64 = quest.tasks.iter().map(|t| t.xp).sum();
    Ok(json!({
        "type": RESOURCE_LINK,
        "title": quest.title,
        "url": format!("{base}/api/lti/launch"),
        "custom": { QUEST_PARAMETER: quest.id },
        "lineItem": { "scoreMaximum": xp.max(1), "label": quest.title, "resourceId": quest.id, "tag": "quest" },
    }))
}

/// The `LtiDeepLinkingResponse` claims: from the tool (`iss` = our client id) to the platform
/// (`aud` = its issuer), for the deployment of the request, echoing its `data`.
pub fn response_claims(
    registration: &Registration,
    session: &DeepLinkingSession,
    items: Vec<Value>,
    now: i64,
) -> Value {
    let mut claims = json!({
        "iss": registration.client_id,
        "aud": [registration.issuer],
        "iat": now,
        "exp": now + 300,
        "nonce": crypto::random_token(16),
        format!("{}message_type", super::CLAIM): "LtiDeepLinkingResponse",
        format!("{}version", super::CLAIM): "1.3.0",
        format!("{}deployment_id", super::CLAIM): session.deployment_id,
        "https://purl.imsglobal.org/spec/lti-dl/claim/content_items": items,
    });
    if let Some(data) = &session.data {
        claims["https://purl.imsglobal.org/spec/lti-dl/claim/data"] = json!(data);
    }
    claims
}

/// A page that posts `JWT` to the platform at once (a button for browsers without script).
fn answer_page(return_url: &str, jwt: &str) -> Page {
    let mut page = Page::new(
        http::StatusCode::OK,
        "Returning to your course",
        format!(
            "<h1>Returning to your course</h1><form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"JWT\" value=\"{}\"><button>Continue</button></form>",
            escape(return_url),
            escape(jwt)
        ),
    );
    page.form_action = url::Url::parse(return_url).ok().map(|u| u.origin().ascii_serialization());
    page.auto_submit = true;
    page
}
