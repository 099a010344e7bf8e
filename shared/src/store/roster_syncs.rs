//! LTI roster syncs run by a queue worker, one per course at a time, a few per organization.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | sync | `LTI#ROSTER_SYNC#<sync_id>` | `SYNC` | doc (JSON: course, organization, requester, times, summary, error), status, slot, expires_at (90 days) |
//! | course lease | `LTI#CONTEXT#<ltc_id>` | `ROSTER_LEASE` | sync_id, lease_until |
//! | organization slot | `LTI#ORG#<org>#ROSTER_SLOTS` | `SLOT#<n>` | sync_id, lease_until |
//!
//! A sync is created with its course lease and one of its organization's slots in one transaction,
//! each conditional on being free or expired: of two requests for one course, one run is created;
//! an organization runs at most as many syncs as it has slots. A lease past its time belongs to a
//! run that died (a worker killed by its timeout, a lost message): the next request records that
//! run as failed and takes the lease.

use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};

use super::{Item, ItemExt, Store, StoreError, WriteError, n, s, update};

/// Sync records are kept this long.
const RETENTION_SECS: i64 = 90 * 24 * 3600;

fn sync_pk(id: &str) -> String {
    format!("LTI#ROSTER_SYNC#{id}")
}
fn lease_pk(course_id: &str) -> String {
    format!("LTI#CONTEXT#{course_id}")
}
const LEASE_SK: &str = "ROSTER_LEASE";
fn slots_pk(organization_id: &str) -> String {
    format!("LTI#ORG#{organization_id}#ROSTER_SLOTS")
}
fn slot_sk(slot: usize) -> String {
    format!("SLOT#{slot}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RosterSyncStatus {
    /// Waiting for a worker.
    Queued,
    Running,
    Succeeded,
    /// The roster could not be read, the run ran out of time, or it died (see `error`).
    Failed,
}

impl RosterSyncStatus {
    fn as_str(self) -> &'static str {
        match self {
            RosterSyncStatus::Queued => "queued",
            RosterSyncStatus::Running => "running",
            RosterSyncStatus::Succeeded => "succeeded",
            RosterSyncStatus::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RosterSyncStatus::Succeeded | RosterSyncStatus::Failed)
    }
}

/// A member the sync could not provision, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberError {
    /// The platform's user id.
    pub member_id: String,
    pub message: String,
}

/// What a finished run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RosterSyncSummary {
    /// Members the platform listed.
    pub total: usize,
    /// Members provisioned or deliberately skipped.
    pub successful: usize,
    pub failed: usize,
    /// Inactive or deleted in the course: reported, not provisioned, nothing deleted.
    pub inactive: usize,
    pub created: usize,
    /// Existing accounts this sync linked by their address (provisioning's rules).
    pub linked: usize,
    pub updated: usize,
    /// Mentors (they join through their own launch).
    pub skipped: usize,
    /// Membership pages read from the platform.
    pub pages: usize,
    /// The first failed members (at most 100), with why.
    pub errors: Vec<MemberError>,
}

/// One roster sync, as its requester and the course's admins see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RosterSync {
    /// `rsy_...`.
    pub id: String,
    pub course_id: String,
    pub organization_id: String,
    /// The user who asked for it.
    pub requested_by: String,
    pub status: RosterSyncStatus,
    pub requested_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Once finished: what the run did (members provisioned before a failure stay provisioned).
    pub summary: Option<RosterSyncSummary>,
    /// Why a failed run failed.
    pub error: Option<String>,
    /// The organization slot the run holds.
    #[serde(skip)]
    pub slot: usize,
}

/// Who holds a lease, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub sync_id: String,
    pub until: i64,
}

