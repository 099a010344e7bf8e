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

use crate::domain::learning::submissions::{
    BADGE_EARNED, GRADE_UPDATED, QUEST_COMPLETED, TASK_COMPLETED, TASK_SUBMITTED,
};
use crate::integrations::observers::{OBSERVER_COMMENT_POSTED, OBSERVER_LINKED};
use crate::runtime::events::USER_REGISTERED;
pub use crate::store::webhooks::{Attempt, Delivery, DeliveryStatus, Subscription, Trigger};

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
