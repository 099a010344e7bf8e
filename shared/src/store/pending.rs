//! Submissions for LMS assignments that no quest maps yet: kept until one does, listed to their
//! organization's admins oldest first (those nearest expiry).

use super::cursor::{self, InvalidCursor};
use super::learning::LmsMapping;
use super::{Item, ItemExt, Store, StoreError, n, s};

/// Pending submissions wait this long for their quest.
pub const PENDING_RETENTION_SECS: i64 = 30 * 24 * 3600;

fn pending_pk(m: &LmsMapping) -> String {
    format!("PENDING#{}#{}#{}", m.platform, m.course_id, m.assignment_id)
}
fn pending_index(organization_id: &str) -> String {
    format!("ORG#{organization_id}#PENDING_SUBMISSIONS")
}

/// A kept submission, as its organization's admins see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingSubmission {
    /// The submission's idempotency key.
    pub key: String,
    pub mapping: LmsMapping,
    /// The body as received.
    pub payload: String,
    pub received_at: i64,
    /// When it is forgotten unless a quest maps its assignment first.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PendingPageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cursor(#[from] InvalidCursor),
}

impl Store<'_> {
    /// Keeps a submission (its payload as received) for later; the same one twice is kept once.
    /// With the organization the integration belongs to, its admins see it listed.
    pub async fn save_pending_submission(
        &self,
        m: &LmsMapping,
        key: &str,
        payload: &str,
        organization_id: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut item = Item::from([
            ("pk".into(), s(pending_pk(m))),
            ("sk".into(), s(key)),
            ("platform".into(), s(&m.platform)),
            ("course_id".into(), s(&m.course_id)),
            ("assignment_id".into(), s(&m.assignment_id)),
            ("payload".into(), s(payload)),
            ("received_at".into(), n(now)),
            ("expires_at".into(), n(now + PENDING_RETENTION_SECS)),
        ]);
        if let Some(org) = organization_id {
            item.insert("organization_id".into(), s(org));
            item.insert("gsi1pk".into(), s(pending_index(org)));
            item.insert("gsi1sk".into(), s(format!("{now:012}#{key}")));
        }
        self.put(item).await
    }

    /// (sort key, payload) of the first `limit` submissions waiting for an assignment, and whether more
    /// wait (a consumer removes what it took, then asks again).
    pub async fn pending_submissions(
        &self,
        m: &LmsMapping,
        limit: i32,
    ) -> Result<(Vec<(String, String)>, bool), StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pending_pk(m)))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let page = out
            .items()
            .iter()
            .filter_map(|i| Some((i.str("sk")?.to_string(), i.str("payload")?.to_string())))
            .collect();
        Ok((page, out.last_evaluated_key.is_some()))
    }

    /// A page of an organization's pending submissions received before `before`, oldest first, and
    /// the cursor of the next page.
    pub async fn pending_submissions_of(
        &self,
        organization_id: &str,
        before: i64,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<PendingSubmission>, Option<String>), PendingPageError> {
        let index = pending_index(organization_id);
        let start = after.map(|c| cursor::decode(&index, c, "PENDING#")).transpose()?;
        let out = self
            .client
            .query()
            .table_name(self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :index AND gsi1sk < :before")
            .expression_attribute_values(":index", s(&index))
            .expression_attribute_values(":before", s(format!("{:012}", before.clamp(0, 999_999_999_999))))
            .limit(limit as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let page = out.items().iter().filter_map(pending_from).collect();
        let next = out
            .last_evaluated_key
            .as_ref()
            .and_then(|k| Some(cursor::encode(k.str("gsi1sk")?, k.str("pk")?, k.str("sk")?)));
        Ok((page, next))
    }

    pub async fn delete_pending_submission(&self, m: &LmsMapping, sk: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(pending_pk(m)))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}

fn pending_from(item: &Item) -> Option<PendingSubmission> {
    Some(PendingSubmission {
        key: item.str("sk")?.to_string(),
        mapping: LmsMapping {
            platform: item.str("platform")?.to_string(),
            course_id: item.str("course_id")?.to_string(),
            assignment_id: item.str("assignment_id")?.to_string(),
        },
        payload: item.str("payload")?.to_string(),
        received_at: item.num("received_at")?,
        expires_at: item.num("expires_at")?,
    })
}
