//! The LTI tool's HTTP endpoints: platform registrations (organization and platform admins).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;

use crate::api::StatusBody;
use crate::domain::auth::guard::authenticate;
use crate::integrations::lti::flow::Launched;
use crate::integrations::lti::registration::{
    self, Registration, RegistrationInput, RegistrationUpdate, RegistrationWithTool, tool_configuration,
};
use crate::store::roster_syncs::RosterSync;
use crate::support::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id};
use crate::{ApiError, Context, ErrorBody};

/// An organization's registrations.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegistrationList {
    pub organization_id: String,
    pub registrations: Vec<Registration>,
}

fn with_tool(ctx: &Context, registration: Registration) -> Result<RegistrationWithTool, crate::ApiError> {
    Ok(RegistrationWithTool { registration, tool: tool_configuration(ctx)? })
}

/// Registers an LMS (issuer, client id, deployments, its endpoints) for an organization (platform
/// admins); answers the tool's URLs to paste into the LMS.
#[utoipa::path(post, path = "/api/lti/registrations", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    request_body = RegistrationInput,
    responses(
        (status = 201, description = "The registration and the tool's URLs", body = RegistrationWithTool),
        (status = 400, description = "`invalid_registration` (a URL refused by the outbound guard, an id out of bounds, no organization_id), `invalid_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins register platforms", body = ErrorBody),
        (status = 409, description = "`registration_exists`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn create_registration(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let input: RegistrationInput = json_body(&req, MAX_JSON_BODY)?;
    let created = registration::create(&ctx, &principal, input).await?;
    json(StatusCode::CREATED, &with_tool(&ctx, created)?)
}

/// The organization's registrations.
#[utoipa::path(get, path = "/api/lti/registrations", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("organization_id" = Option<String>, Query, description = "Platform admins: whose (default: your own)")),
    responses(
        (status = 200, description = "Registrations, newest first", body = RegistrationList),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn list_registrations(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let organization_id = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let registrations = ctx.store().lti_registrations_of(&organization_id).await?;
    json(StatusCode::OK, &RegistrationList { organization_id, registrations })
}

/// One registration, with the tool's URLs.
#[utoipa::path(get, path = "/api/lti/registrations/{registration_id}", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("registration_id" = String, Path, description = "The registration (`ltr_...`)")),
    responses(
        (status = 200, description = "The registration and the tool's URLs", body = RegistrationWithTool),
        (status = 404, description = "`registration_not_found` (also another organization's)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn get_registration(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let found = registration::administered(&ctx, &principal, &path_param(&req, "registration_id")).await?;
    json(StatusCode::OK, &with_tool(&ctx, found)?)
}

/// Changes a registration (its name, deployments or the platform's endpoints; not its issuer or client id).
#[utoipa::path(put, path = "/api/lti/registrations/{registration_id}", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("registration_id" = String, Path, description = "The registration (`ltr_...`)")),
    request_body = RegistrationUpdate,
    responses(
        (status = 200, description = "The registration and the tool's URLs", body = RegistrationWithTool),
        (status = 400, description = "`invalid_registration`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins change the URLs", body = ErrorBody),
        (status = 404, description = "`registration_not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: changed meanwhile", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn update_registration(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let update: RegistrationUpdate = json_body(&req, MAX_JSON_BODY)?;
    let changed = registration::update(&ctx, &principal, &path_param(&req, "registration_id"), update).await?;
    json(StatusCode::OK, &with_tool(&ctx, changed)?)
}

/// Deletes a registration: the LMS's launches are refused from now on.
#[utoipa::path(delete, path = "/api/lti/registrations/{registration_id}", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("registration_id" = String, Path, description = "The registration (`ltr_...`)")),
    responses(
        (status = 200, description = "`{\"status\": \"deleted\"}`", body = StatusBody),
        (status = 404, description = "`registration_not_found`", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn delete_registration(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    registration::delete(&ctx, &principal, &path_param(&req, "registration_id")).await?;
    json(StatusCode::OK, &StatusBody { status: "deleted".into() })
}

/// The launch form (an `id_token` of a few KB) is refused above this.
const MAX_LAUNCH_FORM: usize = 96 * 1024;
/// Unknown or used launch codes, per address.
const TOKEN_INVALID_PER_ADDRESS: crate::runtime::ratelimit::Rule =
    crate::runtime::ratelimit::Rule { name: "lti-token-invalid", limit: 20, window_secs: 60 };

/// Login initiations per source address: each one stores a state and sets a cookie. A school's whole
/// class behind one address opening the tool at once stays well under it.
const LOGINS_PER_ADDRESS: crate::runtime::ratelimit::Rule =
    crate::runtime::ratelimit::Rule { name: "lti-login", limit: 600, window_secs: 60 };

/// An LTI failure as the small page the LMS frames (DESIGN.md §3b), with its error code.
fn framed_error(ctx: &Context, e: &crate::ApiError, cookies: Vec<String>) -> ApiResult {
    let mut page = crate::support::html::Page::error(e);
    page.frame_ancestors = Some(crate::integrations::lti::frame_ancestors(ctx));
    page.cookies = cookies;
    page.into_response()
}

/// OpenID Connect login initiation from an LMS (GET or POST): to the platform's authorization endpoint,
/// with a state bound to this browser.
#[utoipa::path(get, path = "/api/lti/login", tag = "lti",
    params(
        ("iss" = String, Query, description = "The platform's issuer"),
        ("login_hint" = String, Query, description = "The platform's opaque user hint"),
        ("client_id" = String, Query, description = "The tool's client id at the platform"),
        ("target_link_uri" = Option<String>, Query, description = "Where the launch is meant to go"),
        ("lti_message_hint" = Option<String>, Query, description = "Echoed to the platform"),
        ("lti_deployment_id" = Option<String>, Query, description = "The deployment")
    ),
    responses(
        (status = 302, description = "To the platform's authorization endpoint (`state`, `nonce`), with the state's cookie",
            headers(("Location" = String, description = "The platform's authorization endpoint"))),
        (status = 400, description = "A page: `invalid_login`", content_type = "text/html"),
        (status = 403, description = "A page: `unknown_registration`, `unknown_deployment`", content_type = "text/html"),
        (status = 429, description = "A page: too many logins from this address", content_type = "text/html")
    ))]
pub async fn login(ctx: Arc<Context>, req: Request) -> ApiResult {
    let mut params: Vec<(String, String)> =
        req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    if let Err(e) =
        crate::runtime::ratelimit::check(&ctx, LOGINS_PER_ADDRESS, &crate::support::http::client_ip(&req)).await
    {
        return framed_error(&ctx, &e, Vec::new());
    }
    if req.method() == http::Method::POST {
        match crate::integrations::lti::flow::form_fields(crate::support::http::body_bytes(&req), MAX_LAUNCH_FORM) {
            Ok(fields) => params.extend(fields),
            Err(e) => return framed_error(&ctx, &e, Vec::new()),
        }
    }
    match crate::integrations::lti::flow::login(&ctx, &params).await {
        Ok(go) => crate::support::http::redirect_no_referrer(&go.location, &[go.cookie]),
        Err(e) => framed_error(&ctx, &e, Vec::new()),
    }
}

/// Login initiation by form POST (some platforms POST it): as [`login`].
#[utoipa::path(post, path = "/api/lti/login", tag = "lti",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "To the platform's authorization endpoint (`state`, `nonce`), with the state's cookie",
            headers(("Location" = String, description = "The platform's authorization endpoint"))),
        (status = 400, description = "A page: `invalid_login`", content_type = "text/html"),
        (status = 403, description = "A page: `unknown_registration`, `unknown_deployment`", content_type = "text/html"),
        (status = 429, description = "A page: too many logins from this address", content_type = "text/html")
    ))]
pub async fn login_form(ctx: Arc<Context>, req: Request) -> ApiResult {
    login(ctx, req).await
}

/// The login initiation's fields.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LoginForm {
    iss: String,
    login_hint: String,
    client_id: String,
    target_link_uri: Option<String>,
    lti_message_hint: Option<String>,
    lti_deployment_id: Option<String>,
}

