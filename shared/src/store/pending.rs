//! Submissions for LMS assignments that no quest maps yet: kept until one does.

use super::{Item, ItemExt, Store, StoreError, n, s};
use crate::learning::LmsMapping;

/// Pending submissions wait this long for their quest.
const PENDING_RETENTION_SECS: i64 = 30 * 24 * 3600;

fn pending_pk(m: &LmsMapping) -> String {
    format!("PENDING#{}#{}#{}", m.platform, m.course_id, m.assignment_id)
}

impl Store<'_> {
    /// Keeps a submission (its payload as received) for later; the same one twice is kept once.
    pub async fn save_pending_submission(
        &self,
        m: &LmsMapping,
        key: &str,
        payload: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(self.table)
            .set_item(Some(Item::from([
                ("pk".into(), s(pending_pk(m))),
                ("sk".into(), s(key)),
                ("payload".into(), s(payload)),
                ("received_at".into(), n(now)),
                ("expires_at".into(), n(now + PENDING_RETENTION_SECS)),
            ])))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
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