impl Store<'_> {
    pub async fn roster_sync(&self, id: &str) -> Result<Option<RosterSync>, StoreError> {
        Ok(self.get(&sync_pk(id), "SYNC").await?.as_ref().and_then(sync_from))
    }

    /// The course's roster lease, if any (it may have expired).
    pub async fn roster_lease(&self, course_id: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.get(&lease_pk(course_id), LEASE_SK).await?.as_ref().and_then(lease_from))
    }

    /// The organization's slot leases (expired ones included), by slot number.
    pub async fn roster_slots(&self, organization_id: &str) -> Result<Vec<(usize, Lease)>, StoreError> {
        Ok(self
            .query_all(&slots_pk(organization_id), Some("SLOT#"))
            .await?
            .iter()
            .filter_map(|i| Some((i.str("sk")?.strip_prefix("SLOT#")?.parse().ok()?, lease_from(i)?)))
            .collect())
    }

    /// Creates a queued sync with its course lease and organization slot until `lease_until`, all or
    /// nothing; `Conflict` when the course or the slot is held (by a run whose lease has not expired).
    pub async fn create_roster_sync(&self, sync: &RosterSync, lease_until: i64, now: i64) -> Result<(), WriteError> {
        let free = |pk: String, sk: String| {
            let item = Item::from([
                ("pk".into(), s(pk)),
                ("sk".into(), s(sk)),
                ("sync_id".into(), s(&sync.id)),
                ("lease_until".into(), n(lease_until)),
                ("expires_at".into(), n(lease_until + RETENTION_SECS)),
            ]);
            let put = Put::builder()
                .table_name(self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR lease_until < :now")
                .expression_attribute_values(":now", n(now))
                .build()
                .expect("table, item and condition are set");
            TransactWriteItem::builder().put(put).build()
        };
        self.transact(vec![
            self.put_new_item(sync_item(sync)),
            free(lease_pk(&sync.course_id), LEASE_SK.into()),
            free(slots_pk(&sync.organization_id), slot_sk(sync.slot)),
        ])
        .await
    }

    /// A worker starts a queued sync: it becomes running and its leases run until `lease_until`.
    /// `Conflict`: it is not queued any more, or its leases were taken (it was found dead).
    pub async fn start_roster_sync(&self, sync: &RosterSync, lease_until: i64) -> Result<(), WriteError> {
        let running = RosterSync { status: RosterSyncStatus::Running, ..sync.clone() };
        let extend = |pk: String, sk: String| {
            let update = update(self.table, pk, &sk)
                .update_expression("SET lease_until = :until")
                .condition_expression("sync_id = :sync")
                .expression_attribute_values(":until", n(lease_until))
                .expression_attribute_values(":sync", s(&sync.id))
                .build()
                .expect("table, key and expression are set");
            TransactWriteItem::builder().update(update).build()
        };
        self.transact(vec![
            self.replace_if_status(&running, RosterSyncStatus::Queued),
            extend(lease_pk(&sync.course_id), LEASE_SK.into()),
            extend(slots_pk(&sync.organization_id), slot_sk(sync.slot)),
        ])
        .await
    }

    /// Records a run's end and gives its leases back, all or nothing. `Conflict`: the run was found
    /// dead meanwhile (its record says so and its leases may be another run's).
    pub async fn finish_roster_sync(&self, sync: &RosterSync, was: RosterSyncStatus) -> Result<(), WriteError> {
        let release = |pk: String, sk: String| {
            let delete = Delete::builder()
                .table_name(self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .condition_expression("sync_id = :sync")
                .expression_attribute_values(":sync", s(&sync.id))
                .build()
                .expect("table, key and condition are set");
            TransactWriteItem::builder().delete(delete).build()
        };
        self.transact(vec![
            self.replace_if_status(sync, was),
            release(lease_pk(&sync.course_id), LEASE_SK.into()),
            release(slots_pk(&sync.organization_id), slot_sk(sync.slot)),
        ])
        .await
    }

    /// Records a run whose lease expired (or was never its own) as failed, if it is still queued or
    /// running; the failed record when this call recorded it.
    pub async fn fail_dead_roster_sync(
        &self,
        id: &str,
        error: &str,
        now: i64,
    ) -> Result<Option<RosterSync>, StoreError> {
        let Some(sync) = self.roster_sync(id).await? else { return Ok(None) };
        if sync.status.is_finished() {
            return Ok(None);
        }
        let failed = RosterSync {
            status: RosterSyncStatus::Failed,
            finished_at: Some(now),
            error: Some(error.into()),
            ..sync.clone()
        };
        match self.transact(vec![self.replace_if_status(&failed, sync.status)]).await {
            Ok(()) => Ok(Some(failed)),
            Err(WriteError::Conflict) => Ok(None),
            Err(WriteError::Store(e)) => Err(e),
        }
    }

    fn replace_if_status(&self, sync: &RosterSync, was: RosterSyncStatus) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(self.table)
            .set_item(Some(sync_item(sync)))
            .condition_expression("#status = :was")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":was", s(was.as_str()))
            .build()
            .expect("table, item and condition are set");
        TransactWriteItem::builder().put(put).build()
    }
}

fn sync_item(sync: &RosterSync) -> Item {
    Item::from([
        ("pk".into(), s(sync_pk(&sync.id))),
        ("sk".into(), s("SYNC")),
        ("doc".into(), s(serde_json::to_string(sync).expect("syncs serialize"))),
        ("status".into(), s(sync.status.as_str())),
        ("slot".into(), n(sync.slot as i64)),
        ("expires_at".into(), n(sync.requested_at + RETENTION_SECS)),
    ])
}

fn sync_from(item: &Item) -> Option<RosterSync> {
    let sync: RosterSync = serde_json::from_str(item.str("doc")?).ok()?;
    Some(RosterSync { slot: item.num("slot")? as usize, ..sync })
}

fn lease_from(item: &Item) -> Option<Lease> {
    Some(Lease { sync_id: item.str("sync_id")?.to_string(), until: item.num("lease_until")? })
}
