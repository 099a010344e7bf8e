//! The launch flow (LTI 1.3 = OpenID Connect third-party login):
//!
//! 1. **Login initiation** (`/api/lti/login`, GET or POST from the LMS): the registration is found by
//!    `iss` + `client_id`; a `state` and a `nonce` are made, the state is stored (hashed, 10 minutes)
//!    with the nonce and the registration, and bound to this browser by a cookie named after it
//!    (`SameSite=None; Secure`: the launch is a cross-site form POST; one cookie per login, so several
//!    tool frames on one LMS page do not overwrite each other's). The browser goes to the platform's
//!    authorization endpoint.
//! 2. **Launch** (`/api/lti/launch`, the platform's form POST of `id_token` and `state`): the state must
//!    be this browser's (its cookie) and is taken with one conditional delete (so it, and the nonce it
//!    carries, launch once); then the `id_token` checks of [`super::launch`] with that nonce; then the
//!    user is provisioned through the same path as Spark (identity `lti:<registration>` + `sub` first,
//!    then the asserted email inside the registration's organization only, under provisioning's rules); the launch ends
//!    like Spark SSO, with a one-time code (60 s, bound to this browser by a cookie) and a redirect to
//!    the frontend, so the session never travels in a URL.

use super::LtiError;
use super::launch::{self, Launch};
use super::registration::{Registration, registration_id};
use crate::domain::auth::provisioning::{ExternalProfile, provision_user};
use crate::domain::auth::{User, login_binding};
use crate::store::WriteError;
use crate::store::codes::CodeGrant;
use crate::store::lti::LaunchState;
use crate::{ApiError, Context, support::crypto};

/// How long a login waits for its launch (an LMS answers in seconds).
pub const STATE_TTL_SECS: i64 = 300;
/// One-time codes of launches live this long, and are accepted only by the LTI exchange.
pub const CODE_TTL_SECS: i64 = 60;
pub const PURPOSE: &str = "lti_launch";

/// Where a login sends the browser, and the cookie that binds the state to it.
#[derive(Debug)]
pub struct LoginRedirect {
    pub location: String,
    pub cookie: String,
}

/// The cookie that binds `state` to the browser that started the login. One of 16 names (by the state's
/// digest): two tool frames on one page rarely share one, and a page that loops a browser through
/// logins cannot pile up more than 16 cookies (every request to the host carries them: `__Host-` means
/// `Path=/`).
pub fn state_cookie_name(state: &str) -> String {
    format!("__Host-lti_state_{}", &crypto::sha256_hex(state.as_bytes())[..1])
}

/// The `Set-Cookie` that removes a state's cookie once its launch came (or failed): a browser keeps no
/// pile of them.
pub fn clear_state_cookie(state: &str) -> String {
    format!("{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None", state_cookie_name(state))
}

/// Hints longer than this are refused (they travel in the redirect to the platform).
const MAX_HINT: usize = 2048;

fn invalid_state() -> ApiError {
    ApiError::bad_request("invalid_state", "This launch did not start in this browser, or was already used")
}

/// Step 1, from the login initiation's parameters (query or form).
pub async fn login(ctx: &Context, params: &[(String, String)]) -> Result<LoginRedirect, ApiError> {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty());
    let (Some(issuer), Some(login_hint)) = (param("iss"), param("login_hint")) else {
        return Err(ApiError::bad_request("invalid_login", "A login initiation needs iss and login_hint"));
    };
    if login_hint.len() > MAX_HINT
        || param("lti_message_hint").is_some_and(|h| h.len() > MAX_HINT)
        || issuer.len() > 255
    {
        return Err(ApiError::bad_request("invalid_login", "The login initiation's parameters are too long"));
    }
    let client_id = param("client_id").ok_or_else(|| {
        ApiError::bad_request("invalid_login", "The platform must send client_id with the login initiation")
    })?;
    let registration = find(ctx, issuer, client_id).await?;
    if let Some(deployment) = param("lti_deployment_id")
        && !registration.deployment_ids.iter().any(|d| d == deployment)
    {
        return Err(LtiError::new("unknown_deployment", "the deployment is not registered for this platform").into());
    }
    let base = ctx.config.public_base_url.as_deref().ok_or_else(|| ApiError::internal("PUBLIC_BASE_URL is not set"))?;
    let (state, nonce) = (crypto::random_token(32), crypto::random_token(32));
    let now = ctx.clock.now();
    let record = LaunchState {
        registration_id: registration.id.clone(),
        nonce: nonce.clone(),
        expires_at: now + STATE_TTL_SECS,
    };
    ctx.store().put_lti_state(&state, &record).await?;
    let mut location = url::Url::parse(&registration.auth_url).map_err(ApiError::internal)?;
    {
        let mut q = location.query_pairs_mut();
        q.append_pair("scope", "openid")
            .append_pair("response_type", "id_token")
            .append_pair("response_mode", "form_post")
            .append_pair("prompt", "none")
            .append_pair("client_id", &registration.client_id)
            .append_pair("redirect_uri", &format!("{base}/api/lti/launch"))
            .append_pair("login_hint", login_hint)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce);
        if let Some(hint) = param("lti_message_hint") {
            q.append_pair("lti_message_hint", hint);
        }
    }
    // `__Host-`: only this host sets it (no sibling subdomain can plant a state), hence `Path=/`.
    let cookie = format!(
        "{}={state}; Path=/; Max-Age={STATE_TTL_SECS}; HttpOnly; Secure; SameSite=None",
        state_cookie_name(&state)
    );
    tracing::info!(registration_id = registration.id, "LTI login initiated");
    Ok(LoginRedirect { location: location.to_string(), cookie })
}

