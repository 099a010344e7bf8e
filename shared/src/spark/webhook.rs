//! Spark's submission webhook: a student's LMS submission becomes evidence, a completed task and XP.
//!
//! Order of checks (nothing is done for a request that fails one): HMAC-SHA256 signature over the raw
//! body (hex in `X-Spark-Signature`, optional `sha256=` prefix, current or previous secret, constant
//! time); then the signed `submitted_at` within 5 minutes (an unsigned header never widens the
//! window, and the idempotency record outlives the window, so a captured body cannot be replayed
//! once it is forgotten); then idempotency (the same submission again answers its first outcome,
//! before any download); then the payload.
//!
//! Text-only and multipart submissions complete inline. Submissions whose files come by URL are
//! recorded as a job and answered `202 processing`: the `spark-submission-worker` downloads the files
//! (from Spark's storage hosts only, through the SSRF-guarded client, streamed into S3 with their type
//! taken from their bytes) and completes them with retries, off the request path.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{constant_time_eq, hmac_sha256, random_token, sha256_hex};
use crate::events::{DomainEvent, QueueError};
use crate::learning::quests::QUEST_MAPPED;
use crate::learning::submissions::{self, Recorded, Submission};
use crate::learning::{EvidenceBlock, LmsMapping, Quest, StoredFile};
use crate::outbound::OutboundError;
use crate::secrets::key_bytes;
use crate::{ApiError, Context, files};

pub const SIGNATURE_HEADER: &str = "x-spark-signature";
/// How old (or how far ahead) a submission may be.
const REPLAY_WINDOW_SECS: i64 = 300;
/// JSON submissions are small: files come by URL.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// What a synchronous Lambda request can carry (about 6 MB): larger files must come by URL.
pub const MAX_MULTIPART_BYTES: usize = 6 * 1024 * 1024;
const MAX_TEXT_BYTES: usize = 100 * 1024;
const MAX_FILES: usize = 20;
const MAX_SUBMISSION_BYTES: u64 = 200 * 1024 * 1024;
const MAX_URL_BYTES: usize = 4096;
/// Time for all the files of one submission (the submission worker's timeout is 300 s).
const FILES_BUDGET: std::time::Duration = std::time::Duration::from_secs(240);
const SOURCE: &str = "spark";

/// Seed 000's payload, as Spark sends it. Unknown fields are ignored (Spark may add some).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmissionPayload {
    pub spark_user_id: String,
    pub spark_assignment_id: String,
    pub spark_course_id: String,
    #[serde(default)]
    pub submission_text: Option<String>,
    #[serde(default)]
    pub submission_files: Vec<FileRef>,
    pub submitted_at: String,
    #[serde(default)]
    pub grade: Option<Value>,
}

/// A file of a submission: by `url` (JSON webhooks), or by `part` with its `sha256` (multipart, where
/// the signed metadata so vouches for the unsigned file parts).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileRef {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub part: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// The declared MIME type; informative only (the bytes decide).
    #[serde(rename = "type", default)]
    pub declared_type: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

/// Checks `X-Spark-Signature` against the raw body with the current, then the previous secret.
pub async fn verify_signature(ctx: &Context, body: &[u8], header: Option<&str>) -> Result<(), ApiError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing_signature", "X-Spark-Signature is required"))?;
    let invalid = || ApiError::unauthorized("invalid_signature", "The signature does not match the body");
    let hex_sig = header.strip_prefix("sha256=").unwrap_or(header);
    let given = hex::decode(hex_sig).map_err(|_| invalid())?;
    let keys =
        ctx.spark_webhook_keys.as_ref().ok_or_else(|| ApiError::unavailable("Spark webhook secret not configured"))?;
    let ring = keys.get(ctx.secrets()).await.map_err(ApiError::unavailable)?;
    let matches = std::iter::once(&ring.current)
        .chain(ring.previous.as_ref())
        .any(|key| constant_time_eq(&hmac_sha256(key_bytes(key), body), &given));
    if matches { Ok(()) } else { Err(invalid()) }
}

/// Submissions are remembered (idempotency) far longer than they are accepted: a body whose record
/// has expired is long outside the window.
const _: () = assert!(crate::store::learning::SUBMISSION_RETENTION_SECS > 100 * REPLAY_WINDOW_SECS);

