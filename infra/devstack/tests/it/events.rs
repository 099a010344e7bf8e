//! Domain events: transactional outbox, inline publish, relay of failed publishes, and the events
//! queue consumer fed by the dev gateway's poller, with SQS's at-least-once delivery.

use hub::domain::auth::Role;
use hub::domain::auth::provisioning::provision_user;
use hub::runtime::events::{DomainEvent, USER_REGISTERED};
use serde_json::{Value, json};

use crate::common::{TestStack, profile};

fn with_org(email: &str, org: &str) -> hub::domain::auth::provisioning::ExternalProfile {
    let mut p = profile("spark", email, Some(email), Role::Student);
    p.org_id = Some(org.into());
    p
}

async fn send(t: &TestStack, body: &str) {
    let sqs = aws_sdk_sqs::Client::new(&t.sdk);
    sqs.send_message().queue_url(&t.stack.refs["EventsQueue"]).message_body(body).send().await.unwrap();
}

#[tokio::test]
async fn a_new_user_is_announced_once_through_outbox_queue_and_consumer() {
    let t = TestStack::new("evflow").await;
    provision_user(&t.ctx, &with_org("ivy@example.com", "org-ev")).await.unwrap();
    // Published inline: nothing left pending for the relay.
    assert!(t.ctx.store().pending_events(hub_now() + 3600, 10).await.unwrap().is_empty());
    // A returning login emits nothing new.
    provision_user(&t.ctx, &with_org("ivy@example.com", "org-ev")).await.unwrap();

    assert_eq!(t.gateway.poll("events-dispatch", 1).await.unwrap(), (1, 0));
    let activity = t.ctx.store().activity("org-ev", 10).await.unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].1, USER_REGISTERED);
    assert_eq!(t.gateway.poll("events-dispatch", 0).await.unwrap(), (0, 0), "the queue is drained");
}

#[tokio::test]
async fn duplicate_deliveries_are_recorded_once() {
    let t = TestStack::new("evdup").await;
    let event = DomainEvent::new(USER_REGISTERED, Some("org-dup".into()), json!({"user_id": "u1"}), hub_now());
    let body = serde_json::to_string(&event).unwrap();
    send(&t, &body).await;
    send(&t, &body).await;
    let mut received = 0;
    for _ in 0..20 {
        let (n, failed) = t.gateway.poll("events-dispatch", 1).await.unwrap();
        assert_eq!(failed, 0);
        received += n;
        if received >= 2 {
            break;
        }
    }
    assert_eq!(received, 2, "both copies were delivered");
    assert_eq!(t.ctx.store().activity("org-dup", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_message_fails_alone_and_stays_for_retry() {
    let t = TestStack::new("evbad").await;
    send(&t, "{not an event").await;
    let good = DomainEvent::new(USER_REGISTERED, Some("org-bad".into()), json!({}), hub_now());
    send(&t, &serde_json::to_string(&good).unwrap()).await;
    let (mut received, mut failed) = (0, 0);
    for _ in 0..20 {
        let (n, f) = t.gateway.poll("events-dispatch", 1).await.unwrap();
        received += n;
        failed += f;
        if received >= 2 {
            break;
        }
    }
    assert_eq!((received, failed), (2, 1), "both were received, the malformed one failed");
    assert_eq!(t.ctx.store().activity("org-bad", 10).await.unwrap().len(), 1);
    // The failed message was not deleted: it is in flight, to be retried and then dead-lettered.
    let sqs = aws_sdk_sqs::Client::new(&t.sdk);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&t.stack.refs["EventsQueue"])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let in_flight =
        &attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible];
    assert_eq!(in_flight, "1");
}

#[tokio::test]
async fn an_event_whose_publish_failed_is_relayed_by_the_schedule() {
    let t = TestStack::new("evrelay").await;
    // The user is committed, but the queue cannot be reached at publish time.
    let broken = t.context_with(
        "EVENTS_QUEUE_URL",
        &format!("{}/123456789012/no-such-queue", std::env::var("AWS_ENDPOINT_URL").unwrap()),
    );
    let (user, _) = provision_user(&broken, &with_org("jo@example.com", "org-relay")).await.unwrap();
    let pending = t.ctx.store().pending_events(hub_now() + 3600, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].data["user_id"], user.id.as_str());
    assert_eq!(t.gateway.poll("events-dispatch", 0).await.unwrap(), (0, 0), "nothing reached the queue");

    // Too young for the relay: the inline publish may still be under way.
    let r: Value = t.http.post(t.url("/_local/schedules/outbox-relay")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"pending": 0, "published": 0}));
    // Later, the scheduled relay publishes it, once.
    let later = t.new_context();
    later.clock.advance(60);
    let summary = hub::runtime::events::relay(std::sync::Arc::new(later), json!({})).await.unwrap();
    assert_eq!(summary, json!({"pending": 1, "published": 1}));
    assert!(t.ctx.store().pending_events(hub_now() + 3600, 10).await.unwrap().is_empty());
    assert_eq!(t.gateway.poll("events-dispatch", 1).await.unwrap(), (1, 0));
    assert_eq!(t.ctx.store().activity("org-relay", 10).await.unwrap().len(), 1);

    // An unknown schedule name is refused.
    assert_eq!(t.http.post(t.url("/_local/schedules/nope")).send().await.unwrap().status(), 404);
}

fn hub_now() -> i64 {
    crate::common::now()
}
