//! Outbound webhooks end to end: subscriptions through the HTTP API, events through the events queue
//! and its consumer, deliveries through the delivery worker to a real receiver on loopback, which
//! verifies signatures with the Standard Webhooks library.

use std::time::{Duration, Instant};

use hmac::Mac;
use hub::domain::auth::Role;
use hub::runtime::events::DomainEvent;
use serde_json::{Value, json};

use crate::common::{Receiver, TestStack, error_code};

struct Hooks {
    t: TestStack,
    receiver: Receiver,
    org: String,
    admin: String,
}

async fn setup(name: &str, parameters: &[(&str, &str)]) -> Hooks {
    let receiver = Receiver::start().await;
    let t = TestStack::with_parameters(name, parameters).await;
    let org = format!("org-{name}");
    let (_, pair) = t.signed_in_as(&format!("admin@{name}.example.com"), Role::OrgAdmin, &org).await;
    // The admin's own user.registered event is consumed before anyone subscribes.
    while t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    Hooks { t, receiver, org, admin: pair.access_token }
}

impl Hooks {
    async fn subscribe(&self, url: &str, event_types: &[&str]) -> Value {
        let r = self.post("/api/webhooks/subscriptions", &json!({"url": url, "event_types": event_types})).await;
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.t.http.post(self.t.url(path)).bearer_auth(&self.admin).json(body).send().await.unwrap()
    }

    async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.t.http.put(self.t.url(path)).bearer_auth(&self.admin).json(body).send().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.t.get_json(path, &self.admin).await
    }

    /// Puts an event on the events queue and lets the events consumer fan it out.
    async fn publish(&self, event_type: &str) -> DomainEvent {
        let event = DomainEvent::new(
            event_type,
            Some(self.org.clone()),
            json!({"user_id": "u-1", "task_id": "t-1", "xp_awarded": 50}),
            crate::common::now(),
        );
        self.send_event(&event).await;
        event
    }

    async fn send_event(&self, event: &DomainEvent) {
        let sqs = aws_sdk_sqs::Client::new(&self.t.sdk);
        let body = serde_json::to_string(event).unwrap();
        sqs.send_message().queue_url(&self.t.stack.refs["EventsQueue"]).message_body(body).send().await.unwrap();
        assert_eq!(self.t.gateway.poll("events-dispatch", 2).await.unwrap(), (1, 0));
    }

    /// One batch of the delivery worker: (received, failed).
    async fn deliver(&self, wait: i32) -> (usize, usize) {
        self.t.gateway.poll("webhook-deliver", wait).await.unwrap()
    }

    /// Polls the delivery worker until a hidden job comes back and is processed.
    async fn deliver_when_due(&self, within: Duration) -> (usize, usize) {
        let started = Instant::now();
        while started.elapsed() < within {
            let outcome = self.deliver(1).await;
            if outcome.0 > 0 {
                return outcome;
            }
        }
        panic!("no delivery job came back within {within:?}");
    }

    /// Takes the next delivery job off the queue, to run the worker on it by hand (another clock,
    /// another configuration).
    async fn take_job(&self) -> aws_lambda_events::sqs::SqsMessage {
        let sqs = aws_sdk_sqs::Client::new(&self.t.sdk);
        let out = sqs
            .receive_message()
            .queue_url(&self.t.stack.refs["WebhookDeliveryQueue"])
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        let body = out.messages()[0].body();
        serde_json::from_value(json!({"body": body, "attributes": {}, "messageAttributes": {}})).unwrap()
    }

    async fn deliveries(&self, query: &str) -> Vec<Value> {
        let page = self.get(&format!("/api/webhooks/deliveries?{query}")).await;
        page["deliveries"].as_array().unwrap_or_else(|| panic!("{page}")).clone()
    }

    async fn dead_letters(&self) -> Vec<String> {
        let sqs = aws_sdk_sqs::Client::new(&self.t.sdk);
        let out = sqs
            .receive_message()
            .queue_url(&self.t.stack.refs["WebhookDeliveryDeadLetterQueue"])
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        out.messages().iter().filter_map(|m| m.body.clone()).collect()
    }
}

