//! Sending deliveries: the fan-out of domain events, the delivery worker with its retry schedule,
//! and the sends an admin asks for (redelivery, test).
//!
//! Outcomes of an attempt: 2xx succeeds; 410 Gone disables the subscription; 408, 429, 5xx and
//! network errors are retried on the configured schedule (with jitter, and never sooner than the
//! receiver's `Retry-After`); any other answer (3xx included: redirects are not followed) and a target
//! our outbound guard refuses fail the delivery at once. A failed delivery's job goes to the
//! dead-letter queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsMessage;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::subscriptions::{self, MAX_PER_ORGANIZATION};
use super::{Attempt, Delivery, DeliveryStatus, Subscription, Trigger, WEBHOOK_TEST, signing};
use crate::domain::auth::Role;
use crate::domain::auth::guard::Principal;
use crate::runtime::breaker::{self, Destination};
use crate::runtime::events::DomainEvent;
use crate::runtime::jobs::QueueError;
use crate::runtime::ratelimit::{self, Rule};
use crate::support::outbound::{OutboundError, read_prefix};
use crate::{ApiError, Context, runtime::jobs, support::crypto};

/// How long an attempt may hold a delivery (the 15 s request timeout, with room to record it).
const LEASE_SECS: i64 = 60;
/// How much of a receiver's answer the delivery log keeps.
const RESPONSE_BODY_KEPT: usize = 1024;
/// A delivery's log holds at most this many attempts; redelivery stops there.
pub const MAX_ATTEMPTS: usize = 100;
/// Test sends and redeliveries per organization per minute (each is a request to a third party).
const MANUAL_SENDS: Rule = Rule { name: "webhook-manual", limit: 30, window_secs: 60 };

/// The message on the delivery queue; the delivery record holds everything else.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub delivery_id: String,
}

/// The body receivers get, in this field order.
#[derive(Serialize)]
struct Payload<'a> {
    event: &'a str,
    /// RFC 3339, UTC.
    timestamp: String,
    data: &'a Value,
    organization_id: &'a str,
}

/// How an attempt ended, for what follows it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Success,
    /// Worth another attempt; not before the receiver's `Retry-After` (seconds) if it gave one.
    Retry(Option<i64>),
    /// The receiver answered 410 Gone: it wants no more deliveries.
    Gone,
    /// Another attempt would fail the same way.
    Permanent,
    /// No request was made: the subscription was deleted or disabled meanwhile.
    Abandoned,
    /// No request was made through our own failure (its signing secret could not be read): retried on
    /// the schedule, never held against the receiver.
    Unsent,
}

/// The id of an event's delivery to one subscription: the same event fanned out twice is one delivery.
pub fn delivery_id(event_id: &str, subscription_id: &str) -> String {
    format!("dlv_{}", &crypto::sha256_hex(format!("{event_id}\0{subscription_id}").as_bytes())[..32])
}

/// Called by the events consumer: one delivery record and one job per active subscription of the
/// event's organization that wants its type. Returns how many jobs were queued.
pub async fn fan_out(ctx: &Context, event: &DomainEvent) -> Result<usize, QueueError> {
    let Some(org) = event.organization_id.as_deref() else { return Ok(0) };
    let store = ctx.store();
    let subscriptions = store
        .subscriptions_of_organization(org, MAX_PER_ORGANIZATION as i32 + 1)
        .await
        .map_err(|e| QueueError(e.to_string()))?;
    let targets: Vec<&Subscription> = subscriptions.iter().filter(|s| s.active && s.wants(&event.event_type)).collect();
    if targets.is_empty() {
        return Ok(0);
    }
    let queue = delivery_queue(ctx)?;
    let now = ctx.clock.now();
    let queued = futures_util::future::try_join_all(targets.into_iter().map(|subscription| async move {
        let delivery = new_delivery(event, subscription, now);
        let expires_at = now + ctx.config.webhook_delivery_retention.as_secs() as i64;
        let created = store.put_delivery(&delivery, expires_at).await.map_err(|e| QueueError(e.to_string()))?;
        if !created {
            // A repeated event: queue again only if the first job may have been lost before any attempt.
            let existing = store.delivery(&delivery.id).await.map_err(|e| QueueError(e.to_string()))?;
            if !existing.is_some_and(|d| d.status == DeliveryStatus::Pending && d.attempts.is_empty()) {
                return Ok(0);
            }
        }
        jobs::enqueue(ctx, queue, &DeliveryJob { delivery_id: delivery.id.clone() }).await?;
        tracing::info!(delivery_id = delivery.id, subscription_id = subscription.id, "webhook delivery queued");
        Ok::<_, QueueError>(1)
    }))
    .await?;
    Ok(queued.iter().sum())
}

