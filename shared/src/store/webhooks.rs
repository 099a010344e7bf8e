//! Webhook subscriptions and their deliveries.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Item, ItemExt, Store, StoreError, condition_held, cursor, n, s};
use serde::{Deserialize, Serialize};

/// A sealed value as stored: the sealing key's version and `base64(nonce | ciphertext | tag)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    pub kid: String,
    pub blob: String,
}

/// A subscription as its organization's admins see it (the secrets are never part of it).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: String,
    pub organization_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub active: bool,
    /// Why deliveries stopped: `gone` (the receiver answered 410) or `failing` (every delivery failed
    /// for the configured period). Re-enabling clears it.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    /// Start of the current run of failed deliveries, cleared by any success.
    pub failing_since: Option<i64>,
    pub secret_rotated_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub secrets: Sealed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

/// What started an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The delivery worker (first attempt and scheduled retries).
    Automatic,
    /// `POST /api/webhooks/deliveries/{id}/redeliver`.
    Redelivery,
    /// `POST /api/webhooks/test`.
    Test,
}

/// One POST to a receiver, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: i64,
    pub trigger: Trigger,
    /// The receiver's HTTP status; absent when no answer came (network error, timeout, refused target).
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// The first KiB of the receiver's answer.
    pub response_body: Option<String>,
}

/// One event for one subscription, with every attempt to deliver it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub subscription_id: String,
    pub organization_id: String,
    pub event_type: String,
    pub event_id: String,
    pub status: DeliveryStatus,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the next automatic retry is due (pending deliveries that failed before).
    pub next_attempt_at: Option<i64>,
    pub automatic_attempts: u32,
    pub attempts: Vec<Attempt>,
    /// The exact body sent (and signed) on every attempt.
    #[serde(skip)]
    pub body: String,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

const SUBSCRIPTION: &str = "SUBSCRIPTION";
const DELIVERY: &str = "DELIVERY";

fn subscription_pk(id: &str) -> String {
    format!("WEBHOOK#{id}")
}
fn delivery_pk(id: &str) -> String {
    format!("DELIVERY#{id}")
}
fn deliveries_index(org: &str) -> String {
    format!("ORG#{org}#DELIVERIES")
}

/// What `PUT /api/webhooks/subscriptions/{id}` changes; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct SubscriptionChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub active: Option<bool>,
    /// New sealed secrets, replacing exactly the ones read (a concurrent rotation loses, not both).
    pub secrets: Option<(Sealed, Sealed)>,
}

