//! A student's portfolio as one of their observers sees it: XP by pillar, badges, quests and tasks
//! with completion dates, and (with `can_view_evidence`) the evidence, files as short-lived
//! presigned S3 links.
//!
//! Reads are bounded whatever the student's history: one get (the link), one query of the
//! student's partition (a page per MB of items) and one batch read per 100 quests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::Link;
use super::links::require_link;
use crate::domain::auth::guard::Principal;
use crate::domain::learning::progress::{QuestProgress, TaskProgress, XpSummary};
use crate::domain::learning::{BlockType, EvidenceBlock};
use crate::store::learning::{quest_states, xp_totals};
use crate::store::{Item, ItemExt};
use crate::{ApiError, Context};

/// How long an evidence file link works.
pub const FILE_LINK_SECS: u64 = 300;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Portfolio {
    pub student_id: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// What the caller is to the student, and may do.
    pub relationship: String,
    pub can_view_evidence: bool,
    pub can_comment: bool,
    pub xp: XpSummary,
    pub badges: Vec<EarnedBadge>,
    /// Newest first.
    pub quests: Vec<PortfolioQuest>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EarnedBadge {
    pub id: String,
    pub name: String,
    pub earned_at: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PortfolioQuest {
    #[serde(flatten)]
    pub progress: QuestProgress,
    pub tasks: Vec<PortfolioTask>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PortfolioTask {
    #[serde(flatten)]
    pub progress: TaskProgress,
    /// Present only when the student lets the caller see evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<EvidenceView>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EvidenceView {
    pub order: u32,
    #[serde(rename = "type")]
    pub block_type: BlockType,
    /// Text of `text` blocks; the URL of `link` blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileLink>,
}

/// A stored evidence file, readable for a few minutes through its presigned URL.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FileLink {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Presigned S3 GET URL: a credential, valid until `url_expires_at`.
    pub url: String,
    pub url_expires_at: i64,
}

pub async fn portfolio(ctx: &Context, principal: &Principal, student_id: &str) -> Result<Portfolio, ApiError> {
    let link = require_link(ctx, principal, student_id).await?;
    let store = ctx.store();
    let items = store.user_partition(student_id).await?;
    let states = quest_states(&items);
    let quest_ids: Vec<String> =
        states.iter().filter(|(_, s)| s.enrollment.is_some()).map(|(id, _)| id.clone()).collect();
    let quests = store.quests_by_id(&quest_ids).await?;
    let profile = items.iter().find(|i| i.str("sk") == Some("PROFILE"));
    let xp = xp_totals(&items.iter().find(|i| i.str("sk") == Some("XP")).cloned().unwrap_or_default());
    let expires_at = ctx.clock.now() + FILE_LINK_SECS as i64;
    let mut out = Vec::new();
    for quest in quests {
        let state = &states[&quest.id];
        let Some(enrollment) = &state.enrollment else { continue };
        let mut tasks = Vec::new();
        let mut ordered = quest.tasks.clone();
        ordered.sort_by_key(|t| t.order);
        for t in ordered {
            let evidence = match link.permissions.can_view_evidence {
                true => Some(
                    evidence_views(ctx, state.evidence.get(&t.id).map(Vec::as_slice).unwrap_or_default(), expires_at)
                        .await?,
                ),
                false => None,
            };
            tasks.push(PortfolioTask { progress: TaskProgress::of(&t, state.tasks.get(&t.id)), evidence });
        }
        out.push(PortfolioQuest { progress: QuestProgress::of(&quest, enrollment), tasks });
    }
    // Quests still open first, then the completed ones, newest first; by title within each.
    out.sort_by(|a, b| {
        let (a, b) = (&a.progress, &b.progress);
        b.completed_at.unwrap_or(i64::MAX).cmp(&a.completed_at.unwrap_or(i64::MAX)).then(a.title.cmp(&b.title))
    });
    let Link { relationship, permissions, .. } = link;
    Ok(Portfolio {
        student_id: student_id.to_string(),
        given_name: profile.and_then(|p| p.str("given_name")).map(str::to_string),
        family_name: profile.and_then(|p| p.str("family_name")).map(str::to_string),
        relationship,
        can_view_evidence: permissions.can_view_evidence,
        can_comment: permissions.can_comment,
        xp: XpSummary {
            total: xp.total,
            by_pillar: xp.by_pillar.into_iter().collect::<BTreeMap<_, _>>(),
            quests_completed: xp.quests_completed,
        },
        badges: earned_badges(&items),
        quests: out,
    })
}

fn earned_badges(items: &[Item]) -> Vec<EarnedBadge> {
    let mut badges: Vec<EarnedBadge> = items
        .iter()
        .filter_map(|i| {
            Some(EarnedBadge {
                id: i.str("sk")?.strip_prefix("BADGE#")?.to_string(),
                name: i.str("name").unwrap_or_default().to_string(),
                earned_at: i.num("earned_at")?,
            })
        })
        .collect();
    badges.sort_by_key(|b| std::cmp::Reverse(b.earned_at));
    badges
}

/// Evidence blocks with their files as presigned links (signed locally: no request to S3).
async fn evidence_views(
    ctx: &Context,
    blocks: &[EvidenceBlock],
    expires_at: i64,
) -> Result<Vec<EvidenceView>, ApiError> {
    let mut views = Vec::with_capacity(blocks.len());
    for b in blocks {
        let file = match &b.file {
            Some(f) => {
                let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(FILE_LINK_SECS))
                    .map_err(ApiError::internal)?;
                let presigned = ctx
                    .s3()
                    .get_object()
                    .bucket(&ctx.config.evidence_bucket)
                    .key(&f.key)
                    // Downloaded, never rendered on the bucket's origin (a student's HTML or SVG).
                    .response_content_disposition(attachment(&f.filename))
                    .presigned(config)
                    .await
                    .map_err(|e| ApiError::internal(aws_sdk_s3::error::DisplayErrorContext(e)))?;
                Some(FileLink {
                    filename: f.filename.clone(),
                    content_type: f.content_type.clone(),
                    size: f.size,
                    url: presigned.uri().to_string(),
                    url_expires_at: expires_at,
                })
            }
            None => None,
        };
        views.push(EvidenceView { order: b.order, block_type: b.block_type, text: b.text.clone(), file });
    }
    Ok(views)
}

/// `attachment; filename="..."` with the name reduced to safe ASCII (quotes and controls dropped).
fn attachment(filename: &str) -> String {
    let safe: String = filename
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') { c } else { '_' })
        .take(100)
        .collect();
    format!("attachment; filename=\"{}\"", if safe.trim().is_empty() { "evidence" } else { safe.trim() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_in_headers_are_plain_ascii() {
        assert_eq!(super::attachment("report.pdf"), "attachment; filename=\"report.pdf\"");
        assert_eq!(super::attachment("a\"b\r\nc.pdf"), "attachment; filename=\"a_b__c.pdf\"");
        assert_eq!(super::attachment("   "), "attachment; filename=\"evidence\"");
    }
}
