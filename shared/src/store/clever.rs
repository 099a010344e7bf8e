//! Clever districts, their schools with sync state, and the sync history.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use super::{Item, ItemExt, Store, StoreError, condition_held, n, s};

/// A district whose Clever credentials we hold (the secret's id, never its value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleverDistrict {
    /// Clever's district id.
    pub id: String,
    pub name: String,
    /// The Secrets Manager secret holding `{"client_id", "client_secret"}`.
    pub secret_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A school of a district, with what the next sync needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CleverSchool {
    /// Clever's school id.
    pub id: String,
    pub district_id: String,
    pub name: String,
    pub active: bool,
    /// The next sync must be a full one (first sync, an admin asked, or the events baseline expired).
    pub requires_full_sync: bool,
    /// Where the next incremental sync reads the district's events feed from: the newest event
    /// already reflected in this school's roster, or `start` (the feed was empty then: read it from
    /// its oldest event). `None`: no events for the district; incremental syncs read the Data API.
    pub baseline_event_id: Option<String>,
    /// When the baseline was last confirmed (unix seconds). Clever keeps events 30 days: an older
    /// baseline means a full sync.
    pub baseline_at: Option<i64>,
    pub last_sync_id: Option<String>,
    pub last_sync_status: Option<String>,
    pub last_sync_at: Option<i64>,
    /// Failed syncs in a row (alarms fire at 3).
    pub consecutive_failures: i64,
    /// Partial syncs in a row (the shrink guard held deletions back; alarms fire at 3).
    pub consecutive_partials: i64,
    /// When Clever stopped listing the school (it is inactive since); `None` while listed.
    pub delisted_at: Option<i64>,
}

/// One entity's part of one school sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncRecord {
    pub sync_id: String,
    pub school_id: String,
    pub district_id: String,
    /// `students`, `teachers` or `sections`.
    pub entity: String,
    /// `full` or `incremental` (`incremental-fallback` without events).
    pub sync_type: String,
    /// `InProgress`, `Success`, `Failed` or `Partial`.
    pub status: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub processed: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub baseline_event_id: Option<String>,
}

/// The baseline value of a feed that was empty when it was taken: read from the oldest event.
pub const BASELINE_START: &str = "start";

/// What a run leaves as a school's events baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaselineUpdate {
    /// As it is (a failed run, or one that moved it page by page already).
    Keep,
    /// None: the district's events are not available.
    Clear,
    /// This event id (or [`BASELINE_START`]), confirmed at this time.
    Set(String, i64),
}

/// How a school's syncs have been going, after the latest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub consecutive_failures: i64,
    pub consecutive_partials: i64,
}

/// The outcome of taking a school's sync lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Ours; `stale` is a run that held it before and never finished; `full_requested`: a full sync
    /// was asked for while another run held the school.
    Taken { stale: Option<StaleRun>, full_requested: bool },
    /// Another run is syncing the school (until `until`).
    Held { sync_id: String, until: i64 },
}

/// A run that took the lease and never gave it back.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleRun {
    pub sync_id: String,
    pub started_at: i64,
}

fn district_pk(id: &str) -> String {
    format!("CLEVER#DISTRICT#{id}")
}
fn school_pk(id: &str) -> String {
    format!("CLEVER#SCHOOL#{id}")
}
fn history_pk(school: &str) -> String {
    format!("CLEVER#HISTORY#{school}")
}