fn header<'a>(r: &'a crate::common::Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn optio_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn standard_verifies(secret: &str, r: &crate::common::Received) -> bool {
    standardwebhooks::Webhook::new(secret).unwrap().verify(&r.body, &r.headers).is_ok()
}

#[tokio::test]
async fn a_registered_user_reaches_the_receiver_signed_in_both_schemes() {
    let h = setup("whsign", &[]).await;
    let created = h.subscribe(&h.receiver.url, &["user.registered"]).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["active"], true);
    assert_eq!(created["organization_id"], h.org.as_str());
    let id = created["id"].as_str().unwrap();

    // The secret is returned once: never by reads, never stored in the clear.
    let listed = h.get("/api/webhooks/subscriptions").await;
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 1);
    let one = h.get(&format!("/api/webhooks/subscriptions/{id}")).await;
    assert_eq!(one["url"], h.receiver.url.as_str());
    for shown in [listed.to_string(), one.to_string()] {
        assert!(!shown.contains(&secret) && !shown.contains("secret\""), "{shown}");
    }
    let table = aws_sdk_dynamodb::Client::new(&h.t.sdk);
    let item = table
        .get_item()
        .table_name(&h.t.stack.refs["CoreTable"])
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("WEBHOOK#{id}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("SUBSCRIPTION".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!format!("{item:?}").contains(&secret[6..]), "the secret is sealed at rest");

    // A real domain event: provisioning a user publishes user.registered through the outbox.
    let mut p = crate::common::profile("test", "newcomer", Some("newcomer@example.com"), Role::Student);
    p.org_id = Some(h.org.clone());
    let (user, _) = hub::domain::auth::provisioning::provision_user(&h.t.ctx, &p).await.unwrap();
    assert_eq!(h.t.gateway.poll("events-dispatch", 2).await.unwrap(), (1, 0));
    assert_eq!(h.deliver(2).await, (1, 0));

    let got = h.receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(standard_verifies(&secret, r), "the standardwebhooks library verifies our signature");
    assert!(!standard_verifies(&hub::integrations::webhooks::signing::new_secret(), r), "and refuses another secret");
    assert_eq!(header(r, "x-optio-signature"), optio_signature(&secret, &r.body));
    assert_eq!(header(r, "x-optio-event"), "user.registered");
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "x-optio-delivery"), header(r, "webhook-id"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["event"], "user.registered");
    assert_eq!(body["organization_id"], h.org.as_str());
    assert_eq!(body["data"]["user_id"], user.id.as_str());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");

    // The log shows the delivery and its attempt.
    let log = h.deliveries("").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["id"], header(r, "x-optio-delivery"));
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["attempts"][0]["status_code"], 200);
    assert_eq!(log[0]["attempts"][0]["response_body"], "answer 200");
    assert!(log[0]["attempts"][0]["duration_ms"].is_u64());
    // Delivery records expire (DynamoDB TTL) 30 days after they were made.
    let record = table
        .get_item()
        .table_name(&h.t.stack.refs["CoreTable"])
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("DELIVERY#{}", log[0]["id"].as_str().unwrap())))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("DELIVERY".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires_at: i64 = record["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires_at - log[0]["created_at"].as_i64().unwrap(), 30 * 24 * 3600);

    // Types it did not subscribe to are not delivered.
    h.publish("task.completed").await;
    assert_eq!(h.deliver(0).await, (0, 0));
    assert_eq!(h.receiver.received().len(), 1);
}

#[tokio::test]
async fn duplicate_events_and_jobs_never_send_a_delivery_twice() {
    let h = setup("whdup", &[]).await;
    h.subscribe(&h.receiver.url, &["*"]).await;
    let event = h.publish("task.completed").await;
    // SQS hands the event out twice: one delivery, but its job is queued again (the first job might
    // have been lost), so two jobs name it. Whether they arrive together (one claims the delivery,
    // the other is hidden) or one after the other (the second finds it done), one request is made.
    h.send_event(&event).await;
    assert_eq!(h.deliveries("").await.len(), 1);
    let mut processed = 0;
    while processed < 2 {
        processed += h.deliver(1).await.0;
    }
    assert_eq!(h.receiver.received().len(), 1);
    // A late copy after success is dropped without a request.
    let job = json!({"delivery_id": h.deliveries("").await[0]["id"]});
    let sqs = aws_sdk_sqs::Client::new(&h.t.sdk);
    sqs.send_message()
        .queue_url(&h.t.stack.refs["WebhookDeliveryQueue"])
        .message_body(job.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(h.deliver_when_due(Duration::from_secs(5)).await, (1, 0));
    assert_eq!(h.receiver.received().len(), 1);
    assert_eq!(h.deliveries("").await[0]["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_then_dead_lettered() {
    let h = setup("whretry", &[("WebhookRetryScheduleSeconds", "1,2")]).await;
    h.subscribe(&h.receiver.url, &["task.completed"]).await;
    h.receiver.answer(&[(500, &[]), (503, &[]), (502, &[])]);
    h.publish("task.completed").await;

    assert_eq!(h.deliver(2).await, (1, 1), "first attempt fails and the job is kept");
    assert_eq!(h.deliver(0).await, (0, 0), "hidden during its backoff");
    assert_eq!(h.deliver_when_due(Duration::from_secs(10)).await, (1, 1));
    assert_eq!(h.deliver_when_due(Duration::from_secs(10)).await, (1, 0), "the last attempt ends the job");

    let got = h.receiver.received();
    assert_eq!(got.len(), 3);
    assert!(got[1].at - got[0].at >= Duration::from_millis(900), "{:?}", got[1].at - got[0].at);
    assert!(got[2].at - got[1].at >= Duration::from_millis(1900), "{:?}", got[2].at - got[1].at);
    // One delivery id across every retry: the receiver's idempotency key.
    assert!(got.iter().all(|r| header(r, "x-optio-delivery") == header(&got[0], "x-optio-delivery")));

    let log = h.deliveries("").await;
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["automatic_attempts"], 3);
    let codes: Vec<&Value> = log[0]["attempts"].as_array().unwrap().iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [500, 503, 502]);
    assert_eq!(h.dead_letters().await, [json!({"delivery_id": log[0]["id"]}).to_string()]);
    let sub = h.get(&format!("/api/webhooks/subscriptions/{}", log[0]["subscription_id"].as_str().unwrap())).await;
    assert!(sub["failing_since"].is_i64(), "{sub}");
    assert_eq!(sub["active"], true, "five days of failures are needed to disable it");
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_success_ends_the_failure_run() {
    let h = setup("whafter", &[("WebhookRetryScheduleSeconds", "1,1")]).await;
    let created = h.subscribe(&h.receiver.url, &["task.completed"]).await;
    h.receiver.answer(&[(429, &[("retry-after", "3")])]);
    h.publish("task.completed").await;
    assert_eq!(h.deliver(2).await, (1, 1));
    assert_eq!(h.deliver_when_due(Duration::from_secs(10)).await, (1, 0));
    let got = h.receiver.received();
    assert!(got[1].at - got[0].at >= Duration::from_millis(2900), "waited {:?}", got[1].at - got[0].at);
    let sub = h.get(&format!("/api/webhooks/subscriptions/{}", created["id"].as_str().unwrap())).await;
    assert!(sub["failing_since"].is_null(), "{sub}");
    assert_eq!(h.deliveries("status=succeeded").await.len(), 1);
}

#[tokio::test]
async fn gone_disables_the_subscription_until_an_admin_enables_it() {
    let h = setup("whgone", &[]).await;
    let created = h.subscribe(&h.receiver.url, &["task.completed"]).await;
    let path = format!("/api/webhooks/subscriptions/{}", created["id"].as_str().unwrap());
    h.receiver.answer(&[(410, &[])]);
    h.publish("task.completed").await;
    assert_eq!(h.deliver(2).await, (1, 0), "410 is final: no retry");
    let sub = h.get(&path).await;
    assert_eq!(sub["active"], false);
    assert_eq!(sub["disabled_reason"], "gone");
    assert_eq!(h.deliveries("").await[0]["status"], "failed");

    // Disabled: new events are not delivered.
    h.publish("task.completed").await;
    assert_eq!(h.deliver(0).await, (0, 0));
    assert_eq!(h.receiver.received().len(), 1);

    let r = h.put(&path, &json!({"active": true})).await;
    assert_eq!(r.status(), 200);
    let sub: Value = r.json().await.unwrap();
    assert_eq!(sub["active"], true);
    assert!(sub["disabled_reason"].is_null() && sub["failing_since"].is_null(), "{sub}");
    h.publish("task.completed").await;
    assert_eq!(h.deliver(2).await, (1, 0));
    assert_eq!(h.receiver.received().len(), 2);
}

#[tokio::test]
async fn a_subscription_failing_for_the_configured_period_is_disabled() {
    let h = setup("whfailing", &[("WebhookDisableAfterSeconds", "3600"), ("WebhookRetryScheduleSeconds", "1")]).await;
    let created = h.subscribe(&h.receiver.url, &["task.completed"]).await;
    let path = format!("/api/webhooks/subscriptions/{}", created["id"].as_str().unwrap());
    h.receiver.answer(&[(400, &[]), (400, &[])]);
    h.publish("task.completed").await;
    assert_eq!(h.deliver(2).await, (1, 0), "a 400 is not retried");
    assert_eq!(h.get(&path).await["active"], true);

    // An hour later (this worker's clock), the next delivery fails too: the subscription is disabled.
    h.publish("task.completed").await;
    let message = h.take_job().await;
    let later = h.t.context_for("webhook-deliver", &[]);
    later.clock.advance(3601);
    hub::integrations::webhooks::delivery::deliver(std::sync::Arc::new(later), message).await.unwrap();
    let sub = h.get(&path).await;
    assert_eq!(sub["active"], false);
    assert_eq!(sub["disabled_reason"], "failing");
    assert_eq!(h.receiver.received().len(), 2);
}

#[tokio::test]
async fn a_hanging_receiver_is_paused_while_other_schools_deliveries_keep_flowing() {
    let h = setup("whtarpit", &[]).await;
    h.subscribe(&h.receiver.url, &["task.completed"]).await;
    // Lincoln, another school, subscribes a receiver that takes every request and never answers.
    let (hanging, calls) = devstack::bench::tarpit().await.unwrap();
    let lincoln = "org-whtarpit-lincoln";
    let (_, admin) = h.t.signed_in_as("admin@lincoln.example.com", Role::OrgAdmin, lincoln).await;
    let body = json!({"url": format!("{hanging}/hooks"), "event_types": ["task.completed"]});
    let r = h.t.http.post(h.t.url("/api/webhooks/subscriptions")).bearer_auth(&admin.access_token).json(&body);
    assert_eq!(r.send().await.unwrap().status(), 201);

    // 200 of Lincoln's deliveries are queued before the one of this school.
    let dispatch = h.t.context_for("events-dispatch", &[]);
    for i in 0..200 {
        let event = DomainEvent::new("task.completed", Some(lincoln.into()), json!({"n": i}), crate::common::now());
        assert_eq!(hub::integrations::webhooks::delivery::fan_out(&dispatch, &event).await.unwrap(), 1);
    }
    let event = DomainEvent::new("task.completed", Some(h.org.clone()), json!({"n": 0}), crate::common::now());
    assert_eq!(hub::integrations::webhooks::delivery::fan_out(&dispatch, &event).await.unwrap(), 1);

    // The worker at its template concurrency (25 instances, one delivery each).
    let started = Instant::now();
    h.t.work_until("webhook-deliver", 25, Duration::from_secs(60), || !h.receiver.received().is_empty()).await;
    assert_eq!(h.receiver.received().len(), 1, "this school's delivery arrived in {:?}", started.elapsed());
    assert_eq!(h.deliveries("").await[0]["status"], "succeeded");
    // Lincoln's receiver never held more than Lincoln's share of the workers (5 deliveries at once, and
    // 2 more as the first timeouts ended, before the third opened its breaker); its deliveries wait
    // (deferred or in their backoff), none lost, none dead.
    let most = 5 + hub::runtime::breaker::FAILURES_TO_OPEN as usize - 1;
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) <= most, "{calls:?} calls to a hanging receiver");
    let destination = format!("webhook:{lincoln}:{}", hanging.trim_start_matches("http://"));
    let paused = h.t.ctx.store().breaker(&destination, h.t.ctx.clock.now()).await.unwrap();
    assert!(paused.open_until.is_some_and(|until| until > h.t.ctx.clock.now()), "{paused:?}");
    h.t.assert_still_queued("WebhookDeliveryQueue", 200).await;
    assert_eq!(h.t.queued("WebhookDeliveryDeadLetterQueue").await, 0);
}

#[tokio::test]
async fn a_past_delivery_is_redelivered_under_the_same_id() {
    let h = setup("whredo", &[]).await;
    h.subscribe(&h.receiver.url, &["quest.completed"]).await;
    h.receiver.answer(&[(404, &[])]);
    h.publish("quest.completed").await;
    assert_eq!(h.deliver(2).await, (1, 0));
    let failed = &h.deliveries("status=failed").await[0];
    let id = failed["id"].as_str().unwrap();

    let r = h.post(&format!("/api/webhooks/deliveries/{id}/redeliver"), &json!({})).await;
    assert_eq!(r.status(), 200);
    let result: Value = r.json().await.unwrap();
    assert_eq!(result["success"], true);
    assert_eq!(result["attempt"]["trigger"], "redelivery");
    assert_eq!(result["delivery"]["status"], "succeeded");
    assert_eq!(result["delivery"]["attempts"].as_array().unwrap().len(), 2);
    let got = h.receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    assert_eq!(got[0].body, got[1].body, "the same body, signed again");

    let r = h.post("/api/webhooks/deliveries/dlv_nope/redeliver", &json!({})).await;
    assert_eq!(error_code(r).await, (404, "delivery_not_found".into()));
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_new_one_for_a_day() {
    let h = setup("whrotate", &[]).await;
    let created = h.subscribe(&h.receiver.url, &["*"]).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap();
    let r = h.put(&format!("/api/webhooks/subscriptions/{id}"), &json!({"rotate_secret": true})).await;
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);

    let r = h.post("/api/webhooks/test", &json!({"subscription_id": id})).await;
    assert_eq!(r.status(), 200);
    let result: Value = r.json().await.unwrap();
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["delivery"]["event_type"], "webhook.test");
    let got = h.receiver.received();
    assert!(standard_verifies(new, &got[0]) && standard_verifies(old, &got[0]), "both secrets verify");
    assert_eq!(header(&got[0], "x-optio-signature"), optio_signature(new, &got[0].body));
    assert_eq!(header(&got[0], "x-optio-signature-previous"), optio_signature(old, &got[0].body));

    // A day later only the new secret signs.
    let later = h.t.context_for("webhooks-test", &[]);
    later.clock.advance(24 * 3600 + 1);
    let admin = hub::domain::auth::guard::Principal {
        user_id: "admin".into(),
        email: None,
        role: Role::OrgAdmin,
        org_id: Some(h.org.clone()),
        session_id: "s".into(),
    };
    hub::integrations::webhooks::delivery::send_test(&later, &admin, id).await.unwrap();
    let got = h.receiver.received();
    let r = &got[1];
    // The receiver's clock is not moved, so check the signature with the library's signer.
    let ts: i64 = header(r, "webhook-timestamp").parse().unwrap();
    let sign = |s: &str| standardwebhooks::Webhook::new(s).unwrap().sign(header(r, "webhook-id"), ts, &r.body).unwrap();
    assert_eq!(header(r, "webhook-signature"), sign(new));
    assert!(r.headers.get("x-optio-signature-previous").is_none());
}