/// The delivery worker: one attempt of one delivery, then done, retried later, or failed.
pub async fn deliver(ctx: Arc<Context>, message: SqsMessage) -> Result<(), QueueError> {
    let job: DeliveryJob = jobs::parse(&message)?;
    let queue = delivery_queue(&ctx)?;
    let store = ctx.store();
    let fail = |e: crate::store::StoreError| QueueError(e.to_string());
    let now = ctx.clock.now();
    let Some(delivery) = store.delivery(&job.delivery_id).await.map_err(fail)? else {
        tracing::warn!(delivery_id = job.delivery_id, "delivery record expired; job dropped");
        return Ok(());
    };
    if delivery.status != DeliveryStatus::Pending {
        tracing::info!(delivery_id = delivery.id, status = delivery.status.as_str(), "delivery already finished");
        return Ok(());
    }
    if let Some(due) = delivery.next_attempt_at.filter(|due| *due > now) {
        // An early copy of the job: it comes back when the retry is due (the record decides, not the message).
        jobs::hide(&ctx, queue, &message, due - now).await;
        return Err(QueueError(format!("retry of {} is due in {} s", delivery.id, due - now)));
    }
    let subscription = store.subscription(&delivery.subscription_id).await.map_err(fail)?;
    let live = subscription.as_ref().filter(|s| s.active);
    let ticket = match live {
        Some(s) => match breaker::admit_job(&ctx, &destination(s), queue, &message).await? {
            Some(ticket) => Some(ticket),
            None => return Ok(()),
        },
        None => None,
    };
    let lease = match store.claim_delivery(&delivery.id, now, LEASE_SECS, true).await {
        Ok(Some(lease)) => lease,
        unclaimed => {
            if let Some(ticket) = ticket {
                breaker::release(&ctx, ticket).await;
            }
            if unclaimed.map_err(fail)?.is_none() {
                jobs::hide(&ctx, queue, &message, LEASE_SECS).await;
            }
            return Err(QueueError(format!("delivery {} is being attempted elsewhere", delivery.id)));
        }
    };
    let (attempt, verdict) = match (live, &subscription) {
        (Some(s), _) => send(&ctx, s, &delivery, Trigger::Automatic).await,
        (None, Some(_)) => abandoned(&ctx, "subscription is disabled"),
        (None, None) => abandoned(&ctx, "subscription was deleted"),
    };
    if let Some(ticket) = ticket {
        match held_a_worker(&attempt, verdict) {
            Some(failed) => breaker::record(&ctx, ticket, !failed).await,
            None => breaker::release(&ctx, ticket).await,
        }
    }
    let number = delivery.automatic_attempts as usize + 1;
    let retry_in = match verdict {
        Verdict::Retry(retry_after) => {
            ctx.config.webhook_retry_schedule.get(number - 1).map(|base| backoff(*base, retry_after))
        }
        Verdict::Unsent => ctx.config.webhook_retry_schedule.get(number - 1).map(|base| backoff(*base, None)),
        _ => None,
    };
    let status = match (verdict, retry_in) {
        (Verdict::Success, _) => DeliveryStatus::Succeeded,
        (_, Some(_)) => DeliveryStatus::Pending,
        _ => DeliveryStatus::Failed,
    };
    let next_attempt_at = retry_in.map(|delay| attempt.at + delay);
    store.finish_attempt(&delivery.id, &lease, &attempt, status, next_attempt_at).await.map_err(fail)?;
    if let Some(subscription) = &subscription {
        record_health(&ctx, subscription, verdict, attempt.at).await;
    }
    tracing::info!(
        delivery_id = delivery.id,
        attempt = number,
        status_code = attempt.status_code,
        outcome = status.as_str(),
        "webhook delivery attempted"
    );
    match (status, retry_in) {
        (DeliveryStatus::Pending, Some(delay)) => {
            jobs::hide(&ctx, queue, &message, delay).await;
            Err(QueueError(format!("attempt {number} of {} failed; next in {delay} s", delivery.id)))
        }
        (DeliveryStatus::Failed, _) if verdict != Verdict::Abandoned => {
            dead_letter(&ctx, &job).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `POST /api/webhooks/deliveries/{id}/redeliver`: one more attempt now, under the same delivery id.
pub async fn redeliver(ctx: &Context, principal: &Principal, delivery_id: &str) -> Result<Delivery, ApiError> {
    principal.require_role(&[Role::OrgAdmin, Role::Admin])?;
    let delivery = match ctx.store().delivery(delivery_id).await? {
        Some(d) if principal.require_org_admin(&d.organization_id).is_ok() => d,
        _ => return Err(ApiError::not_found("delivery_not_found", "No such delivery")),
    };
    if delivery.attempts.len() >= MAX_ATTEMPTS {
        return Err(ApiError::conflict(
            "too_many_attempts",
            format!("A delivery is attempted at most {MAX_ATTEMPTS} times"),
        ));
    }
    let subscription = ctx.store().subscription(&delivery.subscription_id).await?.ok_or_else(|| {
        ApiError::conflict("subscription_deleted", "The subscription of this delivery no longer exists")
    })?;
    ratelimit::check(ctx, MANUAL_SENDS, &delivery.organization_id).await?;
    let now = ctx.clock.now();
    let Some(lease) = ctx.store().claim_delivery(&delivery.id, now, LEASE_SECS, false).await? else {
        return Err(ApiError::conflict(
            "delivery_in_progress",
            "This delivery is being attempted right now; retry shortly",
        ));
    };
    let (attempt, verdict) = send(ctx, &subscription, &delivery, Trigger::Redelivery).await;
    // Success finishes the delivery; otherwise it stays as it was (a pending one keeps its retries).
    let status = if verdict == Verdict::Success { DeliveryStatus::Succeeded } else { delivery.status };
    let next = delivery.next_attempt_at.filter(|_| status == DeliveryStatus::Pending);
    ctx.store().finish_attempt(&delivery.id, &lease, &attempt, status, next).await?;
    record_health(ctx, &subscription, verdict, attempt.at).await;
    ctx.store().delivery(&delivery.id).await?.ok_or_else(|| ApiError::internal("delivery vanished after its attempt"))
}

/// `POST /api/webhooks/test`: sends a `webhook.test` event to one subscription (active or not), now,
/// and records it in the delivery log. It leaves the subscription's state alone.
pub async fn send_test(ctx: &Context, principal: &Principal, subscription_id: &str) -> Result<Delivery, ApiError> {
    let subscription = subscriptions::visible(ctx, principal, subscription_id).await?;
    ratelimit::check(ctx, MANUAL_SENDS, &subscription.organization_id).await?;
    let now = ctx.clock.now();
    let event = DomainEvent::new(
        WEBHOOK_TEST,
        Some(subscription.organization_id.clone()),
        json!({ "subscription_id": subscription.id, "message": "This is a test delivery." }),
        now,
    );
    let delivery = new_delivery(&event, &subscription, now);
    let expires_at = now + ctx.config.webhook_delivery_retention.as_secs() as i64;
    ctx.store().put_delivery(&delivery, expires_at).await?;
    let lease = ctx
        .store()
        .claim_delivery(&delivery.id, now, LEASE_SECS, true)
        .await?
        .ok_or_else(|| ApiError::internal("a new delivery could not be claimed"))?;
    let (attempt, verdict) = send(ctx, &subscription, &delivery, Trigger::Test).await;
    let status = if verdict == Verdict::Success { DeliveryStatus::Succeeded } else { DeliveryStatus::Failed };
    ctx.store().finish_attempt(&delivery.id, &lease, &attempt, status, None).await?;
    Ok(Delivery { status, attempts: vec![attempt], ..delivery })
}

fn new_delivery(event: &DomainEvent, subscription: &Subscription, now: i64) -> Delivery {
    let organization_id = event.organization_id.as_deref().unwrap_or(&subscription.organization_id);
    let payload =
        Payload { event: &event.event_type, timestamp: rfc3339(event.occurred_at), data: &event.data, organization_id };
    Delivery {
        id: delivery_id(&event.id, &subscription.id),
        subscription_id: subscription.id.clone(),
        organization_id: subscription.organization_id.clone(),
        event_type: event.event_type.clone(),
        event_id: event.id.clone(),
        status: DeliveryStatus::Pending,
        created_at: now,
        updated_at: now,
        next_attempt_at: None,
        automatic_attempts: 0,
        attempts: Vec::new(),
        body: serde_json::to_string(&payload).expect("payloads serialize"),
    }
}

/// A receiver's breaker and share (see [`crate::runtime::breaker`]): a breaker per organization and
/// host, so no organization's receiver can pause another's and one organization's subscriptions on one
/// hanging host open one breaker together; one share for all of an organization's receivers, so no
/// organization holds more than its share of the workers however many receivers it subscribes.
fn destination(subscription: &Subscription) -> Destination {
    let host = crate::support::outbound::host_and_port(&subscription.url);
    let org = &subscription.organization_id;
    Destination {
        breaker: format!("webhook:{org}:{host}"),
        share: format!("webhook:{org}"),
        max_in_flight: MAX_CALLS_PER_ORGANIZATION,
        // The request's 15 s timeout, and the attempt's recording.
        longest_call_secs: 20,
    }
}

/// Deliveries of one organization at once: a fifth of the worker's 25 instances (one delivery each).
const MAX_CALLS_PER_ORGANIZATION: i64 = 5;

/// An answer slower than this holds a worker as a hang does; the breaker counts it as a failure.
const SLOW_ANSWER_MS: u64 = 7_500;

/// What an automatic attempt tells the receiver's breaker: `Some(true)` when it held a worker without
/// a timely answer (no answer at all, or one slower than [`SLOW_ANSWER_MS`]), `Some(false)` when the
/// receiver answered in time (whatever the status: quick refusals hold no one, and the retry
/// schedule deals with them), `None` when nothing reached it (our guard refused the target).
fn held_a_worker(attempt: &Attempt, verdict: Verdict) -> Option<bool> {
    match (verdict, attempt.status_code) {
        (Verdict::Abandoned | Verdict::Unsent, _) | (Verdict::Permanent, None) => None,
        (Verdict::Retry(_), None) => Some(true),
        _ => Some(attempt.duration_ms > SLOW_ANSWER_MS),
    }
}

/// One signed POST to the subscription's URL, through the SSRF guard, within 15 seconds.
async fn send(ctx: &Context, subscription: &Subscription, delivery: &Delivery, trigger: Trigger) -> (Attempt, Verdict) {
    let at = ctx.clock.now();
    let mut attempt = Attempt { at, trigger, status_code: None, duration_ms: 0, error: None, response_body: None };
    let secrets = match subscriptions::open_set(ctx, subscription).await {
        Ok(secrets) => secrets,
        Err(e) => {
            tracing::error!(
                alert = "webhook_secret_unavailable",
                subscription_id = subscription.id,
                error = %e,
                "a subscription's signing secret could not be opened; delivery not sent"
            );
            attempt.error = Some("signing secret unavailable; not sent".into());
            return (attempt, Verdict::Unsent);
        }
    };
    let request = match ctx.webhook_client().and_then(|client| client.post(&subscription.url)) {
        Ok(request) => request,
        Err(e @ OutboundError::Tls(_)) => {
            tracing::error!(alert = "outbound_client_unavailable", error = %e, "outbound client not built; delivery not sent");
            attempt.error = Some("not sent: our HTTP client could not be set up".into());
            return (attempt, Verdict::Unsent);
        }
        Err(e) => {
            attempt.error = Some(format!("target refused: {e}"));
            return (attempt, Verdict::Permanent);
        }
    };
    let mut request = request
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("optio-webhooks/", env!("CARGO_PKG_VERSION")))
        .body(delivery.body.clone());
    for (name, value) in signing::headers(&delivery.id, &delivery.event_type, at, &delivery.body, &secrets.signing(at))
    {
        request = request.header(name, value);
    }
    // The receiver's time: from the request to its answer (our own set-up is not its to carry).
    let started = Instant::now();
    let verdict = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            attempt.status_code = Some(status);
            let body = read_prefix(response, RESPONSE_BODY_KEPT).await;
            attempt.response_body = Some(String::from_utf8_lossy(&body).into_owned());
            match status {
                200..=299 => Verdict::Success,
                410 => Verdict::Gone,
                408 | 429 | 500..=599 => Verdict::Retry(retry_after),
                _ => Verdict::Permanent,
            }
        }
        Err(e) => {
            let timed_out = e.is_timeout();
            let error = OutboundError::Http(e.without_url());
            if error.is_refused() {
                attempt.error = Some(format!("target refused: {error}"));
                Verdict::Permanent
            } else {
                attempt.error = Some(if timed_out { "timed out".into() } else { error.to_string() });
                Verdict::Retry(None)
            }
        }
    };
    attempt.duration_ms = started.elapsed().as_millis() as u64;
    (attempt, verdict)
}

