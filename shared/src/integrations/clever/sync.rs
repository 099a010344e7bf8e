//! Syncing one school's roster from Clever.
//!
//! - **Full** (asked for, first sync, or `requires_full_sync`): the district's newest event id is taken
//!   *before* fetching, so nothing that happens during the fetch is missed later (an empty feed is a
//!   baseline too: `start`; a refusal of the events call means the district has no events: no
//!   baseline, the sync goes on); then every student, teacher and section is fetched. Only when every
//!   page of every entity arrived are records written (new and changed ones only) and records Clever
//!   no longer lists deleted, so a sync failing midway changes nothing. The shrink guard refuses to
//!   delete more than a share (50 %) of an entity in one run unless forced, and says so in the history
//!   (status `Partial`). Success stores the baseline and clears the full-sync flag.
//! - **Incremental**: the baseline is checked first (confirmed within Clever's 30-day window, and
//!   `GET /events/{id}` still answers; any refusal means a full sync), then the school's events after
//!   it are applied a page at a time, oldest first (memory holds one page, however long the feed):
//!   created and updated records are written when they really changed; deletions wait for the next
//!   full sync. After each page the baseline moves to its last event (only while this run holds the
//!   school), so a run that fails resumes there. At the end the baseline is the district's newest
//!   event, so a school that was quiet for a month keeps a live baseline.
//! - **Fallback** (no baseline: the district's events were not available): the Data API with change
//!   detection and no deletions; it probes the events feed first and leaves a baseline once events
//!   are available, so the next run is a real incremental one.
//!
//! Each run writes one history record per entity (`InProgress` at the start, the outcome at the end).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::client::{CleverClient, CleverError};
use super::events::{PageChanges, page_changes};
use super::roster::{Entity, changed};
pub use super::summary::SyncOutcome;
use super::summary::{self, Summary};
use crate::store::clever::{BASELINE_START, BaselineUpdate, CleverSchool, Lease, StaleRun, SyncRecord};
use crate::store::roster::{RosterRecord, SchoolRoster};
use crate::{Context, support::crypto};

/// How long a sync holds its school: longer than the worker can run (Lambda stops it at 15 minutes),
/// so a live run is never taken over, and a killed one is within a minute after.
pub const LEASE_SECS: i64 = 16 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Incremental,
}

/// Why a school sync could not run at all (its history says why an entity failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SyncError(pub String);

struct Run<'a> {
    ctx: &'a Context,
    client: &'a CleverClient,
    school: &'a CleverSchool,
    roster: SchoolRoster<'a>,
    records: Vec<SyncRecord>,
    /// When the run started (a baseline it sets is confirmed as of then).
    started: i64,
    unmapped: BTreeMap<Entity, BTreeSet<String>>,
}

/// How a run ended, for the school's bookkeeping.
struct Ended {
    baseline: BaselineUpdate,
    /// It was a full sync (asked again until one succeeds).
    full: bool,
}

/// Syncs one school; `force` lets a full sync delete past the shrink guard.
pub async fn sync_school(
    ctx: &Context,
    client: &CleverClient,
    school: &CleverSchool,
    requested: Mode,
    force: bool,
) -> Result<SyncOutcome, SyncError> {
    // Time-ordered ids, so runs of the same second sort in the order they started.
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let sync_id = format!("sync_{millis:013}_{}", crypto::random_token(6));
    let store = ctx.store();
    let now = ctx.clock.now();
    let (stale, full_requested) = match store
        .take_school_lease(&school.id, &sync_id, now, now + LEASE_SECS)
        .await
        .map_err(|e| SyncError(e.to_string()))?
    {
        Lease::Taken { stale, full_requested } => (stale, full_requested),
        Lease::Held { sync_id: running, until } => {
            tracing::warn!(school_id = school.id, running, until, "sync skipped: the school is being synced");
            // A full sync asked for meanwhile (an admin's, a relisted school's) is not lost: the next
            // run is a full one.
            if requested == Mode::Full {
                store.ask_full_sync_next(&school.id).await.map_err(|e| SyncError(e.to_string()))?;
            }
            return Ok(SyncOutcome {
                sync_id,
                status: "Skipped".into(),
                records: Vec::new(),
                clever_requests: 0,
                roster_writes: 0,
                write_throttles: 0,
                unmapped_fields: BTreeMap::new(),
            });
        }
    };
    if let Some(stale) = stale {
        record_stale(ctx, school, &stale).await?;
    }
    let requested = if full_requested { Mode::Full } else { requested };
    match run_sync(ctx, client, school, requested, force, &sync_id).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Not finished: the lease goes back so the queue's retry can run.
            if let Err(release) = store.release_school_lease(&school.id, &sync_id).await {
                tracing::warn!(school_id = school.id, error = %release, "sync lease not released; it expires on its own");
            }
            Err(e)
        }
    }
}