/// The launch form fields.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LaunchForm {
    /// The platform's signed launch (RS256 JWT).
    id_token: String,
    /// The state our login initiation gave the platform.
    state: String,
}

/// The launch (the platform's form POST): checks the state and the `id_token`, provisions the user in
/// the registration's organization and redirects to the frontend with a one-time code.
#[utoipa::path(post, path = "/api/lti/launch", tag = "lti",
    request_body(content = LaunchForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "To `<FrontendUrl>/auth/callback?code=...&source=lti` (60 s, single use; exchange at `/api/lti/token`)",
            headers(("Location" = String, description = "The frontend's callback"))),
        (status = 200, description = "Without a frontend: the code as JSON; for a deep linking request, the page to choose quests", body = LaunchCode),
        (status = 400, description = "A page with the check that failed: `invalid_state`, `state_expired`, `invalid_jwt`, `unsupported_alg`, `missing_kid`, `unknown_kid`, `invalid_signature`, `invalid_audience`, `invalid_azp`, `token_expired`, `token_not_yet_valid`, `invalid_nonce`, `missing_deployment`, `invalid_version`, `missing_version`, `missing_message_type`, `unsupported_message_type`, `missing_user`, `missing_roles`, `missing_resource_link`, `missing_deep_linking_settings`, `deep_linking_unsupported`, `invalid_return_url`", content_type = "text/html"),
        (status = 403, description = "A page: `unknown_registration`, `unknown_deployment`, `account_link_refused`, `deep_linking_forbidden` (a deep linking request from a student)", content_type = "text/html"),
        (status = 413, description = "A page: `payload_too_large`", content_type = "text/html"),
        (status = 502, description = "A page: `jwks_unavailable`", content_type = "text/html")
    ))]