/// The signed submission time, which must be within the replay window of `now`. Only signed data
/// decides: an `X-Spark-Timestamp` header is not covered by the signature and is ignored.
pub fn check_timestamp(now: i64, submitted_at: &str) -> Result<i64, ApiError> {
    let at = parse_time(submitted_at)
        .ok_or_else(|| ApiError::bad_request("invalid_timestamp", "submitted_at must be an ISO 8601 UTC time"))?;
    if (now - at).abs() > REPLAY_WINDOW_SECS {
        return Err(ApiError::bad_request(
            "stale_timestamp",
            "The submission is more than 5 minutes old or ahead; sign a fresh one",
        ));
    }
    Ok(at)
}

/// `2026-11-22T02:00:00.123Z` (JavaScript's `toISOString`) to unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text.trim().trim_end_matches('Z')).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// What identifies one submission across Spark's retries.
pub fn idempotency_key(p: &SubmissionPayload) -> String {
    sha256_hex(
        format!("{}\0{}\0{}\0{}", p.spark_user_id, p.spark_course_id, p.spark_assignment_id, p.submitted_at).as_bytes(),
    )
}

pub fn validate(p: &SubmissionPayload) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request("invalid_payload", m));
    for (name, value) in [
        ("spark_user_id", &p.spark_user_id),
        ("spark_course_id", &p.spark_course_id),
        ("spark_assignment_id", &p.spark_assignment_id),
    ] {
        if value.trim().is_empty() || value.len() > 200 || value.contains('#') {
            return bad(&format!("{name} must be 1 to 200 characters without '#'"));
        }
    }
    if p.submission_text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
        return bad("submission_text is longer than 100 KB");
    }
    if p.submission_files.len() > MAX_FILES {
        return bad("at most 20 files per submission");
    }
    if p.submission_text.as_deref().is_none_or(|t| t.trim().is_empty()) && p.submission_files.is_empty() {
        return bad("a submission needs text or files");
    }
    for f in &p.submission_files {
        if f.url.as_ref().is_some_and(|u| u.len() > MAX_URL_BYTES) {
            return bad("file urls are at most 4096 characters");
        }
        match (&f.url, &f.part) {
            (Some(_), None) => {}
            (None, Some(_))
                if f.sha256.as_ref().is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) => {}
            _ => return bad("each file needs a url, or (multipart) a part and its sha256"),
        }
    }
    Ok(())
}

/// A file part of a multipart submission.
pub struct UploadedPart {
    pub name: String,
    pub bytes: bytes::Bytes,
}

/// Splits a multipart body into its signed `metadata` (raw bytes) and its file parts.
pub async fn parse_multipart(content_type: &str, body: &[u8]) -> Result<(bytes::Bytes, Vec<UploadedPart>), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_multipart", m);
    let boundary = multer::parse_boundary(content_type).map_err(|e| bad(format!("no boundary: {e}")))?;
    let stream = futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(
        bytes::Bytes::copy_from_slice(body),
    )));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let (mut metadata, mut parts) = (None, Vec::new());
    while let Some(field) = multipart.next_field().await.map_err(|e| bad(e.to_string()))? {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| bad(e.to_string()))?;
        if name == "metadata" {
            metadata = Some(bytes);
        } else if parts.len() < MAX_FILES {
            parts.push(UploadedPart { name, bytes });
        } else {
            return Err(ApiError::bad_request("invalid_payload", "at most 20 files per submission"));
        }
    }
    let metadata = metadata.ok_or_else(|| bad("the metadata field is missing".into()))?;
    Ok((metadata, parts))
}

/// What became of a valid submission.
pub enum Outcome {
    Recorded(Recorded),
    /// No quest maps the assignment yet: kept, and processed when one does.
    Pending,
    /// Accepted; its files are being fetched by the submission worker.
    Processing {
        submission_id: String,
    },
}

