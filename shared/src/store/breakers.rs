//! The state of each outbound destination's circuit breaker (`runtime::breaker`).
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | breaker | `BREAKER#<destination>` | `STATE` | failures (in the current window), window_start, open_until, openings (in a row), probe_until (a job is probing after a pause), expires_at |
//! | calls in flight | `BREAKER#<destination>` | `CALLS` | `m<minute>`: calls started in that minute and not finished, expires_at |
//!
//! Every change is one conditional update, so workers of every instance share one count and open a
//! breaker once. Calls in flight are counted per minute of their start, and a call is never longer
//! than a minute (every job's budget is shorter): the current and the previous minute's counts are
//! the calls in flight, and a count a crashed worker never took back is forgotten two minutes later.

use aws_sdk_dynamodb::types::ReturnValue;

use super::{ItemExt, Store, StoreError, condition_held, n, s};

/// A destination's breaker, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BreakerState {
    pub failures: i64,
    pub window_start: i64,
    /// Until when calls to the destination wait (none: closed).
    pub open_until: Option<i64>,
    /// Times it opened in a row, without a success between.
    pub openings: i64,
    /// After a pause: until when one job probes the destination, alone.
    pub probe_until: Option<i64>,
    /// Calls in flight that started in the previous minute (see the module doc).
    pub calls_last_minute: i64,
}

fn breaker_pk(destination: &str) -> String {
    format!("BREAKER#{destination}")
}

/// Breaker items outlive a quiet day.
const KEEP_SECS: i64 = 24 * 3600;

impl Store<'_> {
    /// An update of a destination's breaker item.
    fn breaker_update(
        &self,
        destination: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.item_update(destination, "STATE")
    }

    /// An update of one of a destination's items (`STATE` or `CALLS`).
    fn item_update(
        &self,
        destination: &str,
        sk: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client.update_item().table_name(self.table).key("pk", s(breaker_pk(destination))).key("sk", s(sk))
    }

    /// A destination's breaker and its calls in flight, read together at `now`.
    pub async fn breaker(&self, destination: &str, now: i64) -> Result<BreakerState, StoreError> {
        let mut state = BreakerState::default();
        for item in self.query_all(&breaker_pk(destination), None).await? {
            match item.str("sk") {
                Some("STATE") => {
                    state.failures = item.num("failures").unwrap_or(0);
                    state.window_start = item.num("window_start").unwrap_or(0);
                    state.open_until = item.num("open_until");
                    state.openings = item.num("openings").unwrap_or(0);
                    state.probe_until = item.num("probe_until");
                }
                Some("CALLS") => state.calls_last_minute = item.num(&minute_key(now / 60 - 1)).unwrap_or(0).max(0),
                _ => {}
            }
        }
        Ok(state)
    }

    /// Starts a call in minute `minute` if fewer than `room` calls of that minute are in flight;
    /// forgets the count of two minutes before.
    pub async fn start_breaker_call(
        &self,
        destination: &str,
        minute: i64,
        room: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .item_update(destination, "CALLS")
            .update_expression("ADD #now :one SET expires_at = :exp REMOVE #old")
            .condition_expression("attribute_not_exists(#now) OR #now < :room")
            .expression_attribute_names("#now", minute_key(minute))
            .expression_attribute_names("#old", minute_key(minute - 2))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":room", n(room))
            .expression_attribute_values(":exp", n(now + KEEP_SECS))
            .send()
            .await;
        condition_held(result)
    }

    /// A call started in `minute` is over (nothing to do once that minute's count is forgotten).
    pub async fn finish_breaker_call(&self, destination: &str, minute: i64) -> Result<(), StoreError> {
        let result = self
            .item_update(destination, "CALLS")
            .update_expression("ADD #m :minus")
            // Never below zero (a count already forgotten, or decremented twice by a retried request).
            .condition_expression("#m > :zero")
            .expression_attribute_names("#m", minute_key(minute))
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        condition_held(result).map(|_| ())
    }

    /// Counts a failure in the window that started at or after `window_floor` (a new window
    /// otherwise); returns the failures of the window, this one included.
    pub async fn count_breaker_failure(
        &self,
        destination: &str,
        now: i64,
        window_floor: i64,
    ) -> Result<i64, StoreError> {
        let counted = self
            .breaker_update(destination)
            .update_expression(
                "ADD failures :one SET window_start = if_not_exists(window_start, :now), expires_at = :exp",
            )
            .condition_expression("attribute_not_exists(window_start) OR window_start >= :floor")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":floor", n(window_floor))
            .expression_attribute_values(":exp", n(now + KEEP_SECS))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match counted {
            Ok(out) => Ok(out.attributes.unwrap_or_default().num("failures").unwrap_or(1)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                // The window is over: this failure starts the next one.
                self.breaker_update(destination)
                    .update_expression("SET failures = :one, window_start = :now, expires_at = :exp")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":exp", n(now + KEEP_SECS))
                    .send()
                    .await
                    .map_err(StoreError::from_sdk)?;
                Ok(1)
            }
            Err(e) => Err(StoreError::from_sdk(e)),
        }
    }

    /// Opens the breaker until `until` unless it is open already (one opening however many workers
    /// saw the failures); `true` when this call opened it.
    pub async fn open_breaker(&self, destination: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let result = self
            .breaker_update(destination)
            .update_expression(
                "SET open_until = :until, failures = :zero, window_start = :now, expires_at = :exp ADD openings :one \
                 REMOVE probe_until",
            )
            .condition_expression("attribute_not_exists(open_until) OR open_until < :now")
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(until + KEEP_SECS))
            .send()
            .await;
        condition_held(result)
    }

    /// After a pause, lets one job probe the destination until `until`; `false` when another does.
    pub async fn claim_breaker_probe(&self, destination: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let result = self
            .breaker_update(destination)
            .update_expression("SET probe_until = :until")
            .condition_expression("open_until <= :now AND (attribute_not_exists(probe_until) OR probe_until < :now)")
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result)
    }

    /// A probe that could not try (our own failure, or a full share): another job may probe. Only the
    /// claim made until `until` is given up (a later job's claim stays).
    pub async fn release_breaker_probe(&self, destination: &str, until: i64) -> Result<(), StoreError> {
        let result = self
            .breaker_update(destination)
            .update_expression("REMOVE probe_until")
            .condition_expression("probe_until = :mine")
            .expression_attribute_values(":mine", n(until))
            .send()
            .await;
        condition_held(result).map(|_| ())
    }

    /// A call got through: the breaker closes and forgets its failures. An open breaker is closed only
    /// by the success of the probe that holds its claim (`probe`: claimed until then); any other call
    /// may have started before it opened and ended after.
    pub async fn close_breaker(&self, destination: &str, probe: Option<i64>) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(breaker_pk(destination)))
            .key("sk", s("STATE"));
        let delete = match probe {
            Some(until) => {
                delete.condition_expression("probe_until = :mine").expression_attribute_values(":mine", n(until))
            }
            None => delete.condition_expression("attribute_not_exists(open_until)"),
        };
        condition_held(delete.send().await).map(drop)
    }
}

fn minute_key(minute: i64) -> String {
    format!("m{minute}")
}
