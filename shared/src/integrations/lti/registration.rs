//! Platform registrations: how one LMS (issuer + client id) reaches the tool, and the organization its
//! launches belong to (DESIGN.md §3a: every integration belongs to one organization).
//!
//! Only platform admins register a platform and change where the tool trusts it (issuer, client id,
//! authorization, token and key URLs): whoever sets those decides whose launches land in which
//! organization, and a school's client id is visible to its students in any launch. An organization's
//! admins see their registrations and manage their name and deployments.
//!
//! A registration is found by issuer + client id (one issuer may have several client ids: Canvas cloud
//! is one issuer for every school), so its id is derived from the pair and a launch finds it with one
//! read; the pair cannot change (delete and register again). Every URL is checked by the SSRF guard
//! when it is registered (https only in production, no private addresses) and again at each use.

use serde::{Deserialize, Serialize};

use crate::domain::auth::guard::Principal;
use crate::store::WriteError;
pub use crate::store::lti::Registration;
use crate::support::crypto::sha256_hex;
use crate::{ApiError, Context};

impl Registration {
    /// The provider name of this registration's identities: one identity per registration, so a
    /// platform's users are known through the registration a platform admin made for them, never
    /// through another registration naming the same issuer.
    pub fn provider(&self) -> String {
        format!("lti:{}", self.id)
    }
}

/// At most this many deployments per registration.
const MAX_DEPLOYMENTS: usize = 50;

/// A new registration, as an admin fills it in from the LMS's developer key page.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationInput {
    /// The organization whose platform this is (registrations are made by platform admins).
    pub organization_id: Option<String>,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    pub auth_url: String,
    pub token_url: String,
    pub jwks_url: String,
    /// Whether users of this LMS cannot change their own address (see [`Registration`]); default false.
    #[serde(default)]
    pub emails_are_school_records: bool,
}

/// A change: everything but the platform's issuer and client id (they identify the registration). The
/// URLs only by platform admins.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationUpdate {
    pub name: Option<String>,
    pub deployment_ids: Option<Vec<String>>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub jwks_url: Option<String>,
    /// Platform admins only, like the URLs: it decides which accounts this LMS's logins may reach.
    pub emails_are_school_records: Option<bool>,
}

/// What a school pastes into its LMS's tool configuration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolConfiguration {
    /// OpenID Connect login initiation URL.
    pub login_url: String,
    /// Redirect (launch) URLs, and the target link URI.
    pub redirect_uris: Vec<String>,
    pub target_link_uri: String,
    /// The tool's public keys (RS256).
    pub jwks_url: String,
    /// Deep linking (content selection) URL.
    pub deep_linking_url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationWithTool {
    pub registration: Registration,
    pub tool: ToolConfiguration,
}

/// The registration id of a platform's issuer and client id.
pub fn registration_id(issuer: &str, client_id: &str) -> String {
    format!("ltr_{}", &sha256_hex(format!("{issuer}\n{client_id}").as_bytes())[..24])
}

/// The tool's URLs under this deployment's public origin.
pub fn tool_configuration(ctx: &Context) -> Result<ToolConfiguration, ApiError> {
    let base = ctx
        .config
        .public_base_url
        .as_deref()
        .ok_or_else(|| ApiError::internal("PUBLIC_BASE_URL is not set: the tool's URLs are unknown"))?;
    let launch = format!("{base}/api/lti/launch");
    Ok(ToolConfiguration {
        login_url: format!("{base}/api/lti/login"),
        redirect_uris: vec![launch.clone()],
        target_link_uri: launch.clone(),
        jwks_url: format!("{base}/api/lti/jwks"),
        deep_linking_url: launch,
    })
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_registration", message)
}

fn conflict(e: WriteError) -> ApiError {
    match e {
        WriteError::Conflict => {
            ApiError::conflict("registration_exists", "This issuer and client id are already registered")
        }
        WriteError::Store(e) => e.into(),
    }
}

/// A printable identifier of 1 to 255 characters (client and deployment ids are the LMS's).
fn identifier(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
        return Err(invalid(format!("{field} is 1 to 255 printable characters")));
    }
    Ok(v.to_string())
}

/// A URL the tool will call (token, JWKS): the SSRF guard's rules now (https in production, public
/// addresses only), and again at every use.
async fn platform_url(ctx: &Context, field: &str, value: &str) -> Result<String, ApiError> {
    let client = ctx.outbound(None).map_err(ApiError::internal)?;
    // The guard's reason is not echoed: it would tell what an internal name resolves to.
    let url = client
        .check_target(value.trim())
        .await
        .map_err(|_| invalid(format!("{field} must be an https URL of a public address")))?;
    if url.fragment().is_some() || value.len() > 2000 {
        return Err(invalid(format!("{field} has a fragment or is too long")));
    }
    Ok(url.to_string())
}