/// Takes a verified, validated submission: answers a duplicate with its first outcome, keeps one
/// for an unmapped assignment, queues one whose files come by URL, and records the rest now.
/// `parts` are the files a multipart request carried.
pub async fn accept(ctx: &Context, p: &SubmissionPayload, parts: &[UploadedPart]) -> Result<Outcome, ApiError> {
    let store = ctx.store();
    let key = idempotency_key(p);
    if let Some(completion_id) = store.submission_completion(SOURCE, &key).await? {
        return Ok(Outcome::Recorded(Recorded { completion_id, duplicate: true }));
    }
    let user_id = student(ctx, p).await?;
    let Some(quest) = mapped_quest(ctx, p).await? else {
        if !parts.is_empty() {
            return Err(ApiError::not_found(
                "quest_not_found",
                "No quest maps this assignment yet; only submissions whose files come by URL can wait for one",
            ));
        }
        let payload = serde_json::to_string(p).map_err(ApiError::internal)?;
        store.save_pending_submission(&mapping_of(p), &key, &payload, ctx.clock.now()).await?;
        tracing::info!(
            user_id,
            course = p.spark_course_id,
            assignment = p.spark_assignment_id,
            "submission pending: no quest maps the assignment"
        );
        return Ok(Outcome::Pending);
    };
    if p.submission_files.iter().any(|f| f.url.is_some()) {
        return super::submission_jobs::queue(ctx, &key, p).await;
    }
    record_with_files(ctx, &user_id, &quest, &key, p, parts).await.map(Outcome::Recorded)
}

/// Records a submission now, downloading its files (the submission worker, for queued ones).
pub async fn process(ctx: &Context, p: &SubmissionPayload) -> Result<Outcome, ApiError> {
    let key = idempotency_key(p);
    if let Some(completion_id) = ctx.store().submission_completion(SOURCE, &key).await? {
        return Ok(Outcome::Recorded(Recorded { completion_id, duplicate: true }));
    }
    let user_id = student(ctx, p).await?;
    let Some(quest) = mapped_quest(ctx, p).await? else {
        return Err(ApiError::not_found("quest_not_found", "No quest maps this assignment any more"));
    };
    record_with_files(ctx, &user_id, &quest, &key, p, &[]).await.map(Outcome::Recorded)
}

/// The hub user of the submission's Spark student.
async fn student(ctx: &Context, p: &SubmissionPayload) -> Result<String, ApiError> {
    ctx.store().user_id_by_identity(crate::spark::sso::PROVIDER, &p.spark_user_id).await?.ok_or_else(|| {
        ApiError::not_found(
            "user_not_found",
            "No user has this Spark id yet: the student must sign in through Spark SSO first",
        )
    })
}

fn mapping_of(p: &SubmissionPayload) -> LmsMapping {
    LmsMapping {
        platform: SOURCE.into(),
        course_id: p.spark_course_id.clone(),
        assignment_id: p.spark_assignment_id.clone(),
    }
}

/// The quest that maps the submission's assignment, when it belongs to Spark's organization: a
/// mapping in any other organization (left from before that rule) is ignored.
async fn mapped_quest(ctx: &Context, p: &SubmissionPayload) -> Result<Option<Quest>, ApiError> {
    let Some(quest) = ctx.store().quest_by_lms(&mapping_of(p)).await? else { return Ok(None) };
    match crate::tenancy::admit(ctx, SOURCE, &quest.organization_id) {
        Ok(()) => Ok(Some(quest)),
        Err(_) => {
            tracing::warn!(
                alert = "integration_tenant_mismatch",
                quest_id = quest.id,
                organization_id = quest.organization_id,
                "a quest outside Spark's organization maps a Spark assignment; submission not recorded in it"
            );
            Ok(None)
        }
    }
}

/// The part of `events-dispatch`'s 30 s one event's release may take; the rest follows in a
/// continuation of the event.
const RELEASE_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);
/// Pending submissions read at a time (each up to a JSON body of 1 MB: a 128 MB function reads pages).
const RELEASE_PAGE: i32 = 25;

