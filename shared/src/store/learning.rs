//! Quests, LMS mappings and each user's learning state.
//!
//! Per-user items live under `USER#<user_id>` with sort keys starting `Q#<quest_id>`, so one query
//! reads everything a user has in a quest (or, with prefix `Q#`, in all quests).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::badges::Badge;
use super::outbox::DomainEvent;
use super::{Item, ItemExt, Store, StoreError, WriteError, n, s, update};
use serde::{Deserialize, Serialize};

/// Where a quest comes from in an LMS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LmsMapping {
    #[schema(max_length = 150, pattern = r"^[^#]*[^#\s][^#]*$")]
    pub platform: String,
    #[schema(max_length = 150, pattern = r"^[^#]*[^#\s][^#]*$")]
    pub course_id: String,
    #[schema(max_length = 150, pattern = r"^[^#]*[^#\s][^#]*$")]
    pub assignment_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuestTask {
    pub id: String,
    pub title: String,
    pub pillar: String,
    pub xp: i64,
    /// 1-based position in the quest.
    pub order: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quest {
    pub id: String,
    pub organization_id: String,
    pub title: String,
    pub pillar: String,
    pub lms: Option<LmsMapping>,
    pub tasks: Vec<QuestTask>,
    pub created_at: i64,
}

/// One piece of evidence, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceBlock {
    pub order: u32,
    #[serde(rename = "type")]
    pub block_type: BlockType,
    /// Text for `text` blocks; the URL for `link` blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The stored file of image, video and document blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<StoredFile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockType {
    Text,
    Image,
    Video,
    Document,
    Link,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredFile {
    /// Unguessable S3 key in the evidence bucket.
    pub key: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// Submission idempotency records are kept this long.
pub const SUBMISSION_RETENTION_SECS: i64 = 90 * 24 * 3600;

fn quest_pk(id: &str) -> String {
    format!("QUEST#{id}")
}
fn lms_pk(m: &LmsMapping) -> String {
    format!("LMSMAP#{}#{}#{}", m.platform, m.course_id, m.assignment_id)
}
fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}
fn enrollment_sk(quest_id: &str) -> String {
    format!("Q#{quest_id}")
}
fn task_sk(quest_id: &str, task_id: &str) -> String {
    format!("Q#{quest_id}#TASK#{task_id}")
}
fn evidence_sk(quest_id: &str, task_id: &str) -> String {
    format!("Q#{quest_id}#EVIDENCE#{task_id}")
}

/// A user's enrollment in a quest as last read (its `version` guards the next write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    pub status: String,
    pub tasks_completed: i64,
    pub completed_at: Option<i64>,
    pub version: i64,
}

/// A user's copy of a quest task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTask {
    pub task_id: String,
    pub completed: bool,
    pub completion_id: Option<String>,
    pub completed_at: Option<i64>,
}

/// Everything a user has in one quest.
#[derive(Clone, Debug, Default)]
pub struct QuestState {
    pub enrollment: Option<Enrollment>,
    pub tasks: HashMap<String, UserTask>,
    pub evidence: HashMap<String, Vec<EvidenceBlock>>,
}

/// A user's XP and completed quests, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XpTotals {
    pub total: i64,
    pub by_pillar: HashMap<String, i64>,
    pub quests_completed: i64,
}

/// The writes of one submission, decided by `learning::submissions` from a [`QuestState`].
pub struct SubmissionWrite<'a> {
    pub source: &'a str,
    pub key: &'a str,
    pub user_id: &'a str,
    pub quest: &'a Quest,
    pub task: &'a QuestTask,
    pub completion_id: &'a str,
    /// The enrollment as read; `None` enrolls the user (and creates their tasks) now.
    pub seen: Option<&'a Enrollment>,
    /// The task becomes completed by this submission (XP is awarded with it).
    pub completes_task: bool,
    pub evidence: &'a [EvidenceBlock],
    pub events: &'a [DomainEvent],
    /// Badges this submission earns (each written once: a concurrent award makes this write retry).
    pub badges: &'a [&'a Badge],
    /// Where the task lives in an LMS, kept with the completion for later grade passback.
    pub lms_ref: Option<&'a serde_json::Value>,
    pub now: i64,
}

/// A completed task, by its completion id (for grading it later).
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub completion_id: String,
    pub user_id: String,
    pub quest_id: String,
    pub task_id: String,
    pub organization_id: String,
    pub lms_ref: Option<serde_json::Value>,
    /// A teacher (or the LMS) graded it.
    pub graded: bool,
}

