//! Outbound webhooks: organizations subscribe to domain events and receive signed deliveries.
//!
//! The path of an event: the events consumer ([`delivery::fan_out`]) writes one delivery record per
//! matching active subscription (its id derives from the event and the subscription, so a duplicate
//! event changes nothing) and queues a job naming it; the delivery worker ([`delivery::deliver`])
//! claims the record, POSTs the signed body, appends the attempt to the record and either finishes or
//! hides the job for the next step of the retry schedule. Exhausted jobs are marked failed and moved to
//! the dead-letter queue. The record, not the message, is the truth: a duplicate or early message
//! never sends a delivery that already succeeded, or one another worker is sending.

pub mod delivery;
pub mod sealing;
pub mod signing;
pub mod subscriptions;

use serde::{Deserialize, Serialize};

use crate::events::USER_REGISTERED;
use crate::learning::submissions::{BADGE_EARNED, QUEST_COMPLETED, TASK_COMPLETED, TASK_SUBMITTED};
use crate::observers::{OBSERVER_COMMENT_POSTED, OBSERVER_LINKED};
use crate::passback::GRADE_UPDATED;

/// The event types a subscription may name (or `*` for all of them).
pub const EVENT_TYPES: &[&str] = &[
    TASK_SUBMITTED,
    TASK_COMPLETED,
    QUEST_COMPLETED,
    BADGE_EARNED,
    GRADE_UPDATED,
    USER_REGISTERED,
    OBSERVER_LINKED,
    OBSERVER_COMMENT_POSTED,
];
pub const ALL_EVENTS: &str = "*";
/// The event `POST /api/webhooks/test` sends.
pub const WEBHOOK_TEST: &str = "webhook.test";

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
    pub secrets: sealing::Sealed,
}

impl Subscription {
    /// Whether an event goes to this subscription: `*` means every event of [`EVENT_TYPES`], never an
    /// internal one (`quest.mapped`).
    pub fn wants(&self, event_type: &str) -> bool {
        EVENT_TYPES.contains(&event_type) && self.event_types.iter().any(|t| t == ALL_EVENTS || t == event_type)
    }
}

/// The signing secrets of a subscription, as sealed in its record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretSet {
    pub current: String,
    pub previous: Option<String>,
    /// Until when (unix seconds) the previous secret still signs.
    pub previous_until: Option<i64>,
}

impl SecretSet {
    pub fn signing(&self, now: i64) -> signing::SigningSecrets<'_> {
        let previous = self.previous.as_deref().filter(|_| self.previous_until.is_some_and(|until| now < until));
        signing::SigningSecrets { current: &self.current, previous }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
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
