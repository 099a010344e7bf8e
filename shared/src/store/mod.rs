//! DynamoDB access. Domain modules call intention-revealing methods (`consume_refresh_token`); the
//! `UpdateItem ... ConditionExpression` plumbing lives here.
//!
//! # The core table
//! One on-demand table, keys `pk` (S) and `sk` (S), TTL attribute `expires_at` (unix seconds; code
//! still checks expiry itself because TTL deletion is lazy). Item types:
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | user | `USER#<user_id>` | `PROFILE` | id, email, email_proven (proven by our emailed link, else asserted by a provider; absent: written before the rule, migrated on first read), email_indexed (the address holds its key), given_name, family_name, role, org_id, created_at, updated_at |
//! | proven email | `EMAIL#<email_key>` | `EMAIL` | user_id (the one account that proved the address; email sign-in and invitations use it) |
//! | asserted email | `ORG_EMAIL#<org_id>#<email_key>` | `EMAIL` | user_id (an address a provider of the organization asserted, held by one account of it; provider logins of that organization link by it) |
//! | external identity | `IDENTITY#<provider>#<external_id>` | `IDENTITY` | user_id, provider, external_id |
//! | user's provider | `USER#<user_id>` | `IDENTITY#<provider>` | external_id (at most one identity per provider and user) |
//! | session (refresh family) | `SESSION#<session_id>` | `SESSION` | user_id, revoked, created_at, expires_at |
//! | refresh token | `REFRESH#<jti>` | `REFRESH` | session_id, user_id, used, expires_at |
//! | rate-limit window | `RATE#<rule>#<key>` | `W#<window start>` | hits, expires_at |
//! | outbox event | `EVENT#<event_id>` | `OUTBOX` | event (JSON), gsi1pk/gsi1sk while pending, published_at, expires_at |
//! | one-time code | `CODE#<sha256 of code>` | `CODE` | user_id, purpose, expires_at, email and next (email sign-in), browser (SHA-256 of the browser's `__Host-hub_login` cookie, or of the sign-in page's CSRF cookie for a browser-bound `next`) |
//! | used token | `USED#<sha256 of token>` | `USED` | expires_at (a single-use token seen before) |
//! | LMS session | `LMS_SESSION#<id>` | `LMS_SESSION` | user_id, provider, external_id, created_at, expires_at |
//! | quest | `QUEST#<quest_id>` | `QUEST` | doc (JSON: title, pillar, lms, tasks), gsi1pk `ORG#<org>#QUESTS`, gsi1sk `<created_at>#<id>` |
//! | LMS mapping | `LMSMAP#<platform>#<course>#<assignment>` | `LMSMAP` | quest_id (one quest per assignment) |
//! | enrollment | `USER#<user_id>` | `Q#<quest_id>` | status, tasks_total, tasks_completed, enrolled_at, completed_at, version |
//! | user task | `USER#<user_id>` | `Q#<quest_id>#TASK#<task_id>` | status, completion_id, completed_at |
//! | evidence | `USER#<user_id>` | `Q#<quest_id>#EVIDENCE#<task_id>` | blocks (JSON), updated_at, submission_key |
//! | XP | `USER#<user_id>` | `XP` | xp_total, `xp#<pillar>`, quests_completed (atomic `ADD`) |
//! | completion | `COMPLETION#<completion_id>` | `COMPLETION` | user_id, quest_id, task_id, organization_id, lms (JSON), grade, graded_at |
//! | badge | `BADGE#<badge_id>` | `BADGE` | doc (JSON), gsi1pk `ORG#<org>#BADGES`, gsi1sk `<created_at>#<id>` |
//! | earned badge | `USER#<user_id>` | `BADGE#<badge_id>` | name, earned_at (written once) |
//! | submission | `SUBMISSION#<source>#<key>` | `SUBMISSION` | user_id, quest_id, task_id, completion_id (idempotency) |
//! | submission job | `SUBMISSION_JOB#<idempotency key>` | `JOB` | submission_id, status (processing, completed, failed), payload (until done), completion_id, error, received_at, finished_at, expires_at |
//! | pending submission | `PENDING#<platform>#<course>#<assignment>` | `<idempotency key>` | platform, course_id, assignment_id, payload, received_at, expires_at, organization_id, gsi1pk `ORG#<org>#PENDING_SUBMISSIONS`, gsi1sk `<received_at>#<key>` |
//! | activity entry | `ORG#<org_id or ->#ACTIVITY` | `<occurred_at>#<event_id>` | event_type, data, expires_at |
//! | webhook subscription | `WEBHOOK#<id>` | `SUBSCRIPTION` | organization_id, url, event_types, description, active, disabled_reason, disabled_at, failing_since, secrets_kid + secrets_blob (sealed), gsi1pk `ORG#<org>#WEBHOOKS`, gsi1sk `<created_at>#<id>` |
//! | Clever district | `CLEVER#DISTRICT#<district_id>` | `DISTRICT` | doc (JSON: name, secret_id), gsi1pk `CLEVER#DISTRICTS` |
//! | Clever school | `CLEVER#SCHOOL#<school_id>` | `SCHOOL` | district_id, name, active, requires_full_sync, baseline_event_id + baseline_at, last_sync_*, consecutive_failures, lease_sync_id + lease_started_at + lease_until (one sync at a time), gsi1pk `CLEVER#DISTRICT#<d>#SCHOOLS` |
//! | Clever sync history | `CLEVER#HISTORY#<school_id>` | `<started_at>#<sync_id>#<entity>` | entity, doc (JSON: counts, status, errors, baseline), expires_at (90 days) |
//! | roster record | `ROSTER#<school_id>#<ENTITY>#<shard 0-7>` | `<clever id>` | district_id, synced_at, `f_<field>` (normalized, non-empty) |
//! | webhook delivery | `DELIVERY#<id>` | `DELIVERY` | subscription_id, organization_id, event_type, event_id, body, status, attempts (JSON each), automatic_attempts, next_attempt_at, lease + lease_until, gsi1pk `ORG#<org>#DELIVERIES`, gsi1sk `<created_at>#<id>`, expires_at |
//! | observer items | invitations, invitation codes, invitees, links, comments | | see [`observers`] |
//! | OAuth items | clients, authorization codes, grants, refresh tokens, consents | | see [`oauth`] |
//! | LTI items | registrations, login states, courses, resource links, grade targets, deep linking sessions | | see [`lti`] |
//! | LTI roster syncs | syncs, course leases, organization slots | | see [`roster_syncs`] |
//! | outbound breakers | one per destination | | see [`breakers`] |
//!
//! Index `gsi1` (`gsi1pk`, `gsi1sk`, all attributes) is sparse: only items listed per organization
//! (quests, badges, webhook subscriptions and deliveries, a student's invitations, by creation time) and pending outbox events
//! (`OUTBOX#PENDING`, `<occurred_at>#<event_id>`) carry its keys, so the relay reads exactly what is
//! left to publish.
//!
//! Access patterns: user by id (get), user by proven email, by an organization's asserted email or by
//! external identity (get the uniqueness item, then the user), refresh token by jti, session by id,
//! window counter by rule+key+window. An account holds at most one email key (`EMAIL#` when proven,
//! `ORG_EMAIL#` when asserted and matchable, none when kept for display only). Uniqueness of email keys
//! and external identities is enforced by the database: the uniqueness item is written with
//! `attribute_not_exists(pk)` in the same transaction as the user, and moved in the same transaction as
//! a change of the user's key.

