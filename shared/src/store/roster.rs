//! Clever roster records, isolated per school.
//!
//! Every roster key starts with its school: `ROSTER#<school>#<entity>#<shard>` / `<clever id>`, and the
//! only way in is a [`SchoolRoster`] bound to one (district, school); nothing reads across schools, so the
//! same Clever id in two schools is two independent records. Each (school, entity) is spread over
//! [`SHARDS`] partitions by a hash of the id, so a 10,000-student school is read and written in parallel
//! instead of through one partition's throughput.
//!
//! Writes go in `BatchWriteItem`s of 25, sent in waves whose size adapts to DynamoDB (additive
//! increase, multiplicative decrease): a wave that meets throttling (unprocessed items, or a throughput
//! error after the SDK's own retries) halves the number of batches in flight and waits a jittered,
//! growing backoff; a clean wave adds one. The first onboarding of many schools at once against a new
//! on-demand table is slowed down, not failed; a sync gives up only after spending its throttle budget
//! waiting. Every write is counted for the sync report.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};

use super::{Item, ItemExt, Store, StoreError, s};
use crate::support::crypto;

/// Partitions per (school, entity).
pub const SHARDS: u32 = 8;
/// Batches in flight at the start of a sync, and the most and fewest the pacer goes to.
const START_CONCURRENCY: usize = 8;
const MAX_CONCURRENCY: usize = 16;
/// The longest single backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How hard a sync writes: adapted to DynamoDB's answers (see the module doc).
#[derive(Debug)]
struct Pacer {
    concurrency: usize,
    /// Throttled waves in a row (the backoff's exponent).
    streak: u32,
    waited: Duration,
    throttled_waves: u64,
    min_concurrency: usize,
}

impl Pacer {
    fn new() -> Self {
        Self {
            concurrency: START_CONCURRENCY,
            streak: 0,
            waited: Duration::ZERO,
            throttled_waves: 0,
            min_concurrency: START_CONCURRENCY,
        }
    }

    /// A clean wave: one more batch in flight next time.
    fn clean(&mut self) {
        self.concurrency = (self.concurrency + 1).min(MAX_CONCURRENCY);
        self.streak = 0;
    }

    /// A throttled wave: half as many batches in flight, and how long to wait first (full jitter over
    /// `base × 2^streak`, at most [`MAX_BACKOFF`]); `None` once the budget is spent.
    fn throttled(&mut self, base: Duration, budget: Duration) -> Option<Duration> {
        self.concurrency = (self.concurrency / 2).max(1);
        self.min_concurrency = self.min_concurrency.min(self.concurrency);
        self.throttled_waves += 1;
        let ceiling = (base * 2u32.pow(self.streak.min(16))).min(MAX_BACKOFF);
        self.streak += 1;
        let wait = ceiling.mul_f64(rand::random::<f64>());
        if self.waited + wait > budget {
            return None;
        }
        self.waited += wait;
        Some(wait)
    }
}

/// Whether a DynamoDB error is DynamoDB asking us to slow down (or a transient fault): retried by
/// the pacer. Anything else (validation, access) fails at once.
fn is_throttling<E: ProvideErrorMetadata, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool {
    use aws_sdk_dynamodb::error::SdkError;
    match err {
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    }
}

/// One roster record as stored: its Clever id and normalized fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterRecord {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

/// The roster of one school of one district.
pub struct SchoolRoster<'a> {
    store: Store<'a>,
    pub district_id: String,
    pub school_id: String,
    backoff_base: Duration,
    throttle_budget: Duration,
    writes: AtomicU64,
    pacer: Mutex<Pacer>,
}

/// What throttling did to a sync's writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Waves (or reads) DynamoDB throttled.
    pub throttled: u64,
    /// The fewest batches the pacer had in flight.
    pub min_concurrency: usize,
}

impl<'a> SchoolRoster<'a> {
    /// `backoff_base`: the first backoff after throttling (then doubled, jittered, at most 20 s);
    /// `throttle_budget`: how long a sync may spend waiting for DynamoDB before it fails.
    pub fn new(
        store: Store<'a>,
        district_id: &str,
        school_id: &str,
        backoff_base: Duration,
        throttle_budget: Duration,
    ) -> Self {
        Self {
            store,
            district_id: district_id.to_string(),
            school_id: school_id.to_string(),
            backoff_base,
            throttle_budget,
            writes: AtomicU64::new(0),
            pacer: Mutex::new(Pacer::new()),
        }
    }

