//! Clever administration (platform admins): districts and their credentials, sync requests, sync
//! history; and `GET /health/clever-auth`.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde_json::json;

use crate::auth::Role;
use crate::auth::guard::authenticate;
use crate::clever::{districts, health, jobs};
use crate::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id, query_number, query_param};
use crate::{ApiError, Context};

/// Time allowed to check a district's credentials with Clever and store them.
const REGISTER_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// `PUT /api/clever/districts/{district_id}` with `{"name", "client_id", "client_secret"}`.
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
        &json!({"id": district.id, "name": district.name, "created_at": district.created_at,
                "updated_at": district.updated_at, "schools_found": schools}),
    )
}

/// `GET /api/clever/districts`: every district with its schools and their last sync.
pub async fn list_districts(ctx: Arc<Context>, req: Request) -> ApiResult {
    authenticate(&ctx, &req).await?.require_role(&[Role::Admin])?;
    let store = ctx.store();
    let mut out = Vec::new();
    for district in store.clever_districts().await? {
        let schools = store.clever_schools(&district.id).await?;
        out.push(json!({"id": district.id, "name": district.name, "created_at": district.created_at,
                        "updated_at": district.updated_at, "schools": schools}));
    }
    json(StatusCode::OK, &json!({ "districts": out }))
}

/// `POST /api/clever/sync` with `{"district_id"?, "school_id"?, "mode": "full"|"incremental", "force"?}`.
pub async fn sync(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let body = json_body(&req, MAX_JSON_BODY)?;
    let queued = jobs::request(&ctx, &principal, body).await?;
    json(StatusCode::ACCEPTED, &queued)
}

/// `GET /api/clever/sync-history?school_id=&since=&until=&entity=&limit=` (`since`/`until`: unix seconds).
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
            crate::clever::roster::Entity::parse(&e)
                .ok_or_else(|| bad("entity is students, teachers or sections"))?
                .plural(),
        ),
    };
    let records = ctx.store().sync_history(&school, since, until, entity, limit as i32).await?;
    json(StatusCode::OK, &json!({ "school_id": school, "since": since, "until": until, "history": records }))
}

/// `GET /health/clever-auth`: anonymous callers (monitors) get the status and per-check codes; a
/// platform admin's token shows the full report (district ids and error texts).
pub async fn health(ctx: Arc<Context>, req: Request) -> ApiResult {
    let admin = crate::http::bearer_token(&req).is_some()
        && authenticate(&ctx, &req).await?.require_role(&[Role::Admin]).is_ok();
    let (report, status) = health::report(ctx).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if admin { json(status, &*report) } else { json(status, &health::public_view(&report)) }
}