/// What the history and the summary say of a run that was killed.
const STOPPED: &str = "the run stopped before it finished (Lambda timeout or crash); found by the next run";

/// A run that took the school and never finished (the Lambda timeout killed it): its records still
/// `InProgress` become `Failed`, and the school counts one more failure.
async fn record_stale(ctx: &Context, school: &CleverSchool, stale: &StaleRun) -> Result<(), SyncError> {
    let store = ctx.store();
    let fail = |e: crate::store::StoreError| SyncError(e.to_string());
    let now = ctx.clock.now();
    let retention = ctx.config.clever_sync.history_retention.as_secs() as i64;
    for mut record in store.sync_run_records(&school.id, &stale.sync_id, stale.started_at).await.map_err(fail)? {
        if record.status == "InProgress" {
            record.status = "Failed".into();
            record.ended_at = Some(now);
            record.errors.push(STOPPED.into());
            store.put_sync_record(&record, retention).await.map_err(fail)?;
        }
    }
    let failures = store.record_stale_sync(&school.id, &stale.sync_id, now).await.map_err(fail)?;
    tracing::error!(
        alert = "clever_sync_stale",
        school_id = school.id,
        stale_sync_id = stale.sync_id,
        consecutive_failures = failures,
        "a previous sync never finished: recorded as failed"
    );
    summary::publish(ctx, &Summary::of_event(school, &stale.sync_id, "Failed", now, STOPPED)).await;
    Ok(())
}

