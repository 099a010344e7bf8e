//! The LTI tool's HTTP endpoints: platform registrations (organization and platform admins).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;

use crate::Context;
use crate::api::StatusBody;
use crate::api::openapi::ErrorBody;
use crate::auth::guard::authenticate;
use crate::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id};
use crate::lti::registration::{
    self, Registration, RegistrationInput, RegistrationUpdate, RegistrationWithTool, tool_configuration,
};

/// An organization's registrations.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegistrationList {
    pub organization_id: String,
    pub registrations: Vec<Registration>,
}

fn with_tool(ctx: &Context, registration: Registration) -> Result<RegistrationWithTool, crate::ApiError> {
    Ok(RegistrationWithTool { registration, tool: tool_configuration(ctx)? })
}

/// Registers an LMS (issuer, client id, deployments, its endpoints) for an organization; answers the
/// tool's URLs to paste into the LMS.
#[utoipa::path(post, path = "/api/lti/registrations", tag = "lti", security(("bearer" = []), ("cookie" = [])),
    request_body = RegistrationInput,
    responses(
        (status = 201, description = "The registration and the tool's URLs", body = RegistrationWithTool),
        (status = 400, description = "`invalid_registration` (a URL refused by the outbound guard, an id out of bounds), `invalid_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin of that organization", body = ErrorBody),
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
