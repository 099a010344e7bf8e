//! `/api/webhooks/...`: subscriptions, the delivery log, redelivery and test sends (organization
//! admins for their organization, platform admins for any).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use crate::integrations::oauth::token::authenticate_for;
use crate::integrations::webhooks::{Delivery, DeliveryStatus, Subscription, delivery, subscriptions};
use crate::store::webhooks::{DeliveryFilter, DeliveryPageError};
use crate::support::http::{
    ApiResult, MAX_JSON_BODY, json, json_body, path_param, query_id, query_limit, query_number, query_param,
};
use crate::{ApiError, Context};

/// Deliveries per page of the log, by default and at most.
const PAGE_DEFAULT: usize = 25;
const PAGE_MAX: usize = 100;

#[utoipa::path(post, path = "/api/webhooks/subscriptions", tag = "webhooks", security(("bearer" = []), ("cookie" = [])),
    request_body = subscriptions::NewSubscription,
    responses(
        (status = 201, description = "The subscription with its signing `secret` (shown once)", body = WithSecret),
        (status = 400, description = "`invalid_subscription`, `url_not_allowed`, `invalid_json`", body = crate::ErrorBody),
        (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody),
        (status = 409, description = "The organization has the most subscriptions it may have", body = crate::ErrorBody),
        (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn create_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let new = json_body(&req, MAX_JSON_BODY)?;
    let (subscription, secret) = subscriptions::create(&ctx, &principal, new).await?;
    json(StatusCode::CREATED, &WithSecret { subscription, secret })
}

/// An organization's subscriptions (never a secret).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SubscriptionList {
    pub organization_id: String,
    pub subscriptions: Vec<Subscription>,
}

