//! Clever administration (platform admins): districts and their credentials, sync requests, sync
//! history; and `GET /health/clever-auth`.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;

use crate::domain::auth::Role;
use crate::domain::auth::guard::authenticate;
use crate::integrations::clever::{districts, health, jobs};
use crate::support::http::{
    ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id, query_number, query_param,
};
use crate::{ApiError, Context};

/// Time allowed to check a district's credentials with Clever and store them.
const REGISTER_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// A district as registered: its schools were listed with its credentials.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DistrictRegistered {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub schools_found: usize,
}

/// `PUT /api/clever/districts/{district_id}` with `{"name", "client_id", "client_secret"}`.
#[utoipa::path(put, path = "/api/clever/districts/{district_id}", tag = "clever", security(("bearer" = []), ("cookie" = [])),
    params(("district_id" = String, Path, description = "Clever's district id")),
    request_body = crate::integrations::clever::districts::DistrictCredentials,
    responses(
        (status = 200, description = "Checked with Clever and stored (the secret is never returned)", body = DistrictRegistered),
        (status = 400, description = "`invalid_district`, `clever_no_district_token`, `invalid_json`", body = crate::ErrorBody),
        (status = 403, description = "Platform admins only", body = crate::ErrorBody),
        (status = 504, description = "`clever_timeout`: Clever did not answer in time", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn put_district(ctx: Arc<Context>, req: Request) -> ApiResult {
    authenticate(&ctx, &req).await?.require_role(&[Role::Admin])?;
    let district_id = path_param(&req, "district_id");
    let body = json_body(&req, MAX_JSON_BODY)?;
    // Clever's answer is awaited within the HTTP API's 30 s; a slower Clever is a 504 to retry.
    let (district, schools) =
        tokio::time::timeout(REGISTER_BUDGET, districts::register(&ctx, &district_id, body)).await.map_err(
            |_| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "clever_timeout", "Clever did not answer in time; retry"),
        )??;
    json(
        StatusCode::OK,
        &DistrictRegistered {
            id: district.id,
            name: district.name,
            created_at: district.created_at,
            updated_at: district.updated_at,
            schools_found: schools,
        },
    )
}

/// Every district with its schools and their last sync.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DistrictList {
    pub districts: Vec<DistrictSummary>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DistrictSummary {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub schools: Vec<crate::store::clever::CleverSchool>,
}

/// `GET /api/clever/districts`: every district with its schools and their last sync.
#[utoipa::path(get, path = "/api/clever/districts", tag = "clever", security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "Every district", body = DistrictList), (status = 403, description = "Platform admins only", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]
pub async fn list_districts(ctx: Arc<Context>, req: Request) -> ApiResult {
    authenticate(&ctx, &req).await?.require_role(&[Role::Admin])?;
    let store = ctx.store();
    let mut out = Vec::new();
    for district in store.clever_districts().await? {
        let schools = store.clever_schools(&district.id).await?;
        out.push(DistrictSummary {
            id: district.id,
            name: district.name,
            created_at: district.created_at,
            updated_at: district.updated_at,
            schools,
        });
    }
    json(StatusCode::OK, &DistrictList { districts: out })
}

/// `POST /api/clever/sync` with `{"district_id"?, "school_id"?, "mode": "full"|"incremental", "force"?}`.
#[utoipa::path(post, path = "/api/clever/sync", tag = "clever", security(("bearer" = []), ("cookie" = [])),
    request_body = crate::integrations::clever::jobs::SyncRequest,
    responses(
        (status = 202, description = "One job queued per active school", body = crate::integrations::clever::jobs::SyncQueued),
        (status = 400, description = "`invalid_mode`, `invalid_json`", body = crate::ErrorBody),
        (status = 403, description = "Platform admins only", body = crate::ErrorBody),
        (status = 404, description = "`school_not_found`, `district_not_found`", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn sync(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body = json_body(&req, MAX_JSON_BODY)?;
    let queued = jobs::request(&ctx, &principal, body).await?;
    json(StatusCode::ACCEPTED, &queued)
}

/// A school's sync history, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SyncHistory {
    pub school_id: String,
    pub since: i64,
    pub until: i64,
    pub history: Vec<crate::store::clever::SyncRecord>,
}

/// `GET /api/clever/sync-history?school_id=&since=&until=&entity=&limit=` (`since`/`until`: unix seconds).
#[utoipa::path(get, path = "/api/clever/sync-history", tag = "clever", security(("bearer" = []), ("cookie" = [])),
    params(
        ("school_id" = String, Query, description = "Clever's school id"),
        ("since" = Option<i64>, Query, description = "Unix seconds (default: 7 days ago)"),
        ("until" = Option<i64>, Query, description = "Unix seconds (default: now)"),
        ("entity" = Option<String>, Query, description = "`students`, `teachers` or `sections`"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500 (default 100)"),
    ),
    responses(
        (status = 200, description = "The school's sync records", body = SyncHistory),
        (status = 400, description = "`invalid_query`", body = crate::ErrorBody),
        (status = 403, description = "Platform admins only", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn sync_history(ctx: Arc<Context>, req: Request) -> ApiResult {
    authenticate(&ctx, &req).await?.require_role(&[Role::Admin])?;
    let bad = |m: &str| ApiError::bad_request("invalid_query", m);
    let school = query_id(&req, "school_id")?.ok_or_else(|| bad("school_id is required"))?;
    let now = ctx.clock.now();
    let since = query_number(&req, "since")?.unwrap_or(now - 7 * 24 * 3600);
    let until = query_number(&req, "until")?.unwrap_or(now);
    if since > until {
        return Err(bad("since is after until"));
    }
    let limit = query_number(&req, "limit")?.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit is 1 to 500"));
    }
    let entity = match query_param(&req, "entity") {
        None => None,
        Some(e) => Some(
            crate::integrations::clever::roster::Entity::parse(&e)
                .ok_or_else(|| bad("entity is students, teachers or sections"))?
                .plural(),
        ),
    };
    let records = ctx.store().sync_history(&school, since, until, entity, limit as i32).await?;
    json(StatusCode::OK, &SyncHistory { school_id: school, since, until, history: records })
}

/// `GET /health/clever-auth`: anonymous callers (monitors) get the status and per-check codes; a
/// platform admin's token shows the full report (district ids and error texts).
#[utoipa::path(get, path = "/health/clever-auth", tag = "clever", operation_id = "clever_health",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "`Healthy` or `Degraded`", body = health::CleverHealth),
        (status = 503, description = "`Unhealthy`: Clever refuses every district's credentials", body = health::CleverHealth),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn health(ctx: Arc<Context>, req: Request) -> ApiResult {
    let admin = crate::support::http::bearer_token(&req).is_some()
        && authenticate(&ctx, &req).await?.require_role(&[Role::Admin]).is_ok();
    let (report, status) = health::report(ctx).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if admin { json(status, &*report) } else { json(status, &health::public_view(&report)) }
}
