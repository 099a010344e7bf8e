//! `/api/webhooks/...`: subscriptions, the delivery log, redelivery and test sends (organization
//! admins for their organization, platform admins for any).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::guard::authenticate;
use crate::http::{ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id, query_number, query_param};
use crate::store::webhooks::{DeliveryFilter, DeliveryPageError};
use crate::webhooks::{Delivery, DeliveryStatus, Subscription, delivery, subscriptions};
use crate::{ApiError, Context};

/// Deliveries per page of the log, by default and at most.
const PAGE_DEFAULT: usize = 25;
const PAGE_MAX: usize = 100;

pub async fn create_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let new = json_body(&req, MAX_JSON_BODY)?;
    let (subscription, secret) = subscriptions::create(&ctx, &principal, new).await?;
    json(StatusCode::CREATED, &with_secret(&subscription, &secret))
}

pub async fn list_subscriptions(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let org = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let list = ctx.store().subscriptions_of_organization(&org, subscriptions::MAX_PER_ORGANIZATION as i32).await?;
    json(StatusCode::OK, &json!({ "organization_id": org, "subscriptions": list }))
}

pub async fn get_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let subscription = subscriptions::visible(&ctx, &principal, &path_param(&req, "subscription_id")).await?;
    json(StatusCode::OK, &subscription)
}

pub async fn update_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let update = json_body(&req, MAX_JSON_BODY)?;
    let (subscription, secret) =
        subscriptions::update(&ctx, &principal, &path_param(&req, "subscription_id"), update).await?;
    match secret {
        Some(secret) => json(StatusCode::OK, &with_secret(&subscription, &secret)),
        None => json(StatusCode::OK, &subscription),
    }
}

pub async fn delete_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    subscriptions::delete(&ctx, &principal, &path_param(&req, "subscription_id")).await?;
    Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).map_err(ApiError::internal)
}

/// `GET /api/webhooks/deliveries?subscription_id=&event_type=&status=&since=&until=&limit=&cursor=`
/// (`since`/`until`: unix seconds), newest first.
pub async fn list_deliveries(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let org = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let bad = |m: &str| ApiError::bad_request("invalid_query", m);
    let filter = DeliveryFilter {
        subscription_id: query_id(&req, "subscription_id")?,
        event_type: query_id(&req, "event_type")?,
        status: query_param(&req, "status")
            .map(|s| DeliveryStatus::parse(&s).ok_or_else(|| bad("status is pending, succeeded or failed")))
            .transpose()?,
        since: query_number(&req, "since")?,
        until: query_number(&req, "until")?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        return Err(bad("since is after until"));
    }
    let limit = match query_number(&req, "limit")? {
        None => PAGE_DEFAULT,
        Some(n) if (1..=PAGE_MAX as i64).contains(&n) => n as usize,
        Some(_) => return Err(bad(&format!("limit is 1 to {PAGE_MAX}"))),
    };
    let cursor = query_param(&req, "cursor");
    let (deliveries, next) =
        ctx.store().deliveries_of_organization(&org, &filter, limit, cursor.as_deref()).await.map_err(|e| match e {
            DeliveryPageError::Cursor(_) => ApiError::bad_request("invalid_cursor", "cursor is not one this API gave"),
            DeliveryPageError::Store(e) => e.into(),
        })?;
    json(StatusCode::OK, &json!({ "organization_id": org, "deliveries": deliveries, "next_cursor": next }))
}

pub async fn redeliver(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate(&ctx, &req).await?;
    let delivery = delivery::redeliver(&ctx, &principal, &path_param(&req, "delivery_id")).await?;
    json(StatusCode::OK, &result_of(&delivery))
}

/// `POST /api/webhooks/test` with `{"subscription_id": "..."}`.
pub async fn test(ctx: Arc<Context>, req: Request) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestRequest {
        subscription_id: String,
    }
    let principal = authenticate(&ctx, &req).await?;
    let body: TestRequest = json_body(&req, MAX_JSON_BODY)?;
    let delivery = delivery::send_test(&ctx, &principal, &body.subscription_id).await?;
    json(StatusCode::OK, &result_of(&delivery))
}

/// A delivery with the outcome of its latest attempt up front.
fn result_of(delivery: &Delivery) -> serde_json::Value {
    let last = delivery.attempts.last();
    json!({
        "success": last.is_some_and(|a| a.status_code.is_some_and(|s| (200..300).contains(&s))),
        "attempt": last,
        "delivery": delivery,
    })
}

fn with_secret(subscription: &Subscription, secret: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(subscription).unwrap_or_default();
    value["secret"] = json!(secret);
    value
}