impl Store<'_> {
    /// Creates a quest and, if it has one, claims its LMS mapping (unique).
    /// Creates a quest, its LMS mapping (unique per assignment) and the event that announces the
    /// mapping: all or none.
    pub async fn create_quest(&self, quest: &Quest, mapped: Option<&DomainEvent>) -> Result<(), WriteError> {
        let mut items = vec![self.put_new_item(Item::from([
            ("pk".into(), s(quest_pk(&quest.id))),
            ("sk".into(), s("QUEST")),
            ("doc".into(), s(serde_json::to_string(quest).expect("quests serialize"))),
            ("gsi1pk".into(), s(format!("ORG#{}#QUESTS", quest.organization_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", quest.created_at, quest.id))),
        ]))];
        if let Some(lms) = &quest.lms {
            items.push(self.put_new_item(Item::from([
                ("pk".into(), s(lms_pk(lms))),
                ("sk".into(), s("LMSMAP")),
                ("quest_id".into(), s(&quest.id)),
            ])));
        }
        items.extend(mapped.map(|event| self.outbox_put(event)));
        self.transact(items).await
    }

    pub async fn get_quest(&self, id: &str) -> Result<Option<Quest>, StoreError> {
        Ok(self.get(&quest_pk(id), "QUEST").await?.as_ref().and_then(quest_from_item))
    }

    /// The quest an LMS assignment maps to.
    pub async fn quest_by_lms(&self, mapping: &LmsMapping) -> Result<Option<Quest>, StoreError> {
        let Some(item) = self.get(&lms_pk(mapping), "LMSMAP").await? else { return Ok(None) };
        match item.str("quest_id") {
            Some(id) => self.get_quest(id).await,
            None => Ok(None),
        }
    }

    /// An organization's quests, newest first.
    pub async fn quests_of_organization(&self, organization_id: &str, limit: i32) -> Result<Vec<Quest>, StoreError> {
        self.organization_documents(organization_id, "QUESTS", true, limit).await
    }

    /// Quests by id (missing ones are left out).
    pub async fn quests_by_id(&self, ids: &[String]) -> Result<Vec<Quest>, StoreError> {
        let keys = ids.iter().map(|id| (quest_pk(id), "QUEST".to_string())).collect();
        Ok(self.get_many(keys).await?.iter().filter_map(quest_from_item).collect())
    }

    /// A user's state in one quest, or (`quest_id` = `None`) in all quests, keyed by quest id.
    pub async fn learning_state(
        &self,
        user_id: &str,
        quest_id: Option<&str>,
    ) -> Result<HashMap<String, QuestState>, StoreError> {
        let prefix = quest_id.map_or_else(|| "Q#".to_string(), enrollment_sk);
        Ok(quest_states(&self.query_all(&user_pk(user_id), Some(&prefix)).await?))
    }

    /// A user's XP (total and per pillar) and count of completed quests.
    pub async fn xp(&self, user_id: &str) -> Result<XpTotals, StoreError> {
        Ok(xp_totals(&self.get(&user_pk(user_id), "XP").await?.unwrap_or_default()))
    }

    pub async fn completion(&self, completion_id: &str) -> Result<Option<Completion>, StoreError> {
        let Some(item) = self.get(&format!("COMPLETION#{completion_id}"), "COMPLETION").await? else { return Ok(None) };
        let text = |k: &str| item.str(k).map(str::to_string);
        Ok((|| {
            Some(Completion {
                completion_id: completion_id.to_string(),
                user_id: text("user_id")?,
                quest_id: text("quest_id")?,
                task_id: text("task_id")?,
                organization_id: text("organization_id")?,
                lms_ref: item.str("lms").and_then(|l| serde_json::from_str(l).ok()),
                graded: item.contains_key("grade"),
            })
        })())
    }

    /// Records a grade on a completion with its `grade.updated` event, in one transaction.
    pub async fn grade_completion(
        &self,
        completion_id: &str,
        grade: &serde_json::Value,
        event: &DomainEvent,
        now: i64,
    ) -> Result<(), WriteError> {
        let graded = update(self.table, format!("COMPLETION#{completion_id}"), "COMPLETION")
            .update_expression("SET grade = :grade, graded_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":grade", s(grade.to_string()))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        self.transact(vec![TransactWriteItem::builder().update(graded).build(), self.outbox_put(event)]).await
    }

    /// The completion a submission (by its idempotency key) already produced.
    pub async fn submission_completion(&self, source: &str, key: &str) -> Result<Option<String>, StoreError> {
        let item = self.get(&format!("SUBMISSION#{source}#{key}"), "SUBMISSION").await?;
        Ok(item.and_then(|i| i.str("completion_id").map(str::to_string)))
    }

    /// Writes one submission, all or nothing. `Conflict`: the same submission was recorded
    /// meanwhile, or the user's state changed since it was read; read again and retry.
    pub async fn write_submission(&self, w: &SubmissionWrite<'_>) -> Result<(), WriteError> {
        let (quest, task, user) = (w.quest, w.task, w.user_id);
        let total = quest.tasks.len() as i64;
        let done_before = w.seen.map_or(0, |e| e.tasks_completed);
        let done_after = done_before + i64::from(w.completes_task);
        let status = if done_after >= total { "completed" } else { "active" };
        let mut items = vec![self.put_new_item(Item::from([
            ("pk".into(), s(format!("SUBMISSION#{}#{}", w.source, w.key))),
            ("sk".into(), s("SUBMISSION")),
            ("user_id".into(), s(user)),
            ("quest_id".into(), s(&quest.id)),
            ("task_id".into(), s(&task.id)),
            ("completion_id".into(), s(w.completion_id)),
            ("created_at".into(), n(w.now)),
            ("expires_at".into(), n(w.now + SUBMISSION_RETENTION_SECS)),
        ]))];
        match w.seen {
            None => {
                let mut enrollment = Item::from([
                    ("pk".into(), s(user_pk(user))),
                    ("sk".into(), s(enrollment_sk(&quest.id))),
                    ("status".into(), s(status)),
                    ("tasks_total".into(), n(total)),
                    ("tasks_completed".into(), n(done_after)),
                    ("enrolled_at".into(), n(w.now)),
                    ("version".into(), n(1)),
                ]);
                if status == "completed" {
                    enrollment.insert("completed_at".into(), n(w.now));
                }
                items.push(self.put_new_item(enrollment));
                for t in &quest.tasks {
                    let mut item = Item::from([
                        ("pk".into(), s(user_pk(user))),
                        ("sk".into(), s(task_sk(&quest.id, &t.id))),
                        ("status".into(), s("pending")),
                    ]);
                    if t.id == task.id && w.completes_task {
                        item.insert("status".into(), s("completed"));
                        item.insert("completion_id".into(), s(w.completion_id));
                        item.insert("completed_at".into(), n(w.now));
                    }
                    items.push(self.put_new_item(item));
                }
            }
            Some(seen) => {
                let completed_at =
                    if status == "completed" { ", completed_at = if_not_exists(completed_at, :now)" } else { "" };
                let enrollment = update(self.table, user_pk(user), &enrollment_sk(&quest.id))
                    .update_expression(format!(
                        "SET #status = :status, tasks_completed = :done, version = :next{completed_at}"
                    ))
                    .condition_expression("version = :seen")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status))
                    .expression_attribute_values(":done", n(done_after))
                    .expression_attribute_values(":next", n(seen.version + 1))
                    .expression_attribute_values(":seen", n(seen.version));
                let enrollment = if status == "completed" {
                    enrollment.expression_attribute_values(":now", n(w.now))
                } else {
                    enrollment
                };
                items.push(
                    TransactWriteItem::builder()
                        .update(enrollment.build().map_err(|e| StoreError(e.to_string()))?)
                        .build(),
                );
                if w.completes_task {
                    let complete = update(self.table, user_pk(user), &task_sk(&quest.id, &task.id))
                        .update_expression("SET #status = :completed, completion_id = :cid, completed_at = :now")
                        .condition_expression("#status = :pending")
                        .expression_attribute_names("#status", "status")
                        .expression_attribute_values(":completed", s("completed"))
                        .expression_attribute_values(":pending", s("pending"))
                        .expression_attribute_values(":cid", s(w.completion_id))
                        .expression_attribute_values(":now", n(w.now))
                        .build()
                        .map_err(|e| StoreError(e.to_string()))?;
                    items.push(TransactWriteItem::builder().update(complete).build());
                }
            }
        }
        let first_completion = status == "completed" && w.seen.is_none_or(|e| e.completed_at.is_none());
        let awards_xp = w.completes_task && task.xp > 0;
        if awards_xp || first_completion {
            let mut adds = Vec::new();
            let mut xp = update(self.table, user_pk(user), "XP");
            if awards_xp {
                adds.push("#pillar :xp, xp_total :xp");
                xp = xp
                    .expression_attribute_names("#pillar", format!("xp#{}", task.pillar))
                    .expression_attribute_values(":xp", n(task.xp));
            }
            if first_completion {
                adds.push("quests_completed :one");
                xp = xp.expression_attribute_values(":one", n(1));
            }
            let xp = xp
                .update_expression(format!("ADD {}", adds.join(", ")))
                .build()
                .map_err(|e| StoreError(e.to_string()))?;
            items.push(TransactWriteItem::builder().update(xp).build());
        }
        items.extend(w.badges.iter().map(|b| self.earned_badge_put(user, b, w.now)));
        if w.completes_task {
            let mut completion = Item::from([
                ("pk".into(), s(format!("COMPLETION#{}", w.completion_id))),
                ("sk".into(), s("COMPLETION")),
                ("user_id".into(), s(user)),
                ("quest_id".into(), s(&quest.id)),
                ("task_id".into(), s(&task.id)),
                ("organization_id".into(), s(&quest.organization_id)),
                ("completed_at".into(), n(w.now)),
            ]);
            if let Some(lms) = w.lms_ref {
                completion.insert("lms".into(), s(lms.to_string()));
            }
            items.push(self.put_new_item(completion));
        } else {
            let completion_pk = format!("COMPLETION#{}", w.completion_id);
            match w.lms_ref {
                // Work from an LMS on a task done before: the completion now holds LMS work.
                Some(lms) => {
                    let mark = update(self.table, completion_pk, "COMPLETION")
                        .update_expression("SET lms = if_not_exists(lms, :lms)")
                        .expression_attribute_values(":lms", s(lms.to_string()))
                        .build()
                        .map_err(|e| StoreError(e.to_string()))?;
                    items.push(TransactWriteItem::builder().update(mark).build());
                }
                // Work from the hub never replaces LMS or graded work (checked by the caller on its read;
                // this holds against a grade or an LMS submission landing meanwhile).
                None => {
                    let ungraded = aws_sdk_dynamodb::types::ConditionCheck::builder()
                        .table_name(self.table)
                        .key("pk", s(completion_pk))
                        .key("sk", s("COMPLETION"))
                        .condition_expression("attribute_not_exists(grade) AND attribute_not_exists(lms)")
                        .build()
                        .map_err(|e| StoreError(e.to_string()))?;
                    items.push(TransactWriteItem::builder().condition_check(ungraded).build());
                }
            }
        }
        let evidence = Put::builder()
            .table_name(self.table)
            .item("pk", s(user_pk(user)))
            .item("sk", s(evidence_sk(&quest.id, &task.id)))
            .item("blocks", s(serde_json::to_string(w.evidence).expect("blocks serialize")))
            .item("updated_at", n(w.now))
            .item("submission_key", s(w.key))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        items.push(TransactWriteItem::builder().put(evidence).build());
        items.extend(w.events.iter().map(|e| self.outbox_put(e)));
        self.transact(items).await
    }
}

/// XP totals from a user's `XP` item (an empty item: none yet).
pub(crate) fn xp_totals(item: &Item) -> XpTotals {
    let by_pillar = item
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("xp#")?.to_string(), v.as_n().ok()?.parse().ok()?)))
        .collect();
    XpTotals {
        total: item.num("xp_total").unwrap_or(0),
        by_pillar,
        quests_completed: item.num("quests_completed").unwrap_or(0),
    }
}