/// Consumer of `quest.mapped`: a quest now maps a Spark assignment, so the submissions kept for it
/// are taken, a page at a time. Idempotent (each one is removed once recorded; recording is
/// idempotent). Out of time, it queues the event again and returns: a backlog continues, it is not a
/// failure. A submission that still fails is an error: the event is retried, then dead-lettered (its
/// alarm), and the submission stays kept.
pub async fn release_pending(ctx: &Context, event: &DomainEvent) -> Result<(), QueueError> {
    if event.event_type != QUEST_MAPPED || event.data["platform"] != SOURCE {
        return Ok(());
    }
    let store_error = |e: crate::store::StoreError| QueueError(e.to_string());
    let quest_id = event.data["quest_id"].as_str().unwrap_or_default();
    let Some(quest) = ctx.store().get_quest(quest_id).await.map_err(store_error)? else { return Ok(()) };
    let Some(mapping) = quest.lms.as_ref().filter(|m| m.platform == SOURCE) else { return Ok(()) };
    let deadline = std::time::Instant::now() + RELEASE_BUDGET;
    let mut processed = 0;
    loop {
        let (page, more) = ctx.store().pending_submissions(mapping, RELEASE_PAGE).await.map_err(store_error)?;
        let mut failing = 0;
        for (sk, payload) in page {
            if std::time::Instant::now() > deadline {
                tracing::info!(quest_id = quest.id, processed, "pending submissions: more than one run takes");
                return crate::events::requeue(ctx, event).await;
            }
            let outcome = match serde_json::from_str::<SubmissionPayload>(&payload) {
                Ok(p) => accept(ctx, &p, &[]).await,
                Err(e) => Err(ApiError::internal(e)),
            };
            match outcome {
                Ok(Outcome::Pending) => failing += 1,
                Ok(_) => {
                    processed += 1;
                    ctx.store().delete_pending_submission(mapping, &sk).await.map_err(store_error)?;
                }
                Err(e) => {
                    failing += 1;
                    tracing::warn!(quest_id = quest.id, error = %e, "pending submission still failing; kept");
                }
            }
        }
        if failing > 0 {
            return Err(QueueError(format!("{failing} pending submission(s) of quest {} still failing", quest.id)));
        }
        if !more {
            tracing::info!(quest_id = quest.id, processed, "pending submissions released");
            return Ok(());
        }
    }
}

async fn record_with_files(
    ctx: &Context,
    user_id: &str,
    quest: &Quest,
    key: &str,
    p: &SubmissionPayload,
    parts: &[UploadedPart],
) -> Result<Recorded, ApiError> {
    let mut blocks = Vec::new();
    if let Some(text) = p.submission_text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        blocks.push(EvidenceBlock {
            order: 1,
            block_type: crate::learning::BlockType::Text,
            text: Some(text.into()),
            file: None,
        });
    }
    let mut stored = Vec::new();
    let result = async {
        // Bounded well inside the worker's timeout, so a slow host fails this attempt cleanly (its
        // stored files removed below) instead of the Lambda being killed mid-way.
        tokio::time::timeout(FILES_BUDGET, store_files(ctx, user_id, &p.submission_files, parts, &mut blocks, &mut stored))
            .await
            .map_err(|_| files::FileError::Download("the files took too long to download".into()))??;
        let lms_ref = serde_json::json!({ "platform": SOURCE, "user_id": p.spark_user_id, "course_id": p.spark_course_id,
                                          "assignment_id": p.spark_assignment_id });
        let submission =
            Submission { source: SOURCE, key, user_id, quest, task_id: None, evidence: &blocks, grade: p.grade.as_ref(), lms_ref: Some(lms_ref) };
        submissions::record(ctx, &submission).await
    }
    .await;
    match result {
        Ok(recorded) if !recorded.duplicate => Ok(recorded),
        other => {
            // A failure, or a concurrent duplicate that won: these files belong to nothing.
            files::delete(ctx, &stored).await;
            other
        }
    }
}

