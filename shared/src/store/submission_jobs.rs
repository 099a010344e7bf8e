//! Submission jobs: a verified submission whose files come by URL, waiting for (or done by) the
//! submission worker. The item is the job's truth; the SQS message only names it.

use super::{Item, ItemExt, Store, StoreError, condition_held, n, s};

/// Jobs are remembered this long (far beyond the 5-minute replay window of their submissions).
const JOB_RETENTION_SECS: i64 = 30 * 24 * 3600;

fn job_pk(key: &str) -> String {
    format!("SUBMISSION_JOB#{key}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Processing,
    Completed { completion_id: String },
    Failed { error: String },
}

#[derive(Clone, Debug)]
pub struct SubmissionJob {
    pub submission_id: String,
    pub payload: String,
    pub status: JobStatus,
    pub received_at: i64,
}

impl Store<'_> {
    /// Records a new job; `false` when one with this key exists (a retry of the same submission).
    pub async fn create_submission_job(
        &self,
        key: &str,
        submission_id: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.put_if_new(Item::from([
            ("pk".into(), s(job_pk(key))),
            ("sk".into(), s("JOB")),
            ("submission_id".into(), s(submission_id)),
            ("payload".into(), s(payload)),
            ("status".into(), s("processing")),
            ("received_at".into(), n(now)),
            ("expires_at".into(), n(now + JOB_RETENTION_SECS)),
        ]))
        .await
    }

    pub async fn submission_job(&self, key: &str) -> Result<Option<SubmissionJob>, StoreError> {
        let Some(item) = self.get(&job_pk(key), "JOB").await? else { return Ok(None) };
        let status = match item.str("status") {
            Some("completed") => JobStatus::Completed { completion_id: item.str("completion_id").unwrap_or("").into() },
            Some("failed") => JobStatus::Failed { error: item.str("error").unwrap_or("failed").into() },
            _ => JobStatus::Processing,
        };
        Ok(Some(SubmissionJob {
            submission_id: item.str("submission_id").unwrap_or_default().into(),
            payload: item.str("payload").unwrap_or_default().into(),
            status,
            received_at: item.num("received_at").unwrap_or_default(),
        }))
    }

    /// Forgets a job whose message could not be queued (the sender retries it).
    pub async fn delete_submission_job(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(job_pk(key)))
            .key("sk", s("JOB"))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Ends a job that is still processing; `false` when it had ended already.
    pub async fn finish_submission_job(&self, key: &str, status: &JobStatus, now: i64) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(job_pk(key)))
            .key("sk", s("JOB"))
            .condition_expression("#status = :processing")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s("processing"))
            .expression_attribute_values(":now", n(now));
        request = match status {
            JobStatus::Processing => return Ok(false),
            JobStatus::Completed { completion_id } => request
                .update_expression("SET #status = :done, completion_id = :cid, finished_at = :now REMOVE payload")
                .expression_attribute_values(":done", s("completed"))
                .expression_attribute_values(":cid", s(completion_id)),
            JobStatus::Failed { error } => request
                .update_expression("SET #status = :failed, #error = :error, finished_at = :now REMOVE payload")
                .expression_attribute_names("#error", "error")
                .expression_attribute_values(":failed", s("failed"))
                .expression_attribute_values(":error", s(error)),
        };
        condition_held(request.send().await)
    }
}