pub mod badges;
pub mod breakers;
pub mod clever;
pub mod codes;
pub mod cursor;
pub mod learning;
pub mod lti;
pub mod oauth;
pub mod observers;
pub mod outbox;
pub mod pending;
pub mod roster;
pub mod roster_syncs;
pub mod sessions;
pub mod submission_jobs;
pub mod users;
pub mod webhooks;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

pub type Item = HashMap<String, AttributeValue>;

/// A handle on the core table.
#[derive(Clone, Copy)]
pub struct Store<'a> {
    pub client: &'a Client,
    pub table: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub fn from_sdk<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> Self {
        Self(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())
    }
}

impl From<StoreError> for crate::ApiError {
    /// DynamoDB refusing a request as invalid means a value from the caller broke one of its limits
    /// (a key too long, an empty key): that is a bad request, not an outage. Anything else is worth a retry.
    fn from(e: StoreError) -> Self {
        if e.0.contains("ValidationException") {
            tracing::warn!(error = %e, "DynamoDB refused a request as invalid");
            return crate::ApiError::bad_request("invalid_request", "The request names an invalid identifier");
        }
        crate::ApiError::unavailable(e)
    }
}

impl<'a> Store<'a> {
    pub fn new(client: &'a Client, table: &'a str) -> Self {
        Self { client, table }
    }

