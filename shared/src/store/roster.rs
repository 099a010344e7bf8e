//! Clever roster records, isolated per school.
//!
//! Every roster key starts with its school: `ROSTER#<school>#<entity>#<shard>` / `<clever id>`, and the
//! only way in is a [`SchoolRoster`] bound to one (district, school); nothing reads across schools, so the
//! same Clever id in two schools is two independent records. Each (school, entity) is spread over
//! [`SHARDS`] partitions by a hash of the id, so a 10,000-student school is read and written in parallel
//! instead of through one partition's throughput.
//!
//! Writes go in `BatchWriteItem`s of 25; unprocessed items and throttling are retried with backoff
//! (3 retries: 1, 2, 4 s by default), and every write is counted for the sync report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use futures_util::StreamExt;

use super::{Item, ItemExt, Store, StoreError, s};
use crate::crypto;

/// Partitions per (school, entity).
pub const SHARDS: u32 = 8;
/// Concurrent batch writes of one sync.
const WRITE_CONCURRENCY: usize = 8;

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
    retry_base: Duration,
    retries: u32,
    writes: AtomicU64,
}

impl<'a> SchoolRoster<'a> {
    pub fn new(store: Store<'a>, district_id: &str, school_id: &str, retry_base: Duration, retries: u32) -> Self {
        Self {
            store,
            district_id: district_id.to_string(),
            school_id: school_id.to_string(),
            retry_base,
            retries,
            writes: AtomicU64::new(0),
        }
    }

    /// DynamoDB items written or deleted through this handle.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
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
            let mut attempt = 0;
            while let Some(keys) = request.take() {
                let out = self
                    .store
                    .client
                    .batch_get_item()
                    .request_items(self.store.table, keys)
                    .send()
                    .await
                    .map_err(StoreError::from_sdk)?;
                for item in out.responses().and_then(|r| r.get(self.store.table)).into_iter().flatten() {
                    if let Some(r) = record_from(item) {
                        found.insert(r.id.clone(), r);
                    }
                }
                request =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.store.table)).filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    attempt += 1;
                    if attempt > self.retries {
                        return Err(StoreError("unprocessed keys after retries".into()));
                    }
                    tokio::time::sleep(self.retry_base * 2u32.pow(attempt - 1)).await;
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

    /// Writes in batches of 25, [`WRITE_CONCURRENCY`] at a time; a batch's requests are built only when
    /// it is sent, so memory holds a few batches, not the whole roster as requests.
    async fn write_all<T>(&self, values: &[T], request: impl Fn(&T) -> WriteRequest) -> Result<(), StoreError> {
        let request = &request;
        // Batches by start index (a closure over borrowed slices would not be `Send` for every lifetime).
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter((0..values.len()).step_by(25))
            .map(|start| self.write_chunk(&values[start..(start + 25).min(values.len())], request))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn write_chunk<T>(&self, chunk: &[T], request: &impl Fn(&T) -> WriteRequest) -> Result<(), StoreError> {
        self.write_batch(chunk.iter().map(request).collect()).await
    }

    /// One batch, retrying unprocessed items and throttling with exponential backoff.
    async fn write_batch(&self, mut batch: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            let count = batch.len() as u64;
            let result =
                self.store.client.batch_write_item().request_items(self.store.table, batch.clone()).send().await;
            let failure = match result {
                Ok(out) => {
                    let left = out.unprocessed_items.and_then(|mut u| u.remove(self.store.table)).unwrap_or_default();
                    self.writes.fetch_add(count - left.len() as u64, Ordering::Relaxed);
                    if left.is_empty() {
                        return Ok(());
                    }
                    batch = left;
                    "unprocessed items".to_string()
                }
                Err(e) => StoreError::from_sdk(e).0,
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(StoreError(format!("roster write failed after {} retries: {failure}", self.retries)));
            }
            tracing::warn!(school_id = self.school_id, attempt, error = failure, "roster write retried");
            tokio::time::sleep(self.retry_base * 2u32.pow(attempt - 1)).await;
        }
    }
}

fn record_from(item: &Item) -> Option<RosterRecord> {
    let id = item.str("sk")?.to_string();
    let fields =
        item.iter().filter_map(|(k, v)| Some((k.strip_prefix("f_")?.to_string(), v.as_s().ok()?.clone()))).collect();
    Some(RosterRecord { id, fields })
}