    /// DynamoDB items written or deleted through this handle.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// How often DynamoDB throttled this handle's requests.
    pub fn throttling(&self) -> Throttling {
        let pacer = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
        Throttling { throttled: pacer.throttled_waves, min_concurrency: pacer.min_concurrency }
    }

    /// Records throttling and waits the pacer's backoff; an error once the throttle budget is spent.
    async fn slow_down(&self, what: &str) -> Result<(), StoreError> {
        let (wait, concurrency) = {
            let mut pacer = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
            (pacer.throttled(self.backoff_base, self.throttle_budget), pacer.concurrency)
        };
        let Some(wait) = wait else {
            return Err(StoreError(format!(
                "DynamoDB throttled roster {what} for longer than {} s; the sync stopped",
                self.throttle_budget.as_secs()
            )));
        };
        tracing::warn!(
            school_id = self.school_id,
            concurrency,
            wait_ms = wait.as_millis() as u64,
            "roster {what} throttled; slowing down"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn pk(&self, entity: &str, id: &str) -> String {
        let shard = u32::from(crypto::sha256_hex(id.as_bytes()).as_bytes()[0]) % SHARDS;
        format!("ROSTER#{}#{entity}#{shard}", self.school_id)
    }

    /// Every record of one entity (`STUDENT`, `TEACHER`, `SECTION`), by id.
    pub async fn load(&self, entity: &str) -> Result<HashMap<String, RosterRecord>, StoreError> {
        let shards = (0..SHARDS).map(|shard| self.load_shard(format!("ROSTER#{}#{entity}#{shard}", self.school_id)));
        let mut all = HashMap::new();
        for records in futures_util::future::try_join_all(shards).await? {
            all.extend(records.into_iter().map(|r| (r.id.clone(), r)));
        }
        Ok(all)
    }

    async fn load_shard(&self, pk: String) -> Result<Vec<RosterRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .store
                .client
                .query()
                .table_name(self.store.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            records.extend(out.items().iter().filter_map(record_from));
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(records),
            }
        }
    }