async fn find(ctx: &Context, issuer: &str, client_id: &str) -> Result<Registration, ApiError> {
    ctx.store()
        .lti_registration(&registration_id(issuer, client_id))
        .await?
        .filter(|r| r.issuer == issuer && r.client_id == client_id)
        .ok_or_else(|| {
            LtiError::new("unknown_registration", "no platform is registered for this issuer and client id").into()
        })
}

/// What a launch that went through leads to.
pub enum Launched {
    /// A resource link launch: the one-time code for the frontend, the quest the link leads to, and
    /// the cookie that binds the code to this browser ([`login_binding`]).
    SignedIn { user_id: String, code: String, quest_id: Option<String>, binding_cookie: String },
    /// A deep linking request: the page where the instructor chooses quests.
    ChooseContent(crate::support::html::Page),
}

/// Step 2, from the launch form and the browser's cookie for its state.
pub async fn launch(
    ctx: &Context,
    form: &[(String, String)],
    state_cookie: Option<&str>,
) -> Result<Launched, ApiError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let state = field("state").ok_or_else(invalid_state)?;
    // The state must be this browser's: a state carried to another browser (a forwarded launch, a
    // login CSRF) has no cookie there.
    if !state_cookie.is_some_and(|c| crypto::constant_time_eq(c.as_bytes(), state.as_bytes())) || state.len() > 128 {
        return Err(invalid_state());
    }
    let id_token = field("id_token")
        .ok_or_else(|| ApiError::from(LtiError::new("invalid_jwt", "the launch carries no id_token")))?;
    let started = ctx.store().take_lti_state(state).await?.ok_or_else(invalid_state)?;
    if started.expires_at <= ctx.clock.now() {
        return Err(ApiError::bad_request("state_expired", "This launch took too long; launch again from the LMS"));
    }
    let unverified = launch::parse(id_token)?;
    let registration = find(ctx, &unverified.issuer, &unverified.client_id).await?;
    if registration.id != started.registration_id {
        return Err(invalid_state());
    }
    let launch = launch::verify_with_registration(ctx, unverified, &registration, &started.nonce).await?;
    if launch.message_type == launch::DEEP_LINKING_REQUEST {
        super::deep_linking::admissible(ctx, &launch)?;
    }
    let user = provision(ctx, &registration, &launch).await?;
    if launch.message_type == launch::DEEP_LINKING_REQUEST {
        return Ok(Launched::ChooseContent(super::deep_linking::start(ctx, &registration, &launch, &user).await?));
    }
    let quest = super::links::record_launch(ctx, &registration, &launch, &user).await?;
    let code = crypto::random_token(32);
    let binding = login_binding::for_login(&code);
    let grant = CodeGrant {
        user_id: user.id.clone(),
        purpose: PURPOSE.into(),
        expires_at: ctx.clock.now() + CODE_TTL_SECS,
        email: None,
        next: None,
        browser: Some(binding.digest),
    };
    ctx.store().put_login_code(&code, &grant).await.map_err(|e| match e {
        WriteError::Conflict => ApiError::internal("a new login code collided with another"),
        WriteError::Store(e) => e.into(),
    })?;
    tracing::info!(
        user_id = user.id,
        registration_id = registration.id,
        role = launch.role.role.as_str(),
        quest_id = quest.as_ref().map(|q| q.id.as_str()),
        "LTI launch"
    );
    Ok(Launched::SignedIn { user_id: user.id, code, quest_id: quest.map(|q| q.id), binding_cookie: binding.set_cookie })
}

/// The launch's user, found or created in the registration's organization (the Spark path).
async fn provision(ctx: &Context, registration: &Registration, launch: &Launch) -> Result<User, ApiError> {
    let profile = ExternalProfile {
        provider: registration.provider(),
        external_id: launch.subject.clone(),
        // Asserted: the LMS's word (a learner may have typed it into their profile), used only inside
        // the registration's organization under provisioning's rules.
        email: launch.email.clone().filter(|e| e.len() <= 254),
        email_proven: false,
        email_is_school_record: registration.emails_are_school_records,
        given_name: super::clean_name(launch.given_name.as_deref()),
        family_name: super::clean_name(launch.family_name.as_deref()),
        role: launch.role.role,
        org_id: Some(registration.organization_id.clone()),
    };
    let (user, provisioned) = provision_user(ctx, &profile).await?;
    tracing::debug!(user_id = user.id, ?provisioned, "LTI user");
    Ok(user)
}

/// The launch form's fields (`application/x-www-form-urlencoded`), refused above `max` bytes.
pub fn form_fields(body: &[u8], max: usize) -> Result<Vec<(String, String)>, ApiError> {
    if body.len() > max {
        return Err(ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The launch form is too large",
        ));
    }
    Ok(url::form_urlencoded::parse(body).into_owned().collect())
}
