//! The outbox of domain events and the organizations' activity log.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

use super::{Item, ItemExt, Store, StoreError, condition_held, n, s};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::support::crypto;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    pub occurred_at: i64,
    pub organization_id: Option<String>,
    pub data: Value,
}

impl DomainEvent {
    pub fn new(event_type: &str, organization_id: Option<String>, data: Value, now: i64) -> Self {
        Self {
            id: format!("evt_{}", crypto::random_token(16)),
            event_type: event_type.into(),
            occurred_at: now,
            organization_id,
            data,
        }
    }
}

/// Pending events are found through the sparse `gsi1` index under this key; publishing removes it.
const PENDING: &str = "OUTBOX#PENDING";
/// Published outbox records are kept this long for inspection, then expire.
const OUTBOX_RETENTION_SECS: i64 = 14 * 24 * 3600;
/// Activity-log entries expire after this long.
const ACTIVITY_RETENTION_SECS: i64 = 400 * 24 * 3600;

fn event_pk(id: &str) -> String {
    format!("EVENT#{id}")
}

impl Store<'_> {
    /// The outbox write to put in the same transaction as the change the event reports.
    pub fn outbox_put(&self, event: &DomainEvent) -> TransactWriteItem {
        let item = Item::from([
            ("pk".into(), s(event_pk(&event.id))),
            ("sk".into(), s("OUTBOX")),
            ("event".into(), s(serde_json::to_string(event).expect("events serialize"))),
            ("gsi1pk".into(), s(PENDING)),
            ("gsi1sk".into(), s(format!("{:012}#{}", event.occurred_at, event.id))),
            ("expires_at".into(), n(event.occurred_at + OUTBOX_RETENTION_SECS)),
        ]);
        self.put_new_item(item)
    }

    pub async fn mark_event_published(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(event_pk(id)))
            .key("sk", s("OUTBOX"))
            .update_expression("REMOVE gsi1pk, gsi1sk SET published_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result).map(drop)
    }

    /// Events still pending that occurred before `before`, oldest first.
    pub async fn pending_events(&self, before: i64, limit: i32) -> Result<Vec<DomainEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pending AND gsi1sk < :before")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":before", s(format!("{before:012}")))
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.items().iter().filter_map(|item| item.str("event").and_then(|e| serde_json::from_str(e).ok())).collect())
    }

    /// Records an event in its organization's activity log; `false` when it was already there.
    pub async fn record_activity(&self, event: &DomainEvent) -> Result<bool, StoreError> {
        let org = event.organization_id.as_deref().unwrap_or("-");
        let item = Item::from([
            ("pk".into(), s(format!("ORG#{org}#ACTIVITY"))),
            ("sk".into(), s(format!("{:012}#{}", event.occurred_at, event.id))),
            ("event_type".into(), s(&event.event_type)),
            ("data".into(), s(event.data.to_string())),
            ("expires_at".into(), n(event.occurred_at + ACTIVITY_RETENTION_SECS)),
        ]);
        self.put_if_new(item).await
    }

    /// The newest entries of an organization's activity log.
    pub async fn activity(&self, organization_id: &str, limit: i32) -> Result<Vec<(String, String)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("ORG#{organization_id}#ACTIVITY")))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| Some((i.str("sk")?.to_string(), i.str("event_type")?.to_string())))
            .collect())
    }
}