async fn run_sync(
    ctx: &Context,
    client: &CleverClient,
    school: &CleverSchool,
    requested: Mode,
    force: bool,
    sync_id: &str,
) -> Result<SyncOutcome, SyncError> {
    let sync_id = sync_id.to_string();
    let requests_before = client.requests_made();
    let full = requested == Mode::Full || school.requires_full_sync;
    let roster = SchoolRoster::new(
        ctx.store(),
        &school.district_id,
        &school.id,
        ctx.config.clever_sync.write_retry_base,
        ctx.config.clever_sync.write_throttle_budget,
    );
    let started = ctx.clock.now();
    let timer = std::time::Instant::now();
    let mut run = Run { ctx, client, school, roster, records: Vec::new(), started, unmapped: BTreeMap::new() };
    tracing::info!(district_id = school.district_id, school_id = school.id, sync_id, full, "school sync started");
    let ended = match (full, school.baseline_event_id.as_deref()) {
        (true, _) => run.full(&sync_id, force).await?,
        (false, None) => run.data_api_fallback(&sync_id).await?,
        (false, Some(baseline)) => run.incremental(&sync_id, baseline, school.baseline_at, force).await?,
    };
    let status = overall(&run.records);
    // A failed run leaves the baseline where it is (an incremental one moved it page by page). A full
    // sync that did not fully succeed (failed, or held back by the shrink guard) is asked for again.
    let baseline = if status == "Failed" { BaselineUpdate::Keep } else { ended.baseline };
    let requires_full_sync = ended.full.then_some(status != "Success");
    let failures = ctx
        .store()
        .finish_school_sync(&school.id, &sync_id, &status, ctx.clock.now(), &baseline, requires_full_sync)
        .await
        .map_err(|e| SyncError(e.to_string()))?;
    let figures = crate::integrations::clever::metrics::RunFigures {
        counts: failures,
        duration_secs: timer.elapsed().as_secs_f64(),
        processed: run.records.iter().map(|r| r.processed).sum(),
        changed: run.records.iter().map(|r| r.created + r.updated + r.deleted).sum(),
    };
    crate::integrations::clever::metrics::school_synced(school, &status, figures);
    let unmapped_fields: BTreeMap<String, BTreeSet<String>> =
        std::mem::take(&mut run.unmapped).into_iter().map(|(e, fields)| (e.plural().to_string(), fields)).collect();
    if !unmapped_fields.is_empty() {
        // Clever added fields: mapped fields keep syncing; the team should look (EC-008).
        tracing::warn!(school_id = school.id, fields = ?unmapped_fields, "unmapped Clever fields");
        crate::integrations::clever::metrics::unmapped_fields(school, &unmapped_fields);
    }
    let failures = failures.consecutive_failures;
    for r in &run.records {
        tracing::info!(
            district_id = school.district_id,
            school_id = school.id,
            sync_id,
            entity = r.entity,
            sync_type = r.sync_type,
            status = r.status,
            processed = r.processed,
            created = r.created,
            updated = r.updated,
            deleted = r.deleted,
            failed = r.failed,
            "entity synced"
        );
    }
    let (clever_requests, roster_writes) = (client.requests_made() - requests_before, run.roster.writes());
    let write_throttles = run.roster.throttling().throttled;
    tracing::info!(
        district_id = school.district_id,
        school_id = school.id,
        sync_id,
        status,
        consecutive_failures = failures,
        clever_requests,
        roster_writes,
        write_throttles,
        "school sync finished"
    );
    let outcome = SyncOutcome {
        sync_id,
        status,
        clever_requests,
        roster_writes,
        write_throttles,
        records: run.records,
        unmapped_fields,
    };
    summary::publish(ctx, &Summary::of_run(school, &outcome)).await;
    Ok(outcome)
}