/// Stores every file of a submission (downloaded by URL, or from its multipart part), in order.
async fn store_files(
    ctx: &Context,
    user_id: &str,
    refs: &[FileRef],
    parts: &[UploadedPart],
    blocks: &mut Vec<EvidenceBlock>,
    stored: &mut Vec<String>,
) -> Result<(), ApiError> {
    if let Some(unlisted) = parts.iter().find(|p| !refs.iter().any(|r| r.part.as_deref() == Some(p.name.as_str()))) {
        return Err(ApiError::bad_request(
            "invalid_payload",
            format!("part {} is not listed in the metadata", unlisted.name),
        ));
    }
    let mut client = None;
    let mut total = 0u64;
    for file in refs {
        let budget = files::MAX_FILE_BYTES.min(MAX_SUBMISSION_BYTES - total);
        let key = format!("evidence/{user_id}/{}", random_token(32));
        let (size, sniffed) = match (&file.url, &file.part) {
            (Some(url), _) => {
                if client.is_none() {
                    client =
                        Some(ctx.outbound(Some(ctx.config.spark_storage_domains.clone())).map_err(ApiError::internal)?);
                }
                let response = download(client.as_ref().expect("set above"), url).await?;
                if response.content_length().is_some_and(|len| len > budget) {
                    return Err(files::FileError::TooLarge(budget).into());
                }
                let body = response.bytes_stream().map(|chunk| chunk.map_err(reqwest::Error::without_url));
                files::stream_to_s3(ctx, &key, body, budget).await?
            }
            (None, Some(name)) => {
                let part = parts.iter().find(|p| &p.name == name).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_payload",
                        format!("the metadata lists part {name}, which was not sent"),
                    )
                })?;
                let expected = file.sha256.as_deref().unwrap_or_default().to_ascii_lowercase();
                if sha256_hex(&part.bytes) != expected {
                    return Err(ApiError::bad_request(
                        "file_hash_mismatch",
                        format!("part {name} does not match its sha256"),
                    ));
                }
                let chunk = futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(
                    part.bytes.clone(),
                )));
                files::stream_to_s3(ctx, &key, chunk, budget).await?
            }
            (None, None) => return Err(ApiError::bad_request("invalid_payload", "a file has neither url nor part")),
        };
        stored.push(key.clone());
        total += size;
        let filename = file.filename.clone().filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "file".into());
        blocks.push(EvidenceBlock {
            order: blocks.len() as u32 + 1,
            block_type: sniffed.block,
            text: None,
            file: Some(StoredFile {
                key,
                filename: filename.chars().take(255).collect(),
                content_type: sniffed.content_type.into(),
                size,
            }),
        });
    }
    Ok(())
}

/// Fetches a file URL through the SSRF guard, mapping refusals and failures to their answers.
async fn download(client: &crate::outbound::OutboundClient, url: &str) -> Result<reqwest::Response, ApiError> {
    let refused = |e: &OutboundError| {
        ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "file_url_not_allowed",
            format!("File URLs must be https on Spark's storage hosts: {e}"),
        )
    };
    let request = client.get(url).map_err(|e| refused(&e))?;
    // `OutboundError` carries no URL: a presigned URL is a credential and must not reach an answer or a log.
    let response = request.send().await.map_err(OutboundError::from).map_err(|e| {
        if e.is_refused() { refused(&e) } else { ApiError::from(files::FileError::Download(e.to_string())) }
    })?;
    if !response.status().is_success() {
        return Err(files::FileError::Download(format!("status {}", response.status().as_u16())).into());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_recent() {
        let at = parse_time("2026-11-22T02:00:00.123Z").unwrap();
        assert_eq!(at, 1795312800);
        assert_eq!(check_timestamp(at + 299, "2026-11-22T02:00:00.123Z").unwrap(), at);
        assert_eq!(check_timestamp(at + 301, "2026-11-22T02:00:00Z").unwrap_err().code, "stale_timestamp");
        assert_eq!(check_timestamp(at - 301, "2026-11-22T02:00:00Z").unwrap_err().code, "stale_timestamp");
        assert_eq!(check_timestamp(at, "yesterday").unwrap_err().code, "invalid_timestamp");
    }

    #[test]
    fn a_submission_is_identified_by_who_what_and_when() {
        let p = |when: &str| SubmissionPayload {
            spark_user_id: "u".into(),
            spark_assignment_id: "a".into(),
            spark_course_id: "c".into(),
            submission_text: Some("x".into()),
            submission_files: vec![],
            submitted_at: when.into(),
            grade: None,
        };
        assert_eq!(idempotency_key(&p("t1")), idempotency_key(&p("t1")));
        assert_ne!(idempotency_key(&p("t1")), idempotency_key(&p("t2")));
    }

    proptest::proptest! {
        /// Everything here reads bytes a sender chose: none of it may panic, whatever they are.
        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(p) = serde_json::from_slice::<SubmissionPayload>(&body) {
                let _ = validate(&p);
                let _ = check_timestamp(1_795_312_800, &p.submitted_at);
                let _ = idempotency_key(&p);
            }
        }

        #[test]
        fn any_time_text_parses_or_is_refused(text in ".{0,64}") {
            let _ = check_timestamp(1_795_312_800, &text);
        }

        #[test]
        fn any_multipart_body_parses_or_is_refused(
            boundary in "[a-zA-Z0-9]{1,20}",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let content_type = format!("multipart/form-data; boundary={boundary}");
            let _ = runtime.block_on(parse_multipart(&content_type, &body));
        }
    }
}