#[tokio::test]
async fn unsafe_targets_are_refused_at_creation_and_at_delivery() {
    let h = setup("whssrf", &[]).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://192.168.1.20/hook",
        "http://[fd00:ec2::254]/",
        "http://user:pass@127.0.0.1:9/hook",
        "ftp://127.0.0.1/hook",
        "not a url",
        "http://no-such-host.invalid/hook",
    ] {
        let r = h.post("/api/webhooks/subscriptions", &json!({"url": url, "event_types": ["*"]})).await;
        assert_eq!(error_code(r).await, (400, "invalid_url".into()), "{url}");
    }
    assert!(h.get("/api/webhooks/subscriptions").await["subscriptions"].as_array().unwrap().is_empty());

    // The local stack lets loopback through; a production worker resolves `localhost` and refuses it.
    let created = h.subscribe(&format!("http://localhost:{}/hook", h.receiver.port), &["*"]).await;
    h.publish("task.completed").await;
    let strict = h.t.context_for("webhook-deliver", &[("OUTBOUND_ALLOW_LOOPBACK", "false")]);
    let message = h.take_job().await;
    hub::integrations::webhooks::delivery::deliver(std::sync::Arc::new(strict), message).await.unwrap();
    assert!(h.receiver.received().is_empty(), "no request left the guard");
    let log = h.deliveries(&format!("subscription_id={}", created["id"].as_str().unwrap())).await;
    assert_eq!(log[0]["status"], "failed");
    assert!(log[0]["attempts"][0]["error"].as_str().unwrap().starts_with("target refused"), "{}", log[0]);
}