/// Filters of the delivery log.
#[derive(Debug, Default)]
pub struct DeliveryFilter {
    pub subscription_id: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

pub use super::cursor::InvalidCursor;

impl Store<'_> {
    pub async fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let item = Item::from([
            ("pk".into(), s(subscription_pk(&sub.id))),
            ("sk".into(), s(SUBSCRIPTION)),
            ("id".into(), s(&sub.id)),
            ("organization_id".into(), s(&sub.organization_id)),
            ("url".into(), s(&sub.url)),
            ("event_types".into(), strings(&sub.event_types)),
            ("description".into(), s(&sub.description)),
            ("active".into(), AttributeValue::Bool(sub.active)),
            ("created_at".into(), n(sub.created_at)),
            ("updated_at".into(), n(sub.updated_at)),
            ("secrets_kid".into(), s(&sub.secrets.kid)),
            ("secrets_blob".into(), s(&sub.secrets.blob)),
            ("gsi1pk".into(), s(format!("ORG#{}#WEBHOOKS", sub.organization_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", sub.created_at, sub.id))),
        ]);
        if self.put_if_new(item).await? { Ok(()) } else { Err(StoreError("subscription id collision".into())) }
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.get(&subscription_pk(id), SUBSCRIPTION).await?.as_ref().and_then(subscription_from))
    }

    /// Every subscription of an organization, oldest first.
    pub async fn subscriptions_of_organization(&self, org: &str, limit: i32) -> Result<Vec<Subscription>, StoreError> {
        let items = self.organization_items(org, "WEBHOOKS", false, limit).await?;
        Ok(items.iter().filter_map(subscription_from).collect())
    }

    /// Applies the changes an admin asked for; `None` when the subscription no longer exists or its
    /// secrets changed since they were read.
    pub async fn update_subscription(
        &self,
        id: &str,
        changes: SubscriptionChanges,
        now: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut sets = vec!["updated_at = :now".to_string()];
        let mut removes = Vec::new();
        let mut condition = "attribute_exists(pk)".to_string();
        let mut request = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(SUBSCRIPTION))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        if let Some(url) = changes.url {
            sets.push("url = :url".into());
            request = request.expression_attribute_values(":url", s(url));
        }
        if let Some(types) = changes.event_types {
            sets.push("event_types = :types".into());
            request = request.expression_attribute_values(":types", strings(&types));
        }
        if let Some(description) = changes.description {
            sets.push("description = :description".into());
            request = request.expression_attribute_values(":description", s(description));
        }
        if let Some(active) = changes.active {
            sets.push("active = :active".into());
            request = request.expression_attribute_values(":active", AttributeValue::Bool(active));
            if active {
                // Re-enabling starts afresh: the failure run and the reason deliveries stopped are history.
                removes.extend(["failing_since", "disabled_reason", "disabled_at"]);
            }
        }
        if let Some((old, new)) = changes.secrets {
            sets.extend([
                "secrets_kid = :kid".into(),
                "secrets_blob = :blob".into(),
                "secret_rotated_at = :now".into(),
            ]);
            condition.push_str(" AND secrets_blob = :old_blob");
            request = request
                .expression_attribute_values(":kid", s(new.kid))
                .expression_attribute_values(":blob", s(new.blob))
                .expression_attribute_values(":old_blob", s(old.blob));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let result = request.update_expression(expression).condition_expression(condition).send().await;
        match result {
            Ok(out) => Ok(out.attributes.as_ref().and_then(subscription_from)),
            Err(e) => condition_held(Err::<(), _>(e)).map(|_| None),
        }
    }

    /// `false` when there was no such subscription.
    pub async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(SUBSCRIPTION))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        condition_held(result)
    }

    /// Notes a failed delivery; returns when the current run of failures started.
    pub async fn note_subscription_failure(&self, id: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(SUBSCRIPTION))
            .update_expression("SET failing_since = if_not_exists(failing_since, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.attributes.unwrap_or_default().num("failing_since")),
            Err(e) => condition_held(Err::<(), _>(e)).map(|_| None),
        }
    }

    pub async fn clear_subscription_failure(&self, id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(SUBSCRIPTION))
            .update_expression("REMOVE failing_since")
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        condition_held(result).map(drop)
    }

    /// Stops deliveries to a subscription; `true` when this call disabled it (it was active).
    pub async fn disable_subscription(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(SUBSCRIPTION))
            .update_expression("SET active = :off, disabled_reason = :reason, disabled_at = :now, updated_at = :now")
            .condition_expression("active = :on")
            .expression_attribute_values(":off", AttributeValue::Bool(false))
            .expression_attribute_values(":on", AttributeValue::Bool(true))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result)
    }

    /// Records a new delivery; `false` when it exists already (the same event fanned out twice).
    pub async fn put_delivery(&self, d: &Delivery, expires_at: i64) -> Result<bool, StoreError> {
        let item = Item::from([
            ("pk".into(), s(delivery_pk(&d.id))),
            ("sk".into(), s(DELIVERY)),
            ("id".into(), s(&d.id)),
            ("subscription_id".into(), s(&d.subscription_id)),
            ("organization_id".into(), s(&d.organization_id)),
            ("event_type".into(), s(&d.event_type)),
            ("event_id".into(), s(&d.event_id)),
            ("body".into(), s(&d.body)),
            ("status".into(), s(d.status.as_str())),
            ("created_at".into(), n(d.created_at)),
            ("updated_at".into(), n(d.updated_at)),
            ("automatic_attempts".into(), n(d.automatic_attempts.into())),
            ("attempts".into(), attempts_value(&d.attempts)),
            ("gsi1pk".into(), s(deliveries_index(&d.organization_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", d.created_at, d.id))),
            ("expires_at".into(), n(expires_at)),
        ]);
        self.put_if_new(item).await
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.get(&delivery_pk(id), DELIVERY).await?.as_ref().and_then(delivery_from))
    }

    /// Takes the right to attempt a delivery for `lease_secs`; `None` while someone else holds it.
    /// `pending_only` refuses deliveries that are finished (the worker's case; redelivery may retry
    /// any delivery).
    pub async fn claim_delivery(
        &self,
        id: &str,
        now: i64,
        lease_secs: i64,
        pending_only: bool,
    ) -> Result<Option<String>, StoreError> {
        let lease = crate::support::crypto::random_token(12);
        let mut condition =
            "attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now)".to_string();
        let mut request = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(delivery_pk(id)))
            .key("sk", s(DELIVERY))
            .update_expression("SET lease = :lease, lease_until = :until")
            .expression_attribute_values(":lease", s(&lease))
            .expression_attribute_values(":until", n(now + lease_secs))
            .expression_attribute_values(":now", n(now));
        if pending_only {
            condition.push_str(" AND #status = :pending");
            request = request
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()));
        }
        let held = condition_held(request.condition_expression(condition).send().await)?;
        Ok(held.then_some(lease))
    }

    /// Appends an attempt, sets the outcome and releases the lease taken by [`Store::claim_delivery`].
    pub async fn finish_attempt(
        &self,
        id: &str,
        lease: &str,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut sets = vec!["attempts = list_append(attempts, :attempt)", "#status = :status", "updated_at = :now"];
        let mut removes = vec!["lease", "lease_until"];
        let mut request = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(delivery_pk(id)))
            .key("sk", s(DELIVERY))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":attempt", attempts_value(std::slice::from_ref(attempt)))
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(attempt.at))
            .expression_attribute_values(":lease", s(lease))
            .condition_expression("lease = :lease");
        match next_attempt_at {
            Some(at) => {
                sets.push("next_attempt_at = :next");
                request = request.expression_attribute_values(":next", n(at));
            }
            None => removes.push("next_attempt_at"),
        }
        let mut expression = format!("SET {} REMOVE {}", sets.join(", "), removes.join(", "));
        if attempt.trigger == Trigger::Automatic {
            expression.push_str(" ADD automatic_attempts :one");
            request = request.expression_attribute_values(":one", n(1));
        }
        if condition_held(request.update_expression(expression).send().await)? {
            Ok(())
        } else {
            Err(StoreError(format!("lease on delivery {id} was lost before its attempt was recorded")))
        }
    }

    /// A page of an organization's delivery log, newest first, and the cursor of the next page.
    pub async fn deliveries_of_organization(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), DeliveryPageError> {
        /// Pages of the index read per request at most; a sparse filter returns a cursor to go on.
        const MAX_PAGES: usize = 10;
        let index = deliveries_index(org);
        let from = format!("{:012}", filter.since.unwrap_or(0).max(0));
        let to = format!("{:012}~", filter.until.unwrap_or(999_999_999_999).clamp(0, 999_999_999_999));
        let mut filters = Vec::new();
        let mut values = vec![(":index", s(&index)), (":from", s(from)), (":to", s(to))];
        if let Some(sub) = &filter.subscription_id {
            filters.push("subscription_id = :sub");
            values.push((":sub", s(sub)));
        }
        if let Some(event_type) = &filter.event_type {
            filters.push("event_type = :type");
            values.push((":type", s(event_type)));
        }
        if let Some(status) = filter.status {
            filters.push("#status = :status");
            values.push((":status", s(status.as_str())));
        }
        let mut start = cursor.map(|c| cursor::decode(&index, c, "DELIVERY#")).transpose()?;
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut query = self
                .client
                .query()
                .table_name(self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :index AND gsi1sk BETWEEN :from AND :to")
                .scan_index_forward(false)
                .limit(limit.max(25) as i32)
                .set_exclusive_start_key(start.take());
            for (name, value) in &values {
                query = query.expression_attribute_values(*name, value.clone());
            }
            if !filters.is_empty() {
                query = query.filter_expression(filters.join(" AND "));
            }
            if filter.status.is_some() {
                query = query.expression_attribute_names("#status", "status");
            }
            let out = query.send().await.map_err(StoreError::from_sdk)?;
            for item in out.items() {
                if let Some(d) = delivery_from(item) {
                    found.push(d);
                }
                if found.len() == limit {
                    let last = &found[limit - 1];
                    let cursor = cursor::encode(
                        &format!("{:012}#{}", last.created_at, last.id),
                        &delivery_pk(&last.id),
                        DELIVERY,
                    );
                    return Ok((found, Some(cursor)));
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok((found, None)),
            }
        }
        let next = start.as_ref().and_then(|k| Some(cursor::encode(k.str("gsi1sk")?, k.str("pk")?, k.str("sk")?)));
        Ok((found, next))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryPageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cursor(#[from] InvalidCursor),
}

fn strings(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(s).collect())
}

fn read_strings(item: &Item, key: &str) -> Vec<String> {
    match item.get(key) {
        Some(AttributeValue::L(values)) => values.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
}

fn attempts_value(attempts: &[Attempt]) -> AttributeValue {
    AttributeValue::L(attempts.iter().map(|a| s(serde_json::to_string(a).expect("attempts serialize"))).collect())
}

fn subscription_from(item: &Item) -> Option<Subscription> {
    Some(Subscription {
        id: item.str("id")?.to_string(),
        organization_id: item.str("organization_id")?.to_string(),
        url: item.str("url")?.to_string(),
        event_types: read_strings(item, "event_types"),
        description: item.str("description").unwrap_or_default().to_string(),
        active: item.flag("active").unwrap_or(false),
        disabled_reason: item.str("disabled_reason").map(str::to_string),
        disabled_at: item.num("disabled_at"),
        failing_since: item.num("failing_since"),
        secret_rotated_at: item.num("secret_rotated_at"),
        created_at: item.num("created_at")?,
        updated_at: item.num("updated_at")?,
        secrets: Sealed { kid: item.str("secrets_kid")?.to_string(), blob: item.str("secrets_blob")?.to_string() },
    })
}

fn delivery_from(item: &Item) -> Option<Delivery> {
    Some(Delivery {
        id: item.str("id")?.to_string(),
        subscription_id: item.str("subscription_id")?.to_string(),
        organization_id: item.str("organization_id")?.to_string(),
        event_type: item.str("event_type")?.to_string(),
        event_id: item.str("event_id")?.to_string(),
        status: DeliveryStatus::parse(item.str("status")?)?,
        created_at: item.num("created_at")?,
        updated_at: item.num("updated_at")?,
        next_attempt_at: item.num("next_attempt_at"),
        automatic_attempts: item.num("automatic_attempts").unwrap_or(0) as u32,
        attempts: read_strings(item, "attempts").iter().filter_map(|a| serde_json::from_str(a).ok()).collect(),
        body: item.str("body")?.to_string(),
    })
}