/// The learning state per quest found among a user's items (`Q#<quest>`, `Q#<quest>#TASK#<task>`,
/// `Q#<quest>#EVIDENCE#<task>`); other items are ignored.
pub(crate) fn quest_states(items: &[Item]) -> HashMap<String, QuestState> {
    let mut states: HashMap<String, QuestState> = HashMap::new();
    for item in items {
        let Some(rest) = item.str("sk").and_then(|sk| sk.strip_prefix("Q#")) else { continue };
        let mut parts = rest.splitn(3, '#');
        let (Some(qid), kind, id) = (parts.next(), parts.next(), parts.next()) else { continue };
        let state = states.entry(qid.to_string()).or_default();
        match (kind, id) {
            (None, _) => {
                state.enrollment = Some(Enrollment {
                    status: item.str("status").unwrap_or("active").to_string(),
                    tasks_completed: item.num("tasks_completed").unwrap_or(0),
                    completed_at: item.num("completed_at"),
                    version: item.num("version").unwrap_or(0),
                });
            }
            (Some("TASK"), Some(tid)) => {
                state.tasks.insert(
                    tid.to_string(),
                    UserTask {
                        task_id: tid.to_string(),
                        completed: item.str("status") == Some("completed"),
                        completion_id: item.str("completion_id").map(str::to_string),
                        completed_at: item.num("completed_at"),
                    },
                );
            }
            (Some("EVIDENCE"), Some(tid)) => {
                let blocks = item.str("blocks").and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
                state.evidence.insert(tid.to_string(), blocks);
            }
            _ => {}
        }
    }
    states
}

pub(crate) fn quest_from_item(item: &Item) -> Option<Quest> {
    serde_json::from_str(item.get("doc").and_then(|v| AttributeValue::as_s(v).ok())?).ok()
}