    /// Reads one item by key (strongly consistent: identity decisions must see the latest write).
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.item)
    }

    /// JSON documents (`doc` attribute) an organization owns of one kind (`QUESTS`, `BADGES`), through
    /// the `gsi1` index (`ORG#<org>#<kind>`, sorted by creation).
    /// Puts a document item: a new one (`seen` none: refused when the key exists), or a change of the
    /// version whose `updated_at` was `seen` (refused when it changed or was deleted meanwhile).
    pub async fn put_versioned(&self, item: Item, seen: Option<i64>) -> Result<(), WriteError> {
        let mut put = self.client.put_item().table_name(self.table).set_item(Some(item));
        put = match seen {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(at) => put.condition_expression("updated_at = :seen").expression_attribute_values(":seen", n(at)),
        };
        match condition_held(put.send().await)? {
            true => Ok(()),
            false => Err(WriteError::Conflict),
        }
    }

    pub async fn organization_documents<T: serde::de::DeserializeOwned>(
        &self,
        organization_id: &str,
        kind: &str,
        newest_first: bool,
        limit: i32,
    ) -> Result<Vec<T>, StoreError> {
        let items = self.organization_items(organization_id, kind, newest_first, limit).await?;
        Ok(items.iter().filter_map(|i| serde_json::from_str(i.str("doc")?).ok()).collect())
    }

    /// The items an organization owns of one kind, through the `gsi1` index.
    pub async fn organization_items(
        &self,
        organization_id: &str,
        kind: &str,
        newest_first: bool,
        limit: i32,
    ) -> Result<Vec<Item>, StoreError> {
        self.index_items(&format!("ORG#{organization_id}#{kind}"), newest_first, Some(limit)).await
    }

    /// The items under one `gsi1` partition key, in sort-key order (one page).
    pub(crate) async fn index_items(
        &self,
        key: &str,
        newest_first: bool,
        limit: Option<i32>,
    ) -> Result<Vec<Item>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :key")
            .expression_attribute_values(":key", s(key))
            .scan_index_forward(!newest_first)
            .set_limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.items.unwrap_or_default())
    }

    /// Every item of one partition whose sort key starts with `prefix` (`None`: the whole partition),
    /// in sort-key order, reading page after page (strongly consistent).
    pub async fn query_all(&self, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(self.table)
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            query = match prefix {
                Some(p) => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(p)),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query.send().await.map_err(StoreError::from_sdk)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// One page of a partition's items under a sort-key prefix, newest (highest key) first, after
    /// `after` (the last key of the previous page).
    pub async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        after: Option<&str>,
        limit: i32,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let start = after.map(|sk| Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))]));
        let out = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| k.str("sk")).map(str::to_string);
        Ok((out.items.unwrap_or_default(), next))
    }

    /// Items by key, in any order (missing ones left out): one `BatchGetItem` per 100 keys, with the
    /// unprocessed keys asked again.
    pub async fn get_many(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> =
                chunk.iter().map(|(pk, sk)| Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])).collect();
            for _ in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(self.table, request)
                    .send()
                    .await
                    .map_err(StoreError::from_sdk)?;
                found.extend(out.responses.and_then(|mut r| r.remove(self.table)).unwrap_or_default());
                pending =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.table)).map(|k| k.keys).unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(StoreError("BatchGetItem left keys unprocessed after retries".into()));
            }
        }
        Ok(found)
    }

    /// The hits a rate-limit window counter holds (0 when none).
    pub async fn window_hits(&self, pk: &str, window_start: i64) -> Result<i64, StoreError> {
        Ok(self.get(pk, &format!("W#{window_start}")).await?.and_then(|i| i.num("hits")).unwrap_or(0))
    }

    /// Adds one hit to a rate-limit window counter and returns the new count (one atomic `ADD`).
    pub async fn count_hit(&self, pk: &str, window_start: i64, expires_at: i64) -> Result<i64, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(pk))
            .key("sk", s(format!("W#{window_start}")))
            .update_expression("ADD hits :one SET expires_at = :exp")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(expires_at))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.attributes.unwrap_or_default().num("hits").unwrap_or(0))
    }

    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), WriteError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) if failed_conditions(&e).is_some() => Err(WriteError::Conflict),
            Err(e) => Err(StoreError::from_sdk(e).into()),
        }
    }

    /// Writes an item, replacing any with its key.
    pub(crate) async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Writes an item unless one with its key exists; `false` when it did.
    pub(crate) async fn put_if_new(&self, item: Item) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        condition_held(result)
    }

    /// A transaction's write of an item, replacing any with its key.
    pub(crate) fn put_item(&self, item: Item) -> TransactWriteItem {
        let put = Put::builder().table_name(self.table).set_item(Some(item)).build().expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    pub(crate) fn put_new_item(&self, item: Item) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item and condition are set");
        TransactWriteItem::builder().put(put).build()
    }
}

/// A write that lost to a uniqueness rule or to a concurrent writer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("conflicting write")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a conditional write: `false` when its condition did not hold (an expected
/// outcome, not an error), `true` when it was written.
pub fn condition_held<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(StoreError::from_sdk(e)),
    }
}

/// Which items of a cancelled transaction failed their condition or lost to a concurrent
/// transaction on the same item (`TransactionConflict`: a concurrent writer won); `None` when the
/// transaction failed for another reason (throttling, a dependency error), which callers must surface.
pub fn failed_conditions(err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>) -> Option<Vec<bool>> {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = err.as_service_error()? else {
        return None;
    };
    let reasons = cancelled.cancellation_reasons();
    let failed: Vec<bool> =
        reasons.iter().map(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict"))).collect();
    failed.iter().any(|f| *f).then_some(failed)
}

/// An `Update` of one attribute set, for transactions elsewhere in the store.
pub(crate) fn update(table: &str, pk: String, sk: &str) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    Update::builder().table_name(table).key("pk", s(pk)).key("sk", s(sk))
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Typed reads of item attributes.
pub trait ItemExt {
    fn str(&self, key: &str) -> Option<&str>;
    fn num(&self, key: &str) -> Option<i64>;
    fn flag(&self, key: &str) -> Option<bool>;
}

impl ItemExt for Item {
    fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_s().ok().map(String::as_str)
    }
    fn num(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_n().ok()?.parse().ok()
    }
    fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool().ok().copied()
    }
}