impl Store<'_> {
    /// An update of a school's item (the builder, table and key set).
    fn update_school(
        &self,
        school_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client.update_item().table_name(self.table).key("pk", s(school_pk(school_id))).key("sk", s("SCHOOL"))
    }

    pub async fn put_clever_district(&self, d: &CleverDistrict) -> Result<(), StoreError> {
        let item = Item::from([
            ("pk".into(), s(district_pk(&d.id))),
            ("sk".into(), s("DISTRICT")),
            ("doc".into(), s(serde_json::to_string(d).expect("districts serialize"))),
            ("gsi1pk".into(), s("CLEVER#DISTRICTS")),
            ("gsi1sk".into(), s(&d.id)),
        ]);
        self.put(item).await
    }

    pub async fn clever_district(&self, id: &str) -> Result<Option<CleverDistrict>, StoreError> {
        Ok(self.get(&district_pk(id), "DISTRICT").await?.and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }

    pub async fn clever_districts(&self) -> Result<Vec<CleverDistrict>, StoreError> {
        let items = self.index_items("CLEVER#DISTRICTS", false, None).await?;
        Ok(items.iter().filter_map(|i| serde_json::from_str(i.str("doc")?).ok()).collect())
    }

    /// Records a school Clever lists for a district; a known school keeps its sync state, a new one
    /// starts active and needing a full sync.
    pub async fn upsert_clever_school(&self, district_id: &str, id: &str, name: &str) -> Result<(), StoreError> {
        self.update_school(id)
            .update_expression(
                "SET #name = :name, district_id = :district, gsi1pk = :index, gsi1sk = :id, \
                 active = if_not_exists(active, :on), requires_full_sync = if_not_exists(requires_full_sync, :on), \
                 consecutive_failures = if_not_exists(consecutive_failures, :zero)",
            )
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":district", s(district_id))
            .expression_attribute_values(":index", s(format!("CLEVER#DISTRICT#{district_id}#SCHOOLS")))
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":on", AttributeValue::Bool(true))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// A school Clever no longer lists: inactive (not queued, not synced) from now on.
    pub async fn delist_clever_school(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.update_school(id)
            .update_expression("SET active = :off, delisted_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":off", AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map(drop)
            .or_else(|e| condition_held(Err::<(), _>(e)).map(drop))
    }

    /// A delisted school Clever lists again: active, with a full sync (its roster may be far behind).
    pub async fn relist_clever_school(&self, id: &str) -> Result<(), StoreError> {
        self.update_school(id)
            .update_expression("SET active = :on, requires_full_sync = :on REMOVE delisted_at")
            .condition_expression("attribute_exists(delisted_at)")
            .expression_attribute_values(":on", AttributeValue::Bool(true))
            .send()
            .await
            .map(drop)
            .or_else(|e| condition_held(Err::<(), _>(e)).map(drop))
    }

    pub async fn clever_school(&self, id: &str) -> Result<Option<CleverSchool>, StoreError> {
        Ok(self.get(&school_pk(id), "SCHOOL").await?.as_ref().and_then(|i| school_from(id, i)))
    }

    pub async fn clever_schools(&self, district_id: &str) -> Result<Vec<CleverSchool>, StoreError> {
        let items = self.index_items(&format!("CLEVER#DISTRICT#{district_id}#SCHOOLS"), false, None).await?;
        Ok(items.iter().filter_map(|i| school_from(i.str("gsi1sk")?, i)).collect())
    }

    /// Asks for a full sync next time (an admin's request, or an expired events baseline).
    pub async fn require_full_sync(&self, school_id: &str) -> Result<(), StoreError> {
        self.set_school_flag(school_id, "requires_full_sync").await
    }

    /// Sets a flag attribute of a known school.
    async fn set_school_flag(&self, school_id: &str, flag: &'static str) -> Result<(), StoreError> {
        self.update_school(school_id)
            .update_expression("SET #flag = :on")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#flag", flag)
            .expression_attribute_values(":on", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Records how a school's sync ended: its status, the events baseline, and the full-sync flag
    /// (`Some(true)`: a full sync is still needed, `Some(false)`: done), and gives the sync lease back.
    /// Returns the failures and partial runs in a row.
    pub async fn finish_school_sync(
        &self,
        school_id: &str,
        sync_id: &str,
        status: &str,
        at: i64,
        baseline: &BaselineUpdate,
        requires_full_sync: Option<bool>,
    ) -> Result<RunCounts, StoreError> {
        let failed = status == "Failed";
        let mut expression = "SET last_sync_id = :sync, last_sync_status = :status, last_sync_at = :at".to_string();
        expression.push_str(if failed {
            ", consecutive_failures = if_not_exists(consecutive_failures, :zero) + :one"
        } else {
            ", consecutive_failures = :zero"
        });
        // A Partial run (the shrink guard held deletions back) is not a failure, but night after
        // night it means the school never gets in sync: counted so it can raise an alarm.
        expression.push_str(match status {
            "Partial" => ", consecutive_partials = if_not_exists(consecutive_partials, :zero) + :one",
            "Success" => ", consecutive_partials = :zero",
            _ => "",
        });
        let mut request = self
            .update_school(school_id)
            .expression_attribute_values(":sync", s(sync_id))
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::AllNew);
        if failed || status == "Partial" {
            request = request.expression_attribute_values(":one", n(1));
        }
        if let BaselineUpdate::Set(baseline, confirmed_at) = baseline {
            expression.push_str(", baseline_event_id = :baseline, baseline_at = :baseline_at");
            request = request
                .expression_attribute_values(":baseline", s(baseline))
                .expression_attribute_values(":baseline_at", n(*confirmed_at));
        }
        if let Some(flag) = requires_full_sync {
            expression.push_str(", requires_full_sync = :full");
            request = request.expression_attribute_values(":full", AttributeValue::Bool(flag));
        }
        expression.push_str(" REMOVE lease_sync_id, lease_started_at, lease_until");
        if *baseline == BaselineUpdate::Clear {
            expression.push_str(", baseline_event_id, baseline_at");
        }
        let out = request.update_expression(expression).send().await.map_err(StoreError::from_sdk)?;
        let item = out.attributes.unwrap_or_default();
        Ok(RunCounts {
            consecutive_failures: item.num("consecutive_failures").unwrap_or(0),
            consecutive_partials: item.num("consecutive_partials").unwrap_or(0),
        })
    }

    /// Moves the school's events baseline to `event_id` once a page of events is applied, so a run that
    /// fails later resumes there. Only the lease holder moves it; returns whether `sync_id` still holds it.
    pub async fn checkpoint_baseline(
        &self,
        school_id: &str,
        sync_id: &str,
        event_id: &str,
        confirmed_at: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_school(school_id)
            .update_expression("SET baseline_event_id = :baseline, baseline_at = :at")
            .condition_expression("lease_sync_id = :sync")
            .expression_attribute_values(":baseline", s(event_id))
            .expression_attribute_values(":at", n(confirmed_at))
            .expression_attribute_values(":sync", s(sync_id))
            .send()
            .await;
        condition_held(result)
    }

    /// Takes the school's sync lease until `until` (one sync per school at a time). A lease left by a
    /// run that never finished (killed by the Lambda timeout) is taken over once expired, and returned
    /// as `stale` so that run can be recorded as failed.
    pub async fn take_school_lease(
        &self,
        school_id: &str,
        sync_id: &str,
        now: i64,
        until: i64,
    ) -> Result<Lease, StoreError> {
        let result = self
            .update_school(school_id)
            .update_expression(
                "SET lease_sync_id = :sync, lease_started_at = :now, lease_until = :until REMOVE full_sync_asked",
            )
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now)")
            .expression_attribute_values(":sync", s(sync_id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":until", n(until))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let stale = match (old.str("lease_sync_id"), old.num("lease_started_at")) {
                    (Some(id), Some(started_at)) => Some(StaleRun { sync_id: id.to_string(), started_at }),
                    _ => None,
                };
                Ok(Lease::Taken { stale, full_requested: old.flag("full_sync_asked").unwrap_or(false) })
            }
            Err(e) => {
                condition_held(Err::<(), _>(e))?;
                let item = self.get(&school_pk(school_id), "SCHOOL").await?.unwrap_or_default();
                Ok(Lease::Held {
                    sync_id: item.str("lease_sync_id").unwrap_or_default().to_string(),
                    until: item.num("lease_until").unwrap_or(0),
                })
            }
        }
    }

    /// A full sync asked for while another run holds the school: the next run to take the lease is a
    /// full one (the running one's end would clear `requires_full_sync`).
    pub async fn ask_full_sync_next(&self, school_id: &str) -> Result<(), StoreError> {
        self.set_school_flag(school_id, "full_sync_asked").await
    }

    /// Records a run that never finished as failed (one more failure in a row), leaving the lease
    /// (now the next run's) alone. Returns the failures in a row.
    pub async fn record_stale_sync(&self, school_id: &str, sync_id: &str, at: i64) -> Result<i64, StoreError> {
        let out = self
            .update_school(school_id)
            .update_expression(
                "SET last_sync_id = :sync, last_sync_status = :failed, last_sync_at = :at, \
                 consecutive_failures = if_not_exists(consecutive_failures, :zero) + :one",
            )
            .expression_attribute_values(":sync", s(sync_id))
            .expression_attribute_values(":failed", s("Failed"))
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out.attributes.unwrap_or_default().num("consecutive_failures").unwrap_or(0))
    }

    /// Gives the lease back (a run that could not finish its bookkeeping); only if it is still ours.
    pub async fn release_school_lease(&self, school_id: &str, sync_id: &str) -> Result<(), StoreError> {
        let result = self
            .update_school(school_id)
            .update_expression("REMOVE lease_sync_id, lease_started_at, lease_until")
            .condition_expression("lease_sync_id = :sync")
            .expression_attribute_values(":sync", s(sync_id))
            .send()
            .await;
        condition_held(result).map(|_| ())
    }

    /// The history records of one run (found around the time it started).
    pub async fn sync_run_records(
        &self,
        school_id: &str,
        sync_id: &str,
        started_at: i64,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        let records = self.sync_history(school_id, started_at - 60, started_at + 60, None, 100).await?;
        Ok(records.into_iter().filter(|r| r.sync_id == sync_id).collect())
    }

    /// Writes (or rewrites, when it ends) one entity's history record.
    pub async fn put_sync_record(&self, r: &SyncRecord, retention_secs: i64) -> Result<(), StoreError> {
        let item = Item::from([
            ("pk".into(), s(history_pk(&r.school_id))),
            ("sk".into(), s(format!("{:012}#{}#{}", r.started_at, r.sync_id, r.entity))),
            ("entity".into(), s(&r.entity)),
            ("doc".into(), s(serde_json::to_string(r).expect("records serialize"))),
            ("expires_at".into(), n(r.started_at + retention_secs)),
        ]);
        self.put(item).await
    }

    /// A school's history between two times (unix seconds), newest first, optionally for one entity.
    pub async fn sync_history(
        &self,
        school_id: &str,
        from: i64,
        to: i64,
        entity: Option<&str>,
        limit: i32,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(history_pk(school_id)))
            .expression_attribute_values(":from", s(format!("{:012}", from.max(0))))
            .expression_attribute_values(":to", s(format!("{:012}~", to.clamp(0, 999_999_999_999))))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(entity) = entity {
            query = query.filter_expression("entity = :entity").expression_attribute_values(":entity", s(entity));
        }
        let out = query.send().await.map_err(StoreError::from_sdk)?;
        Ok(out.items().iter().filter_map(|i| serde_json::from_str(i.str("doc")?).ok()).collect())
    }
}

fn school_from(id: &str, i: &Item) -> Option<CleverSchool> {
    Some(CleverSchool {
        id: id.to_string(),
        district_id: i.str("district_id")?.to_string(),
        name: i.str("name").unwrap_or_default().to_string(),
        active: i.flag("active").unwrap_or(true),
        requires_full_sync: i.flag("requires_full_sync").unwrap_or(true),
        baseline_event_id: i.str("baseline_event_id").map(str::to_string),
        // Baselines stored before `baseline_at` existed were confirmed by their school's last sync.
        baseline_at: i.num("baseline_at").or_else(|| i.str("baseline_event_id").and(i.num("last_sync_at"))),
        last_sync_id: i.str("last_sync_id").map(str::to_string),
        last_sync_status: i.str("last_sync_status").map(str::to_string),
        last_sync_at: i.num("last_sync_at"),
        consecutive_failures: i.num("consecutive_failures").unwrap_or(0),
        consecutive_partials: i.num("consecutive_partials").unwrap_or(0),
        delisted_at: i.num("delisted_at"),
    })
}