fn abandoned(ctx: &Context, why: &str) -> (Attempt, Verdict) {
    let attempt = Attempt {
        at: ctx.clock.now(),
        trigger: Trigger::Automatic,
        status_code: None,
        duration_ms: 0,
        error: Some(format!("not sent: {why}")),
        response_body: None,
    };
    (attempt, Verdict::Abandoned)
}

/// What an attempt says about the subscription: a success ends a failure run; 410 disables it; a
/// failure run longer than the configured period disables it too, with an alert in the logs.
async fn record_health(ctx: &Context, subscription: &Subscription, verdict: Verdict, now: i64) {
    let store = ctx.store();
    let outcome = match verdict {
        Verdict::Success if subscription.failing_since.is_some() => {
            store.clear_subscription_failure(&subscription.id).await.map(drop)
        }
        Verdict::Success | Verdict::Abandoned | Verdict::Unsent => Ok(()),
        Verdict::Gone => disable(ctx, subscription, "gone", now).await,
        Verdict::Retry(_) | Verdict::Permanent => match store.note_subscription_failure(&subscription.id, now).await {
            Ok(Some(since)) if now - since >= ctx.config.webhook_disable_after.as_secs() as i64 => {
                disable(ctx, subscription, "failing", now).await
            }
            other => other.map(drop),
        },
    };
    if let Err(e) = outcome {
        tracing::warn!(subscription_id = subscription.id, error = %e, "subscription health not recorded");
    }
}

