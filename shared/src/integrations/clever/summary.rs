//! A summary of every school sync on an SNS topic, so "email notification on sync completion" holds
//! (seed 003 US-001): admins subscribe an address to the topic (template parameter
//! `CleverSyncSummaryEmail`, all runs or problems only). Killed runs and schools Clever stopped listing
//! are announced the same way (EC-004). Publishing never fails a sync: a failure is logged with
//! `alert=clever_summary_not_sent`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sns::types::MessageAttributeValue;
use serde::Serialize;

use crate::Context;
use crate::store::clever::{CleverSchool, SyncRecord};

/// What a school sync did, for callers, logs and benchmarks.
#[derive(Debug)]
pub struct SyncOutcome {
    pub sync_id: String,
    pub status: String,
    pub records: Vec<SyncRecord>,
    /// Requests this run sent to Clever.
    pub clever_requests: u64,
    /// Roster items this run wrote or deleted.
    pub roster_writes: u64,
    /// Roster requests DynamoDB throttled (the run slowed down instead of failing).
    pub write_throttles: u64,
    /// Fields Clever sent that we do not map, by entity (`students`...): a schema change to review.
    pub unmapped_fields: BTreeMap<String, BTreeSet<String>>,
}

/// Errors carried in a summary at most, and characters of each.
const MAX_ERRORS: usize = 10;
const MAX_ERROR_CHARS: usize = 500;

/// What one school's run did, as subscribers receive it (the JSON is the message's default text).
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub school_id: String,
    pub school_name: String,
    pub district_id: String,
    pub sync_id: String,
    /// `full`, `incremental`, `incremental-fallback`, or none (a school deactivated).
    pub sync_type: Option<String>,
    /// `Success`, `Partial`, `Failed` or `Deactivated`.
    pub status: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub entities: Vec<EntityCounts>,
    pub errors: Vec<String>,
    pub clever_requests: u64,
    pub roster_writes: u64,
    pub write_throttles: u64,
    pub unmapped_fields: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EntityCounts {
    pub entity: String,
    pub status: String,
    pub processed: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
}

impl Summary {
    /// The summary of a finished run.
    pub fn of_run(school: &CleverSchool, outcome: &SyncOutcome) -> Self {
        let records = &outcome.records;
        let errors = records
            .iter()
            .flat_map(|r| r.errors.iter().map(move |e| format!("{}: {e}", r.entity)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(MAX_ERRORS)
            .map(|e| e.chars().take(MAX_ERROR_CHARS).collect())
            .collect();
        Self {
            school_id: school.id.clone(),
            school_name: school.name.clone(),
            district_id: school.district_id.clone(),
            sync_id: outcome.sync_id.clone(),
            sync_type: records.first().map(|r| r.sync_type.clone()),
            status: outcome.status.clone(),
            started_at: records.iter().map(|r| r.started_at).min(),
            ended_at: records.iter().filter_map(|r| r.ended_at).max(),
            entities: records
                .iter()
                .map(|r| EntityCounts {
                    entity: r.entity.clone(),
                    status: r.status.clone(),
                    processed: r.processed,
                    created: r.created,
                    updated: r.updated,
                    deleted: r.deleted,
                    failed: r.failed,
                })
                .collect(),
            errors,
            clever_requests: outcome.clever_requests,
            roster_writes: outcome.roster_writes,
            write_throttles: outcome.write_throttles,
            unmapped_fields: outcome.unmapped_fields.clone(),
        }
    }

    /// A run that never finished (found by the next one), or a school event without a run.
    pub fn of_event(school: &CleverSchool, sync_id: &str, status: &str, at: i64, error: &str) -> Self {
        Self {
            school_id: school.id.clone(),
            school_name: school.name.clone(),
            district_id: school.district_id.clone(),
            sync_id: sync_id.to_string(),
            sync_type: None,
            status: status.to_string(),
            started_at: None,
            ended_at: Some(at),
            entities: Vec::new(),
            errors: vec![error.to_string()],
            clever_requests: 0,
            roster_writes: 0,
            write_throttles: 0,
            unmapped_fields: BTreeMap::new(),
        }
    }

    /// The email subject: SNS allows at most 100 printable ASCII characters.
    pub fn subject(&self) -> String {
        let text = format!("Clever sync {}: {}", self.status, self.school_name);
        text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(100).collect()
    }

    /// The email body: the same facts as plain lines.
    pub fn text(&self) -> String {
        let mut lines = vec![
            format!("School: {} ({})", self.school_name, self.school_id),
            format!("District: {}", self.district_id),
            format!("Status: {}", self.status),
            format!("Sync: {} ({})", self.sync_id, self.sync_type.as_deref().unwrap_or("-")),
        ];
        for e in &self.entities {
            lines.push(format!(
                "{}: {} - {} processed, {} created, {} updated, {} deleted, {} failed",
                e.entity, e.status, e.processed, e.created, e.updated, e.deleted, e.failed
            ));
        }
        lines.push(format!(
            "Clever requests: {}, roster writes: {}, throttled writes: {}",
            self.clever_requests, self.roster_writes, self.write_throttles
        ));
        for (entity, fields) in &self.unmapped_fields {
            lines.push(format!("Unmapped {entity} fields: {}", fields.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        lines.extend(self.errors.iter().map(|e| format!("Error: {e}")));
        lines.join("\n")
    }
}

/// Publishes a summary to the summary topic, when one is configured; never fails the caller.
pub async fn publish(ctx: &Context, summary: &Summary) {
    let Some(topic) = ctx.config.clever_sync_summary_topic_arn.as_deref() else { return };
    let json = serde_json::to_string(summary).expect("summaries serialize");
    let message = serde_json::json!({"default": json, "email": summary.text()}).to_string();
    let attribute = |value: &str| {
        MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("type and value set")
    };
    let result = ctx
        .sns()
        .publish()
        .topic_arn(topic)
        .subject(summary.subject())
        .message_structure("json")
        .message(message)
        .message_attributes("status", attribute(&summary.status))
        .message_attributes("district_id", attribute(&summary.district_id))
        .message_attributes("school_id", attribute(&summary.school_id))
        .send()
        .await;
    if let Err(e) = result {
        tracing::error!(
            alert = "clever_summary_not_sent",
            school_id = summary.school_id,
            sync_id = summary.sync_id,
            error = %aws_sdk_sns::error::DisplayErrorContext(e),
            "sync summary not published"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn school(name: &str) -> CleverSchool {
        CleverSchool {
            id: "s1".into(),
            district_id: "d1".into(),
            name: name.into(),
            active: true,
            requires_full_sync: false,
            baseline_event_id: None,
            baseline_at: None,
            last_sync_id: None,
            last_sync_status: None,
            last_sync_at: None,
            consecutive_failures: 0,
            consecutive_partials: 0,
            delisted_at: None,
        }
    }

    #[test]
    fn subjects_are_short_printable_ascii_and_the_text_names_every_fact() {
        let long = format!("École {}", "Longfellow ".repeat(20));
        let summary = Summary::of_event(&school(&long), "sync_1", "Failed", 1, "the run stopped before it finished");
        let subject = summary.subject();
        assert!(subject.len() <= 100 && subject.starts_with("Clever sync Failed: ?cole"));
        assert!(subject.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        let text = summary.text();
        assert!(text.contains("Status: Failed") && text.contains("Error: the run stopped"));
    }
}