#[tokio::test]
async fn organizations_see_and_change_only_their_own_webhooks() {
    let h = setup("whorg", &[]).await;
    let created = h.subscribe(&h.receiver.url, &["*"]).await;
    let id = created["id"].as_str().unwrap();
    let r = h.post("/api/webhooks/test", &json!({"subscription_id": id})).await;
    let delivery_id = r.json::<Value>().await.unwrap()["delivery"]["id"].as_str().unwrap().to_string();

    let (_, other) = h.t.signed_in_as("admin@rival.example.com", Role::OrgAdmin, "org-rival").await;
    let other = other.access_token;
    let http = &h.t.http;
    let sub_path = h.t.url(&format!("/api/webhooks/subscriptions/{id}"));
    let attempts = [
        http.get(&sub_path).bearer_auth(&other),
        http.put(&sub_path).bearer_auth(&other).json(&json!({"url": "http://127.0.0.1:9/stolen"})),
        http.put(&sub_path).bearer_auth(&other).json(&json!({"rotate_secret": true})),
        http.delete(&sub_path).bearer_auth(&other),
        http.post(h.t.url(&format!("/api/webhooks/deliveries/{delivery_id}/redeliver"))).bearer_auth(&other),
        http.post(h.t.url("/api/webhooks/test")).bearer_auth(&other).json(&json!({"subscription_id": id})),
    ];
    for request in attempts {
        let (status, _) = error_code(request.send().await.unwrap()).await;
        assert_eq!(status, 404, "another organization's webhook does not exist for them");
    }
    for path in [
        format!("/api/webhooks/subscriptions?organization_id={}", h.org),
        format!("/api/webhooks/deliveries?organization_id={}", h.org),
    ] {
        let r = http.get(h.t.url(&path)).bearer_auth(&other).send().await.unwrap();
        assert_eq!(error_code(r).await, (403, "forbidden".into()));
    }
    assert!(h.t.get_json("/api/webhooks/subscriptions", &other).await["subscriptions"].as_array().unwrap().is_empty());
    assert!(h.t.get_json("/api/webhooks/deliveries", &other).await["deliveries"].as_array().unwrap().is_empty());
    // Unchanged, and still theirs; the only request the receiver got is the owner's test.
    let sub = h.get(&format!("/api/webhooks/subscriptions/{id}")).await;
    assert_eq!(sub["url"], h.receiver.url.as_str());
    assert!(sub["secret_rotated_at"].is_null());
    assert_eq!(h.receiver.received().len(), 1);

    // Platform admins act on any organization, naming it; students and strangers not at all.
    let (_, admin) = h.t.signed_in_as("root@example.com", Role::Admin, "org-platform").await;
    let listed =
        h.t.get_json(&format!("/api/webhooks/subscriptions?organization_id={}", h.org), &admin.access_token).await;
    assert_eq!(listed["subscriptions"][0]["id"], id);
    let (_, student) = h.t.signed_in_as("kid@example.com", Role::Student, &h.org).await;
    let r = http.get(&sub_path).bearer_auth(&student.access_token).send().await.unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    let r = http.get(&sub_path).send().await.unwrap();
    assert_eq!(error_code(r).await, (401, "missing_token".into()));
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let h = setup("whbad", &[]).await;
    let url = h.t.url("/api/webhooks/subscriptions");
    let send = |body: &'static str, content_type: &'static str| {
        h.t.http.post(&url).bearer_auth(&h.admin).header("content-type", content_type).body(body).send()
    };
    let cases = [
        (send("{not json", "application/json").await.unwrap(), 400, "invalid_json"),
        (send(r#"{"url":"http://127.0.0.1:9/"}"#, "text/plain").await.unwrap(), 415, "unsupported_media_type"),
        (
            send(r#"{"url":"http://127.0.0.1:9/","event_types":["*"],"secret":"mine"}"#, "application/json")
                .await
                .unwrap(),
            400,
            "invalid_json",
        ),
        (
            send(r#"{"url":"http://127.0.0.1:9/","event_types":["task.exploded"]}"#, "application/json").await.unwrap(),
            400,
            "invalid_event_type",
        ),
        (
            send(r#"{"url":"http://127.0.0.1:9/","event_types":[]}"#, "application/json").await.unwrap(),
            400,
            "invalid_event_type",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(error_code(response).await, (status, code.into()));
    }
    let huge = json!({"url": h.receiver.url, "event_types": ["*"], "description": "x".repeat(70_000)});
    let r = h.post("/api/webhooks/subscriptions", &huge).await;
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    assert!(h.get("/api/webhooks/subscriptions").await["subscriptions"].as_array().unwrap().is_empty());

    let created = h.subscribe(&h.receiver.url, &["*"]).await;
    let path = format!("/api/webhooks/subscriptions/{}", created["id"].as_str().unwrap());
    let r = h.put(&path, &json!({"url": "http://169.254.169.254/"})).await;
    assert_eq!(error_code(r).await, (400, "invalid_url".into()));
    assert_eq!(h.get(&path).await["url"], h.receiver.url.as_str());
    for query in ["status=lost", "limit=0", "limit=1000", "since=yesterday", "cursor=bm90LWEtY3Vyc29y"] {
        let r = h.t.http.get(h.t.url(&format!("/api/webhooks/deliveries?{query}"))).bearer_auth(&h.admin).send().await;
        let (status, _) = error_code(r.unwrap()).await;
        assert_eq!(status, 400, "{query}");
    }
    let r = h.post("/api/webhooks/test", &json!({"subscription": "x"})).await;
    assert_eq!(error_code(r).await, (400, "invalid_json".into()));

    // At most 25 subscriptions per organization.
    for _ in 1..25 {
        h.subscribe(&h.receiver.url, &["*"]).await;
    }
    let r = h.post("/api/webhooks/subscriptions", &json!({"url": h.receiver.url, "event_types": ["*"]})).await;
    assert_eq!(error_code(r).await, (409, "too_many_subscriptions".into()));
    let r = h.t.http.delete(h.t.url(&path)).bearer_auth(&h.admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = h.t.http.delete(h.t.url(&path)).bearer_auth(&h.admin).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "subscription_not_found".into()));
}

#[tokio::test]
async fn the_delivery_log_filters_and_pages_newest_first() {
    let h = setup("whlog", &[]).await;
    let a = h.subscribe(&h.receiver.url, &["*"]).await;
    let b = h.subscribe(&h.receiver.url, &["*"]).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    h.receiver.answer(&[(200, &[]), (500, &[]), (200, &[]), (200, &[]), (500, &[])]);
    let mut sent = Vec::new();
    for sub in [a, b, a, b, a] {
        let r = h.post("/api/webhooks/test", &json!({"subscription_id": sub})).await;
        sent.push(r.json::<Value>().await.unwrap()["delivery"]["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation seconds
    }
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    // Five deliveries by two: three pages; more would mean the cursor never ends.
    for page_number in 0.. {
        assert!(page_number < 3, "the cursor ends after three pages");
        let query = format!("limit=2{}", cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default());
        let page = h.get(&format!("/api/webhooks/deliveries?{query}")).await;
        paged.extend(page["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    sent.reverse();
    assert_eq!(paged, sent, "every delivery once, newest first");
    assert_eq!(h.deliveries(&format!("subscription_id={a}")).await.len(), 3);
    let failed = h.deliveries("status=failed").await;
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|d| d["attempts"][0]["status_code"] == 500));
    assert_eq!(h.deliveries(&format!("subscription_id={b}&status=failed")).await.len(), 1);
    assert_eq!(h.deliveries("event_type=webhook.test").await.len(), 5);
    assert!(h.deliveries("event_type=task.completed").await.is_empty());
    let newest = h.deliveries("limit=1").await[0]["created_at"].as_i64().unwrap();
    assert_eq!(h.deliveries(&format!("since={newest}")).await.len(), 1);
    assert_eq!(h.deliveries(&format!("until={}", newest - 1)).await.len(), 4);
}

/// Runs a documented receiver example on a captured request; returns what it verified.
async fn documented_receiver(
    program: &str,
    script: &str,
    r: &crate::common::Received,
    body: &[u8],
    secret: &str,
) -> Value {
    use base64::Engine;
    use tokio::io::AsyncWriteExt;
    let headers: serde_json::Map<String, Value> =
        r.headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap()))).collect();
    let input = json!({"body_base64": base64::engine::general_purpose::STANDARD.encode(body), "headers": headers, "secret": secret});
    let mut child = tokio::process::Command::new(program)
        .arg(devstack::repo_root().join("docs/receivers").join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs the documented receiver: {e}"));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_documented_node_and_python_receivers_verify_deliveries() {
    let h = setup("whdocs", &[]).await;
    let created = h.subscribe(&h.receiver.url, &["*"]).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap().to_string();
    let rotated: Value = h
        .put(&format!("/api/webhooks/subscriptions/{id}"), &json!({"rotate_secret": true}))
        .await
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_string();
    h.publish("badge.earned").await;
    assert_eq!(h.deliver(2).await, (1, 0));
    let r = &h.receiver.received()[0];
    let stranger = hub::integrations::webhooks::signing::new_secret();
    let mut tampered = r.body.clone();
    tampered[1] ^= 0x20;
    for (program, script) in [("node", "verify-webhook.js"), ("python3", "verify_webhook.py")] {
        let both = json!({"optio": true, "standard": true});
        let neither = json!({"optio": false, "standard": false});
        assert_eq!(documented_receiver(program, script, r, &r.body, &new).await, both, "{script}: new secret");
        assert_eq!(documented_receiver(program, script, r, &r.body, &old).await, both, "{script}: rotated-out secret");
        assert_eq!(
            documented_receiver(program, script, r, &r.body, &stranger).await,
            neither,
            "{script}: other secret"
        );
        assert_eq!(documented_receiver(program, script, r, &tampered, &new).await, neither, "{script}: changed body");
    }
}