pub async fn launch(ctx: Arc<Context>, req: Request) -> ApiResult {
    let form =
        match crate::integrations::lti::flow::form_fields(crate::support::http::body_bytes(&req), MAX_LAUNCH_FORM) {
            Ok(form) => form,
            Err(e) => return framed_error(&ctx, &e, Vec::new()),
        };
    let state = form.iter().find(|(k, _)| k == "state").map(|(_, v)| v.clone()).unwrap_or_default();
    let cookie = crate::support::http::cookie(&req, &crate::integrations::lti::flow::state_cookie_name(&state));
    // The state's cookie has done its work either way.
    let clear = cookie
        .as_ref()
        .map(|_| crate::integrations::lti::flow::clear_state_cookie(&state))
        .into_iter()
        .collect::<Vec<_>>();
    match (crate::integrations::lti::flow::launch(&ctx, &form, cookie.as_deref()).await, &ctx.config.frontend_url) {
        (Ok(Launched::SignedIn { code, quest_id, binding_cookie, .. }), Some(frontend)) => {
            // `source=lti`: the frontend exchanges the code at /api/lti/token (Spark's go to /spark/token),
            // then opens `next`: the quest the link leads to.
            let mut location =
                url::Url::parse(&format!("{frontend}/auth/callback")).map_err(crate::ApiError::internal)?;
            location.query_pairs_mut().append_pair("code", &code).append_pair("source", "lti");
            if let Some(quest_id) = quest_id {
                location.query_pairs_mut().append_pair("next", &format!("/quests/{quest_id}"));
            }
            crate::support::http::redirect_no_referrer(location.as_str(), &[clear, vec![binding_cookie]].concat())
        }
        (Ok(Launched::SignedIn { code, quest_id, binding_cookie, .. }), None) => {
            let answer = LaunchCode { code, expires_in: crate::integrations::lti::flow::CODE_TTL_SECS, quest_id };
            crate::support::http::with_cookies(json(StatusCode::OK, &answer)?, &[clear, vec![binding_cookie]].concat())
        }
        (Ok(Launched::ChooseContent(mut page)), _) => {
            page.cookies = clear;
            page.into_response()
        }
        (Err(e), _) => {
            tracing::info!(error = e.code, "LTI launch refused");
            framed_error(&ctx, &e, clear)
        }
    }
}

/// A launch's one-time code, when no frontend is configured.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LaunchCode {
    pub code: String,
    pub expires_in: i64,
    /// The quest the resource link leads to.
    pub quest_id: Option<String>,
}