impl Run<'_> {
    /// Starts the history of this run: one `InProgress` record per entity.
    async fn begin(&mut self, sync_id: &str, sync_type: &str) -> Result<(), SyncError> {
        let now = self.ctx.clock.now();
        self.records = Entity::ALL
            .iter()
            .map(|entity| SyncRecord {
                sync_id: sync_id.to_string(),
                school_id: self.school.id.clone(),
                district_id: self.school.district_id.clone(),
                entity: entity.plural().to_string(),
                sync_type: sync_type.to_string(),
                status: "InProgress".into(),
                started_at: now,
                ended_at: None,
                processed: 0,
                created: 0,
                updated: 0,
                deleted: 0,
                failed: 0,
                errors: Vec::new(),
                baseline_event_id: None,
            })
            .collect();
        for record in &self.records {
            self.save(record).await?;
        }
        Ok(())
    }

    async fn save(&self, record: &SyncRecord) -> Result<(), SyncError> {
        let retention = self.ctx.config.clever_sync.history_retention.as_secs() as i64;
        self.ctx.store().put_sync_record(record, retention).await.map_err(|e| SyncError(e.to_string()))
    }

    /// Ends every record still in progress with `status` and the error, and saves them all.
    async fn end(&mut self, status: &str, error: Option<String>, baseline: Option<&str>) -> Result<(), SyncError> {
        let now = self.ctx.clock.now();
        for record in &mut self.records {
            if record.status == "InProgress" {
                record.status = status.to_string();
                record.errors.extend(error.clone());
            }
            record.ended_at = Some(now);
            record.baseline_event_id = baseline.map(str::to_string);
        }
        for record in &self.records {
            self.save(record).await?;
        }
        Ok(())
    }

    fn record_mut(&mut self, entity: Entity) -> &mut SyncRecord {
        let index = Entity::ALL.iter().position(|e| *e == entity).expect("every entity has a record");
        &mut self.records[index]
    }

    /// The baseline a run that reads everything leaves: the district's newest event id (`start` for an
    /// empty feed), or none when Clever refuses the events call (events are not enabled for the
    /// district; Clever does not document how it says so, so any refusal counts).
    async fn events_baseline(&self) -> Result<BaselineUpdate, CleverError> {
        match self.client.newest_event_id().await {
            Ok(newest) => Ok(BaselineUpdate::Set(newest.unwrap_or_else(|| BASELINE_START.into()), self.started)),
            Err(CleverError::Refused { status, .. }) => {
                tracing::info!(school_id = self.school.id, status, "the district's events are not available");
                Ok(BaselineUpdate::Clear)
            }
            Err(e) => Err(e),
        }
    }

    /// Full sync.
    async fn full(&mut self, sync_id: &str, force: bool) -> Result<Ended, SyncError> {
        self.begin(sync_id, "full").await?;
        let baseline = match self.events_baseline().await {
            Ok(baseline) => baseline,
            Err(e) => return self.failed(e.to_string(), true).await,
        };
        let fetched = match self.fetch_all().await {
            Ok(fetched) => fetched,
            Err(e) => return self.failed(format!("fetch failed; nothing was changed: {e}"), true).await,
        };
        for (entity, (records, rejected)) in fetched {
            let existing = match self.roster.load(entity.key()).await {
                Ok(existing) => existing,
                Err(e) => return self.failed(e.to_string(), true).await,
            };
            let deletions = if force { Deletions::Forced } else { Deletions::WithinGuard };
            if let Err(e) = self.apply(entity, records, rejected, existing, deletions).await {
                let record = self.record_mut(entity);
                record.status = "Failed".into();
                record.errors.push(e.to_string());
                self.end("Failed", Some("not attempted after an earlier failure".into()), None).await?;
                return Ok(Ended { baseline: BaselineUpdate::Keep, full: true });
            }
        }
        self.end("Success", None, baseline_id(&baseline)).await?;
        Ok(Ended { baseline, full: true })
    }

    /// A full sync in place of an incremental one whose baseline cannot be used.
    async fn full_instead(&mut self, sync_id: &str, force: bool, why: &str) -> Result<Ended, SyncError> {
        tracing::warn!(school_id = self.school.id, why, "events baseline unusable; running a full sync");
        self.ctx.store().require_full_sync(&self.school.id).await.map_err(|e| SyncError(e.to_string()))?;
        self.full(sync_id, force).await
    }

    /// Data API with change detection and no deletions (districts without events). Leaves a baseline
    /// when the events feed answers, so the next run reads events.
    async fn data_api_fallback(&mut self, sync_id: &str) -> Result<Ended, SyncError> {
        self.begin(sync_id, "incremental-fallback").await?;
        let baseline = match self.events_baseline().await {
            Ok(baseline) => baseline,
            Err(e) => return self.failed(e.to_string(), false).await,
        };
        let fetched = match self.fetch_all().await {
            Ok(fetched) => fetched,
            Err(e) => return self.failed(format!("fetch failed: {e}"), false).await,
        };
        for (entity, (records, rejected)) in fetched {
            let existing = match self.roster.load(entity.key()).await {
                Ok(existing) => existing,
                Err(e) => return self.failed(e.to_string(), false).await,
            };
            // Records absent from Clever stay: only a full sync deletes.
            if let Err(e) = self.apply(entity, records, rejected, existing, Deletions::Never).await {
                return self.failed(e.to_string(), false).await;
            }
        }
        self.end("Success", None, baseline_id(&baseline)).await?;
        Ok(Ended { baseline, full: false })
    }

    async fn incremental(
        &mut self,
        sync_id: &str,
        baseline: &str,
        baseline_at: Option<i64>,
        force: bool,
    ) -> Result<Ended, SyncError> {
        let retention = self.ctx.config.clever_sync.events_retention.as_secs() as i64;
        if baseline_at.is_none_or(|at| self.started - at > retention) {
            return self.full_instead(sync_id, force, "not confirmed within the events feed's retention").await;
        }
        // The district's newest event, before reading: the baseline this run leaves at least.
        let newest = match self.client.newest_event_id().await {
            Ok(newest) => newest,
            Err(CleverError::Refused { status, .. }) => {
                tracing::warn!(school_id = self.school.id, status, "events refused; reading the Data API");
                return self.data_api_fallback(sync_id).await;
            }
            Err(e) => {
                self.begin(sync_id, "incremental").await?;
                return self.failed(e.to_string(), false).await;
            }
        };
        let after = (baseline != BASELINE_START).then_some(baseline);
        if let Some(after) = after {
            match self.client.event(after).await {
                Ok(_) => {}
                Err(CleverError::Refused { status, .. }) => {
                    let why = format!("the baseline event is no longer in the feed (HTTP {status})");
                    return self.full_instead(sync_id, force, &why).await;
                }
                Err(e) => {
                    self.begin(sync_id, "incremental").await?;
                    return self.failed(e.to_string(), false).await;
                }
            }
        }
        self.begin(sync_id, "incremental").await?;
        let page_size = self.ctx.config.clever_sync.events_page_size;
        let mut pages = self.client.events(&self.school.id, after, page_size);
        let mut last = None;
        loop {
            let events = match pages.next_page(Some).await {
                Ok(Some(page)) => page.items,
                Ok(None) => break,
                Err(CleverError::Refused { status, .. }) => {
                    // The feed moved past the baseline between the check and the read.
                    if let Err(e) = self.ctx.store().require_full_sync(&self.school.id).await {
                        return self.failed(e.to_string(), false).await;
                    }
                    let error = format!("Clever refused the events feed (HTTP {status}); a full sync is scheduled");
                    return self.failed(error, false).await;
                }
                Err(e) => return self.failed(e.to_string(), false).await,
            };
            let changes = page_changes(&events, &self.school.id);
            drop(events);
            let checkpoint = changes.last_event_id.clone();
            if let Err(e) = self.apply_page(changes).await {
                return self.failed(e.to_string(), false).await;
            }
            if let Some(id) = checkpoint {
                match self.ctx.store().checkpoint_baseline(&self.school.id, sync_id, &id, self.started).await {
                    Ok(true) => last = Some(id),
                    Ok(false) => return self.failed("the school's sync lease was taken over".into(), false).await,
                    Err(e) => return self.failed(e.to_string(), false).await,
                }
            }
        }
        let baseline = [Some(baseline.to_string()), newest, last]
            .into_iter()
            .flatten()
            .max_by(event_order)
            .unwrap_or_else(|| BASELINE_START.to_string());
        self.end("Success", None, Some(&baseline)).await?;
        Ok(Ended { baseline: BaselineUpdate::Set(baseline, self.started), full: false })
    }

    /// Writes what one page of events changed (deletions are counted, and left to the full sync).
    async fn apply_page(&mut self, mut changes: PageChanges) -> Result<(), crate::store::StoreError> {
        for (entity, fields) in std::mem::take(&mut changes.unmapped) {
            self.unmapped.entry(entity).or_default().extend(fields);
        }
        for entity in Entity::ALL {
            let records: Vec<RosterRecord> =
                changes.records.remove(&entity).map(|r| r.into_values().collect()).unwrap_or_default();
            let rejected = changes.rejected.get(&entity).copied().unwrap_or(0);
            self.record_mut(entity).processed += changes.deletions.get(&entity).copied().unwrap_or(0);
            if records.is_empty() && rejected == 0 {
                continue;
            }
            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            let existing = self.roster.get_many(entity.key(), &ids).await?;
            self.apply(entity, records, rejected, existing, Deletions::Never).await?;
        }
        Ok(())
    }

    /// Every entity's records from the Data API; nothing is written until all of them arrived.
    async fn fetch_all(&mut self) -> Result<Vec<(Entity, (Vec<RosterRecord>, usize))>, CleverError> {
        let mut all = Vec::new();
        for entity in Entity::ALL {
            let mut unmapped = BTreeSet::new();
            let fetched = self
                .client
                .list(&entity.list_path(&self.school.id), |object| {
                    unmapped.extend(entity.unmapped_fields(&object));
                    entity.record(&object)
                })
                .await?;
            if !unmapped.is_empty() {
                self.unmapped.entry(entity).or_default().extend(unmapped);
            }
            all.push((entity, fetched));
        }
        Ok(all)
    }

    /// Writes what changed and, when `deletions` allow it (a full sync, where `existing` holds every
    /// stored record), deletes what Clever no longer lists.
    async fn apply(
        &mut self,
        entity: Entity,
        records: Vec<RosterRecord>,
        rejected: usize,
        existing: HashMap<String, RosterRecord>,
        deletions: Deletions,
    ) -> Result<(), crate::store::StoreError> {
        let now = self.ctx.clock.now();
        let (mut created, mut updated) = (0, 0);
        let mut writes = Vec::new();
        for record in &records {
            match existing.get(&record.id) {
                None => created += 1,
                Some(old) if changed(old, record) => updated += 1,
                Some(_) => continue,
            }
            writes.push(record.clone());
        }
        self.roster.put(entity.key(), &writes, now).await?;
        let missing: Vec<String> = match deletions {
            Deletions::Never => Vec::new(),
            Deletions::WithinGuard | Deletions::Forced => {
                let listed: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
                existing.keys().filter(|id| !listed.contains(id.as_str())).cloned().collect()
            }
        };
        let guard = self.ctx.config.clever_sync.shrink_guard;
        let refused = deletions == Deletions::WithinGuard
            && !missing.is_empty()
            && missing.len() as f64 > guard * existing.len() as f64;
        if !refused {
            self.roster.delete(entity.key(), &missing).await?;
        }
        let record = self.record_mut(entity);
        record.processed += (records.len() + rejected) as u64;
        record.created += created;
        record.updated += updated;
        record.failed += rejected as u64;
        if refused {
            record.status = "Partial".into();
            record.errors.push(format!(
                "shrink guard: Clever no longer lists {} of {} {}; nothing was deleted. Run a forced full sync to apply.",
                missing.len(),
                existing.len(),
                entity.plural()
            ));
        } else {
            record.deleted += missing.len() as u64;
            if rejected > 0 {
                record.status = "Partial".into();
                record.errors.push(format!("{rejected} records without an id were skipped"));
            } else if record.status == "InProgress" {
                // Incremental runs apply page after page: a Partial page stays Partial.
                record.status = "Success".into();
            }
        }
        Ok(())
    }

    /// Ends the run as failed; `full` says whether it was a full sync (to be asked for again).
    async fn failed(&mut self, error: String, full: bool) -> Result<Ended, SyncError> {
        tracing::error!(school_id = self.school.id, district_id = self.school.district_id, error, "school sync failed");
        self.end("Failed", Some(error), None).await?;
        Ok(Ended { baseline: BaselineUpdate::Keep, full })
    }
}

/// Whether a run deletes stored records Clever no longer lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deletions {
    /// Incremental runs: deletions wait for a full sync.
    Never,
    /// Full syncs: at most the shrink guard's share.
    WithinGuard,
    /// A forced full sync: whatever Clever no longer lists.
    Forced,
}

/// The event id a baseline update names, for the history.
fn baseline_id(baseline: &BaselineUpdate) -> Option<&str> {
    match baseline {
        BaselineUpdate::Set(id, _) => Some(id),
        _ => None,
    }
}

/// Clever's event ids are ObjectIds (hex of one length, sorted by creation); compared by length,
/// then text, so `start` sorts before any id.
fn event_order(a: &String, b: &String) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

/// The run's status: `Failed` if any entity failed, `Partial` if any was partial, else `Success`.
fn overall(records: &[SyncRecord]) -> String {
    let any = |s: &str| records.iter().any(|r| r.status == s);
    if any("Failed") {
        "Failed"
    } else if any("Partial") {
        "Partial"
    } else {
        "Success"
    }
    .to_string()
}