#[utoipa::path(get, path = "/api/webhooks/subscriptions", tag = "webhooks", security(("bearer" = []), ("cookie" = [])),
    params(("organization_id" = Option<String>, Query, description = "Platform admins: whose subscriptions")),
    responses((status = 200, description = "The organization's subscriptions", body = SubscriptionList), (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]

pub async fn list_subscriptions(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let organization_id = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let subscriptions =
        ctx.store().subscriptions_of_organization(&organization_id, subscriptions::MAX_PER_ORGANIZATION as i32).await?;
    json(StatusCode::OK, &SubscriptionList { organization_id, subscriptions })
}

#[utoipa::path(get, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "webhooks", security(("bearer" = []), ("cookie" = [])), params(("subscription_id" = String, Path, description = "The subscription")),
    responses((status = 200, description = "The subscription", body = Subscription), (status = 404, description = "No such object in the caller's organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]
pub async fn get_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let subscription = subscriptions::visible(&ctx, &principal, &path_param(&req, "subscription_id")).await?;
    json(StatusCode::OK, &subscription)
}

#[utoipa::path(put, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "webhooks", security(("bearer" = []), ("cookie" = [])), params(("subscription_id" = String, Path, description = "The subscription")),
    request_body = subscriptions::SubscriptionUpdate,
    responses(
        (status = 200, description = "The subscription; with `secret` when it was rotated (the old one signs too for 24 h)", body = WithSecret),
        (status = 400, description = "`invalid_subscription`, `url_not_allowed`, `invalid_json`", body = crate::ErrorBody),
        (status = 404, description = "No such object in the caller's organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn update_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let update = json_body(&req, MAX_JSON_BODY)?;
    let (subscription, secret) =
        subscriptions::update(&ctx, &principal, &path_param(&req, "subscription_id"), update).await?;
    match secret {
        Some(secret) => json(StatusCode::OK, &WithSecret { subscription, secret }),
        None => json(StatusCode::OK, &subscription),
    }
}

#[utoipa::path(delete, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "webhooks", security(("bearer" = []), ("cookie" = [])), params(("subscription_id" = String, Path, description = "The subscription")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such object in the caller's organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]
pub async fn delete_subscription(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    subscriptions::delete(&ctx, &principal, &path_param(&req, "subscription_id")).await?;
    Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).map_err(ApiError::internal)
}

/// `GET /api/webhooks/deliveries?subscription_id=&event_type=&status=&since=&until=&limit=&cursor=`
/// (`since`/`until`: unix seconds), newest first.
#[utoipa::path(get, path = "/api/webhooks/deliveries", tag = "webhooks", security(("bearer" = []), ("cookie" = [])),
    params(
        ("organization_id" = Option<String>, Query, description = "Platform admins: whose log"),
        ("subscription_id" = Option<String>, Query, description = "Only this subscription's deliveries"),
        ("event_type" = Option<String>, Query, description = "Only this event type"),
        ("status" = Option<crate::integrations::webhooks::DeliveryStatus>, Query, description = "Only deliveries in this state"),
        ("since" = Option<i64>, Query, description = "Created at or after (unix seconds)"),
        ("until" = Option<i64>, Query, description = "Created at or before (unix seconds)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100 (default 25)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the delivery log, newest first", body = DeliveryPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`", body = crate::ErrorBody),
        (status = 403, description = "Not an admin of that organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)
    ))]
pub async fn list_deliveries(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let org = principal.administered_organization(query_id(&req, "organization_id")?.as_deref())?;
    let bad = |m: &str| ApiError::bad_request("invalid_query", m);
    let filter = DeliveryFilter {
        subscription_id: query_id(&req, "subscription_id")?,
        event_type: query_id(&req, "event_type")?,
        status: crate::support::http::query_raw(&req, "status")
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
    let limit = query_limit(&req, PAGE_DEFAULT, PAGE_MAX)?;
    let cursor = query_param(&req, "cursor");
    let (deliveries, next) =
        ctx.store().deliveries_of_organization(&org, &filter, limit, cursor.as_deref()).await.map_err(|e| match e {
            DeliveryPageError::Cursor(_) => ApiError::bad_request("invalid_cursor", "cursor is not one this API gave"),
            DeliveryPageError::Store(e) => e.into(),
        })?;
    json(StatusCode::OK, &DeliveryPage { organization_id: org, deliveries, next_cursor: next })
}

/// A page of the delivery log; `next_cursor` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub organization_id: String,
    pub deliveries: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/webhooks/deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("bearer" = []), ("cookie" = [])),
    params(("delivery_id" = String, Path, description = "The delivery (its id and body stay the same)")),
    responses((status = 200, description = "The attempt made now", body = DeliveryResult), (status = 404, description = "No such object in the caller's organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]
pub async fn redeliver(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let delivery = delivery::redeliver(&ctx, &principal, &path_param(&req, "delivery_id")).await?;
    json(StatusCode::OK, &result_of(&delivery))
}

/// `{"subscription_id": "..."}`: where to send a `webhook.test` event.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    pub subscription_id: String,
}

/// `POST /api/webhooks/test` with `{"subscription_id": "..."}`.
#[utoipa::path(post, path = "/api/webhooks/test", tag = "webhooks", security(("bearer" = []), ("cookie" = [])),
    request_body = TestRequest,
    responses((status = 200, description = "The attempt made now", body = DeliveryResult), (status = 404, description = "No such object in the caller's organization", body = crate::ErrorBody), (status = "default", description = "Error (`{\"error\", \"message\"}`)", body = crate::ErrorBody)))]
pub async fn test(ctx: Arc<Context>, req: Request) -> ApiResult {
    let principal = authenticate_for(&ctx, &req, "webhooks:manage").await?;
    let body: TestRequest = json_body(&req, MAX_JSON_BODY)?;
    let delivery = delivery::send_test(&ctx, &principal, &body.subscription_id).await?;
    json(StatusCode::OK, &result_of(&delivery))
}

/// A delivery with the outcome of its latest attempt up front.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryResult {
    /// The receiver answered 2xx.
    pub success: bool,
    pub attempt: Option<crate::integrations::webhooks::Attempt>,
    pub delivery: Delivery,
}

fn result_of(delivery: &Delivery) -> DeliveryResult {
    let attempt = delivery.attempts.last().cloned();
    DeliveryResult {
        success: attempt.as_ref().is_some_and(|a| a.status_code.is_some_and(|s| (200..300).contains(&s))),
        attempt,
        delivery: delivery.clone(),
    }
}

/// A subscription with its signing secret: shown once, at creation and rotation.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// `whsec_...`: keep it; it is never shown again.
    pub secret: String,
}