/// The instructor's choice on the deep linking page: answers a page that posts the signed
/// `LtiDeepLinkingResponse` to the LMS.
#[utoipa::path(post, path = "/api/lti/deep-linking", tag = "lti",
    request_body(content = DeepLinkingChoice, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A page that posts `JWT` (the signed `LtiDeepLinkingResponse`) to the platform's return URL", content_type = "text/html"),
        (status = 400, description = "A page: `invalid_session` (unknown, used or expired), `invalid_choice`", content_type = "text/html"),
        (status = 403, description = "A page: `unknown_registration`", content_type = "text/html"),
        (status = 413, description = "A page: `payload_too_large`", content_type = "text/html"),
        (status = 503, description = "A page: the tool key is not set up yet", content_type = "text/html")
    ))]
pub async fn deep_linking_response(ctx: Arc<Context>, req: Request) -> ApiResult {
    let outcome = match crate::integrations::lti::flow::form_fields(crate::support::http::body_bytes(&req), 16 * 1024) {
        Ok(form) => crate::integrations::lti::deep_linking::respond(&ctx, &form).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(page) => page.into_response(),
        Err(e) => framed_error(&ctx, &e, Vec::new()),
    }
}

/// The deep linking page's form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeepLinkingChoice {
    /// The deep linking session the page carries.
    session: String,
    /// The chosen quests (repeated where the LMS accepts several).
    quest_id: Vec<String>,
    /// `add` or `cancel`.
    action: Option<String>,
}