    /// The stored records among `ids` (for incremental changes).
    pub async fn get_many(&self, entity: &str, ids: &[String]) -> Result<HashMap<String, RosterRecord>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| Item::from([("pk".into(), s(self.pk(entity, id))), ("sk".into(), s(id))]))
                .collect();
            let mut request = Some(
                aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?,
            );
            while let Some(keys) = request.take() {
                let out =
                    match self.store.client.batch_get_item().request_items(self.store.table, keys.clone()).send().await
                    {
                        Ok(out) => out,
                        Err(e) if is_throttling(&e) => {
                            self.slow_down("reads").await?;
                            request = Some(keys);
                            continue;
                        }
                        Err(e) => return Err(StoreError::from_sdk(e)),
                    };
                for item in out.responses().and_then(|r| r.get(self.store.table)).into_iter().flatten() {
                    if let Some(r) = record_from(item) {
                        found.insert(r.id.clone(), r);
                    }
                }
                request =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.store.table)).filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    self.slow_down("reads").await?;
                }
            }
        }
        Ok(found)
    }

    /// Writes records (new or changed) of one entity.
    pub async fn put(&self, entity: &str, records: &[RosterRecord], now: i64) -> Result<(), StoreError> {
        self.write_all(records, |r| {
            let mut item = Item::from([
                ("pk".into(), s(self.pk(entity, &r.id))),
                ("sk".into(), s(&r.id)),
                ("district_id".into(), s(&self.district_id)),
                ("synced_at".into(), super::n(now)),
            ]);
            // Empty values are not stored: absent, null, empty and blank are the same value.
            for (k, v) in r.fields.iter().filter(|(_, v)| !v.is_empty()) {
                item.insert(format!("f_{k}"), s(v));
            }
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item set"))
                .build()
        })
        .await
    }

    /// Deletes records of one entity by id.
    pub async fn delete(&self, entity: &str, ids: &[String]) -> Result<(), StoreError> {
        self.write_all(ids, |id| {
            let key = Item::from([("pk".into(), s(self.pk(entity, id))), ("sk".into(), s(id))]);
            WriteRequest::builder()
                .delete_request(DeleteRequest::builder().set_key(Some(key)).build().expect("key set"))
                .build()
        })
        .await
    }

    /// Writes in batches of 25, in waves of as many batches as the pacer allows. A batch's requests are
    /// built only when it is first sent, so memory holds a few batches, not the whole roster as
    /// requests; what DynamoDB leaves unprocessed goes back to the front of the queue.
    async fn write_all<T>(&self, values: &[T], request: impl Fn(&T) -> WriteRequest) -> Result<(), StoreError> {
        let mut fresh = values.chunks(25);
        let mut retries: VecDeque<Vec<WriteRequest>> = VecDeque::new();
        loop {
            let concurrency = self.pacer.lock().unwrap_or_else(|p| p.into_inner()).concurrency;
            let mut wave = Vec::with_capacity(concurrency);
            while wave.len() < concurrency {
                match retries.pop_front().or_else(|| fresh.next().map(|chunk| chunk.iter().map(&request).collect())) {
                    Some(batch) => wave.push(batch),
                    None => break,
                }
            }
            if wave.is_empty() {
                return Ok(());
            }
            let mut throttled = false;
            for outcome in futures_util::future::join_all(wave.into_iter().map(|batch| self.write_batch(batch))).await {
                if let Some(left) = outcome? {
                    retries.push_back(left);
                    throttled = true;
                }
            }
            if throttled {
                self.slow_down("writes").await?;
            } else {
                self.pacer.lock().unwrap_or_else(|p| p.into_inner()).clean();
            }
        }
    }

    /// Sends one batch; returns what DynamoDB did not write because it was throttled (to retry), or
    /// fails on any other error.
    async fn write_batch(&self, batch: Vec<WriteRequest>) -> Result<Option<Vec<WriteRequest>>, StoreError> {
        let count = batch.len() as u64;
        match self.store.client.batch_write_item().request_items(self.store.table, batch.clone()).send().await {
            Ok(out) => {
                let left = out.unprocessed_items.and_then(|mut u| u.remove(self.store.table)).unwrap_or_default();
                self.writes.fetch_add(count - left.len() as u64, Ordering::Relaxed);
                Ok((!left.is_empty()).then_some(left))
            }
            Err(e) if is_throttling(&e) => Ok(Some(batch)),
            Err(e) => Err(StoreError::from_sdk(e)),
        }
    }
}

fn record_from(item: &Item) -> Option<RosterRecord> {
    let id = item.str("sk")?.to_string();
    let fields =
        item.iter().filter_map(|(k, v)| Some((k.strip_prefix("f_")?.to_string(), v.as_s().ok()?.clone()))).collect();
    Some(RosterRecord { id, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_halves_on_throttling_grows_when_clean_and_stops_at_its_budget() {
        let mut pacer = Pacer::new();
        let base = Duration::from_millis(100);
        let wait = pacer.throttled(base, Duration::from_secs(60)).unwrap();
        assert!(wait <= base);
        assert_eq!(pacer.concurrency, START_CONCURRENCY / 2);
        assert!(pacer.throttled(base, Duration::from_secs(60)).unwrap() <= base * 2, "the ceiling doubles");
        for _ in 0..10 {
            pacer.throttled(base, Duration::from_secs(3600));
        }
        assert_eq!((pacer.concurrency, pacer.min_concurrency), (1, 1), "never below one batch");
        pacer.clean();
        assert_eq!((pacer.concurrency, pacer.streak), (2, 0));
        for _ in 0..40 {
            pacer.clean();
        }
        assert_eq!(pacer.concurrency, MAX_CONCURRENCY);
        // Past the budget: no more waiting.
        let mut spent = Pacer::new();
        assert!(spent.throttled(Duration::from_secs(20), Duration::ZERO).is_none_or(|w| w.is_zero()));
    }
}