async fn disable(
    ctx: &Context,
    subscription: &Subscription,
    reason: &str,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    if ctx.store().disable_subscription(&subscription.id, reason, now).await? {
        // Operators alert on this line (`alert` field); the admins see the reason on the subscription.
        tracing::error!(
            alert = "webhook_subscription_disabled",
            subscription_id = subscription.id,
            organization_id = subscription.organization_id,
            reason,
            "webhook subscription disabled; re-enable it with PUT {{\"active\": true}}"
        );
    }
    Ok(())
}

/// The delay before retry `n`: the schedule's step plus up to 10 % jitter (so receivers that failed
/// together are not retried together), never before the receiver's `Retry-After`, at most 12 hours.
fn backoff(step: Duration, retry_after: Option<i64>) -> i64 {
    let base = step.as_secs() as i64;
    let jitter = if base >= 10 { rand::random_range(0..=base / 10) } else { 0 };
    (base + jitter).max(retry_after.unwrap_or(0)).min(jobs::MAX_HIDE_SECS)
}

/// `Retry-After` in seconds, from either of its forms (delay seconds or an HTTP date).
fn retry_after(headers: &http::HeaderMap) -> Option<i64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds.max(0));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).map(|d| d.as_secs() as i64).unwrap_or(0))
}

async fn dead_letter(ctx: &Context, job: &DeliveryJob) {
    let Some(queue) = ctx.config.webhook_dead_letter_queue_url.as_deref() else { return };
    if let Err(e) = jobs::enqueue(ctx, queue, job).await {
        tracing::error!(delivery_id = job.delivery_id, error = %e, "failed delivery not moved to the dead-letter queue");
    }
}

fn delivery_queue(ctx: &Context) -> Result<&str, QueueError> {
    ctx.config
        .webhook_delivery_queue_url
        .as_deref()
        .ok_or_else(|| QueueError("WEBHOOK_DELIVERY_QUEUE_URL not configured".into()))
}

use crate::runtime::events::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_with_bounded_jitter_and_honours_retry_after() {
        for _ in 0..50 {
            let d = backoff(Duration::from_secs(60), None);
            assert!((60..=66).contains(&d), "{d}");
        }
        assert_eq!(backoff(Duration::from_secs(1), None), 1);
        assert_eq!(backoff(Duration::from_secs(1), Some(30)), 30);
        assert_eq!(backoff(Duration::from_secs(60), Some(100_000)), 12 * 3600);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(120));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(300));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert!((298..=300).contains(&retry_after(&h).unwrap()));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn delivery_ids_are_stable_per_event_and_subscription() {
        assert_eq!(delivery_id("evt_1", "whsub_a"), delivery_id("evt_1", "whsub_a"));
        assert_ne!(delivery_id("evt_1", "whsub_a"), delivery_id("evt_1", "whsub_b"));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