/// A URL the tool only names or sends browsers to (the issuer, the authorization endpoint): https (http
/// on the local stack), no credentials, no fragment; kept exactly as given (an issuer is compared byte
/// for byte with `iss`).
fn named_url(ctx: &Context, field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    let url = url::Url::parse(value).map_err(|_| invalid(format!("{field} is not a URL")))?;
    let local = ctx.config.stage == crate::support::config::Stage::Local;
    let scheme_ok = url.scheme() == "https" || (local && url.scheme() == "http");
    if !scheme_ok || url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!("{field} must be an https URL without credentials")));
    }
    if url.fragment().is_some() || value.len() > 2000 {
        return Err(invalid(format!("{field} has a fragment or is too long")));
    }
    Ok(value.to_string())
}

fn deployments(ids: &[String]) -> Result<Vec<String>, ApiError> {
    if ids.is_empty() || ids.len() > MAX_DEPLOYMENTS {
        return Err(invalid(format!("deployment_ids lists 1 to {MAX_DEPLOYMENTS} deployments")));
    }
    let mut out: Vec<String> = ids.iter().map(|d| identifier("a deployment id", d)).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn name(value: &str) -> Result<String, ApiError> {
    match crate::support::text::clean_text(value, 100) {
        Ok(Some(n)) if !n.contains('\n') => Ok(n),
        _ => Err(invalid("name is 1 to 100 characters on one line")),
    }
}

/// Only platform admins register platforms and change their trust settings.
fn require_platform_admin(principal: &Principal) -> Result<(), ApiError> {
    principal.require_role(&[crate::domain::auth::Role::Admin]).map_err(|_| {
        ApiError::forbidden("A platform admin registers LMS platforms and changes their URLs (ask support)")
    })
}

pub async fn create(ctx: &Context, principal: &Principal, input: RegistrationInput) -> Result<Registration, ApiError> {
    require_platform_admin(principal)?;
    let organization_id = input
        .organization_id
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty() && o.len() <= 256)
        .ok_or_else(|| invalid("organization_id names the organization whose platform this is"))?
        .to_string();
    let issuer = named_url(ctx, "issuer", &input.issuer)?;
    if issuer.len() > 255 {
        return Err(invalid("issuer is at most 255 characters"));
    }
    let client_id = identifier("client_id", &input.client_id)?;
    let now = ctx.clock.now();
    let registration = Registration {
        id: registration_id(&issuer, &client_id),
        organization_id,
        name: name(&input.name)?,
        deployment_ids: deployments(&input.deployment_ids)?,
        auth_url: named_url(ctx, "auth_url", &input.auth_url)?,
        token_url: platform_url(ctx, "token_url", &input.token_url).await?,
        jwks_url: platform_url(ctx, "jwks_url", &input.jwks_url).await?,
        emails_are_school_records: input.emails_are_school_records,
        issuer,
        client_id,
        created_at: now,
        updated_at: now,
    };
    ctx.store().put_lti_registration(&registration, None).await.map_err(conflict)?;
    tracing::info!(
        registration_id = registration.id,
        organization_id = registration.organization_id,
        "LTI platform registered"
    );
    Ok(registration)
}

/// A registration the caller administers (another organization's is not found).
pub async fn administered(ctx: &Context, principal: &Principal, id: &str) -> Result<Registration, ApiError> {
    let not_found = || ApiError::not_found("registration_not_found", "No such LTI registration");
    let registration = ctx.store().lti_registration(id).await?.ok_or_else(not_found)?;
    principal.require_org_admin(&registration.organization_id).map_err(|_| not_found())?;
    Ok(registration)
}

pub async fn update(
    ctx: &Context,
    principal: &Principal,
    id: &str,
    u: RegistrationUpdate,
) -> Result<Registration, ApiError> {
    let mut r = administered(ctx, principal, id).await?;
    if u.auth_url.is_some() || u.token_url.is_some() || u.jwks_url.is_some() || u.emails_are_school_records.is_some() {
        require_platform_admin(principal)?;
    }
    let seen = r.updated_at;
    if let Some(v) = &u.name {
        r.name = name(v)?;
    }
    if let Some(v) = &u.deployment_ids {
        r.deployment_ids = deployments(v)?;
    }
    if let Some(v) = &u.auth_url {
        r.auth_url = named_url(ctx, "auth_url", v)?;
    }
    if let Some(v) = &u.token_url {
        r.token_url = platform_url(ctx, "token_url", v).await?;
    }
    if let Some(v) = &u.jwks_url {
        r.jwks_url = platform_url(ctx, "jwks_url", v).await?;
    }
    if let Some(v) = u.emails_are_school_records {
        r.emails_are_school_records = v;
    }
    r.updated_at = ctx.clock.now().max(seen + 1);
    ctx.store().put_lti_registration(&r, Some(seen)).await.map_err(|e| match e {
        WriteError::Conflict => {
            ApiError::conflict("conflict", "The registration changed or was deleted meanwhile; retry")
        }
        WriteError::Store(e) => e.into(),
    })?;
    tracing::info!(registration_id = r.id, "LTI registration updated");
    Ok(r)
}

pub async fn delete(ctx: &Context, principal: &Principal, id: &str) -> Result<(), ApiError> {
    administered(ctx, principal, id).await?;
    ctx.store().delete_lti_registration(id).await?;
    tracing::info!(registration_id = id, "LTI registration deleted: its launches are refused from now on");
    Ok(())
}