/// Exchanges a launch's one-time code for a token pair (JSON body and cookies).
#[utoipa::path(post, path = "/api/lti/token", tag = "lti",
    request_body = crate::api::auth::CodeExchange,
    responses(
        (status = 200, description = "A token pair, as `/api/auth/refresh` (also set as cookies)", body = crate::domain::auth::sessions::TokenPair),
        (status = 400, description = "`invalid_code` (unknown, used, or without the `__Host-hub_login` cookie of the browser that made the login), `code_expired`, `invalid_json`", body = ErrorBody),
        (status = 429, description = "Too many invalid codes from this address", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn launch_token(ctx: Arc<Context>, req: Request) -> ApiResult {
    crate::api::auth::exchange_code(
        &ctx,
        &req,
        crate::integrations::lti::flow::PURPOSE,
        TOKEN_INVALID_PER_ADDRESS,
        "launch again from the LMS",
    )
    .await
}

/// The tool's public keys (RS256; the current and the previous key), for platforms to verify what the
/// tool signs.
#[utoipa::path(get, path = "/api/lti/jwks", tag = "lti",
    responses(
        (status = 200, description = "`{\"keys\": [JWK...]}`", body = Object),
        (status = 503, description = "`unavailable`: the key's first rotation has not run yet", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn tool_jwks(ctx: Arc<Context>, _req: Request) -> ApiResult {
    let mut response = json(StatusCode::OK, &crate::integrations::lti::tool_key::jwks(&ctx).await?)?;
    // A rotation publishes the next key beside the old one: a few minutes of caching are safe.
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}

/// Asks for a sync of a course's members from the LMS (Names and Role Provisioning Services): the
/// `lti-roster-sync-worker` creates or updates their accounts. Answers at once with the sync (a new
/// one, or the one already queued or running for the course); its status is at `Location`.
#[utoipa::path(post, path = "/api/lti/contexts/{course_id}/roster-sync", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("course_id" = String, Path, description = "The course (`ltc_...`, as launches recorded it)")),
    responses(
        (status = 202, description = "The sync, `queued` or `running` (one per course at a time); poll `GET /api/lti/roster-syncs/{sync_id}`", body = RosterSync,
            headers(("Location" = String, description = "The sync's status URL"))),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "`course_not_found` (also another organization's, and a course the caller does not teach)", body = ErrorBody),
        (status = 409, description = "`roster_unavailable`: the LMS offers no roster service for this course", body = ErrorBody),
        (status = 429, description = "`rate_limited` (five requests a course a minute) or `too_many_roster_syncs` (the organization runs two already)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn roster_sync(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let sync = crate::integrations::lti::roster::request(&ctx, &principal, &path_param(&req, "course_id")).await?;
    let mut response = json(StatusCode::ACCEPTED, &sync)?;
    let location = format!("/api/lti/roster-syncs/{}", sync.id);
    response
        .headers_mut()
        .insert(http::header::LOCATION, http::HeaderValue::from_str(&location).map_err(ApiError::internal)?);
    Ok(response)
}

/// Where a roster sync stands and, once finished, what it did: for whoever asked for it, the
/// course's instructors and its organization's admins.
#[utoipa::path(get, path = "/api/lti/roster-syncs/{sync_id}", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("sync_id" = String, Path, description = "The sync (`rsy_...`)")),
    responses(
        (status = 200, description = "The sync: `queued`, `running`, `succeeded` or `failed` (with `error`); `summary` once finished", body = RosterSync),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 404, description = "`roster_sync_not_found` (also one the caller may not see)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn roster_sync_status(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let sync = crate::integrations::lti::roster::status(&ctx, &principal, &path_param(&req, "sync_id")).await?;
    json(StatusCode::OK, &sync)
}

/// A registration's resource links (placements of the tool in courses), with the quest each leads to.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LinkList {
    pub registration_id: String,
    pub links: Vec<LinkView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LinkView {
    #[serde(flatten)]
    pub link: crate::integrations::lti::links::ResourceLinkRecord,
    /// The quest launches of this link lead to; none until deep linking or an admin chooses one.
    pub quest_id: Option<String>,
}

/// The resource links launched through a registration (organization and platform admins).
#[utoipa::path(get, path = "/api/lti/registrations/{registration_id}/links", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(("registration_id" = String, Path, description = "The registration (`ltr_...`)")),
    responses(
        (status = 200, description = "Links, oldest first (at most 500)", body = LinkList),
        (status = 404, description = "`registration_not_found` (also another organization's)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn list_links(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let found = registration::administered(&ctx, &principal, &path_param(&req, "registration_id")).await?;
    let links = ctx.store().lti_links_of(&found.id).await?;
    let links = links
        .into_iter()
        .filter(|(link, _)| link.organization_id == found.organization_id)
        .map(|(link, quest_id)| LinkView { link, quest_id })
        .collect();
    json(StatusCode::OK, &LinkList { registration_id: found.id, links })
}

/// An admin's choice of quest for a resource link.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct LinkAssignment {
    pub quest_id: String,
}

/// Points a resource link at a quest of the registration's organization (organization and platform
/// admins); later launches of the link lead there.
#[utoipa::path(put, path = "/api/lti/registrations/{registration_id}/links/{link_id}", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    params(
        ("registration_id" = String, Path, description = "The registration (`ltr_...`)"),
        ("link_id" = String, Path, description = "The link (`ltl_...`)")
    ),
    request_body = LinkAssignment,
    responses(
        (status = 200, description = "The link and its quest", body = LinkView),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 404, description = "`registration_not_found`, `link_not_found`, `quest_not_found` (also another organization's)", body = ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = ErrorBody)
    ))]
pub async fn assign_link(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body: LinkAssignment = json_body(&req, MAX_JSON_BODY)?;
    let found = registration::administered(&ctx, &principal, &path_param(&req, "registration_id")).await?;
    let link_not_found = || crate::ApiError::not_found("link_not_found", "No such resource link");
    let link_id = path_param(&req, "link_id");
    let (link, _) = ctx
        .store()
        .lti_link(&link_id)
        .await?
        .filter(|(l, _)| l.registration_id == found.id && l.organization_id == found.organization_id)
        .ok_or_else(link_not_found)?;
    let quest = crate::integrations::lti::links::quest_of(&ctx, &found.organization_id, &body.quest_id)
        .await?
        .ok_or_else(|| crate::ApiError::not_found("quest_not_found", "No such quest"))?;
    if !ctx.store().assign_lti_link(&link.id, &quest.id).await? {
        return Err(link_not_found());
    }
    tracing::info!(
        registration_id = found.id,
        link_id = link.id,
        quest_id = quest.id,
        user_id = principal.user_id,
        "LTI link assigned"
    );
    json(StatusCode::OK, &LinkView { link, quest_id: Some(quest.id) })
}
