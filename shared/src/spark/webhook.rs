//! Spark's submission webhook: a student's LMS submission becomes evidence, a completed task and XP.
//!
//! Order of checks (nothing is done for a request that fails one): HMAC-SHA256 signature over the raw
//! body (hex in `X-Spark-Signature`, optional `sha256=` prefix, current or previous secret, constant
//! time); then the timestamp (`X-Spark-Timestamp` in unix seconds when sent, else `submitted_at`)
//! within 5 minutes; then idempotency (the same submission again answers its first completion, before
//! any download); then the payload. Files come by URL from Spark's storage hosts only, through the
//! SSRF-guarded client, streamed into S3 with their type taken from their bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{constant_time_eq, hmac_sha256, random_token, sha256_hex};
use crate::learning::submissions::{self, Recorded, Submission};
use crate::learning::{EvidenceBlock, LmsMapping, Quest, StoredFile};
use crate::outbound::OutboundError;
use crate::secrets::key_bytes;
use crate::{ApiError, Context, files};

pub const SIGNATURE_HEADER: &str = "x-spark-signature";
pub const TIMESTAMP_HEADER: &str = "x-spark-timestamp";
/// How old (or how far ahead) a submission may be.
const REPLAY_WINDOW_SECS: i64 = 300;
/// JSON submissions are small: files come by URL.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// What a synchronous Lambda request can carry (about 6 MB): larger files must come by URL.
pub const MAX_MULTIPART_BYTES: usize = 6 * 1024 * 1024;
const MAX_TEXT_BYTES: usize = 100 * 1024;
const MAX_FILES: usize = 20;
const MAX_SUBMISSION_BYTES: u64 = 200 * 1024 * 1024;
const SOURCE: &str = "spark";

/// Seed 000's payload, as Spark sends it. Unknown fields are ignored (Spark may add some).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The submission time, which must be within the replay window of `now`.
pub fn check_timestamp(now: i64, header: Option<&str>, submitted_at: &str) -> Result<i64, ApiError> {
    let at = match header.map(str::trim).filter(|h| !h.is_empty()) {
        Some(h) => h
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("invalid_timestamp", "X-Spark-Timestamp must be unix seconds"))?,
        None => parse_time(submitted_at)
            .ok_or_else(|| ApiError::bad_request("invalid_timestamp", "submitted_at must be an ISO 8601 UTC time"))?,
    };
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
}

/// Processes a verified, validated submission; `parts` are the files a multipart request carried.
pub async fn process(ctx: &Context, p: &SubmissionPayload, parts: &[UploadedPart]) -> Result<Outcome, ApiError> {
    let store = ctx.store();
    let user_id = store.user_id_by_identity(crate::spark::sso::PROVIDER, &p.spark_user_id).await?.ok_or_else(|| {
        ApiError::not_found(
            "user_not_found",
            "No user has this Spark id yet: the student must sign in through Spark SSO first",
        )
    })?;
    let mapping = LmsMapping {
        platform: SOURCE.into(),
        course_id: p.spark_course_id.clone(),
        assignment_id: p.spark_assignment_id.clone(),
    };
    let key = idempotency_key(p);
    let Some(quest) = store.quest_by_lms(&mapping).await? else {
        if !parts.is_empty() {
            return Err(ApiError::not_found(
                "quest_not_found",
                "No quest maps this assignment yet; only submissions whose files come by URL can wait for one",
            ));
        }
        store
            .save_pending_submission(
                &mapping,
                &key,
                &serde_json::to_string(p).map_err(ApiError::internal)?,
                ctx.clock.now(),
            )
            .await?;
        tracing::info!(
            user_id,
            course = p.spark_course_id,
            assignment = p.spark_assignment_id,
            "submission pending: no quest maps the assignment"
        );
        return Ok(Outcome::Pending);
    };
    if let Some(completion_id) = store.submission_completion(SOURCE, &key).await? {
        return Ok(Outcome::Recorded(Recorded { completion_id, duplicate: true }));
    }
    record_with_files(ctx, &user_id, &quest, &key, p, parts).await.map(Outcome::Recorded)
}

/// Processes the submissions kept for an assignment that a new quest now maps.
pub async fn process_pending(ctx: &Context, quest: &Quest) -> usize {
    let Some(mapping) = quest.lms.as_ref().filter(|m| m.platform == SOURCE) else { return 0 };
    let pending = match ctx.store().pending_submissions(mapping).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "pending submissions could not be read");
            return 0;
        }
    };
    let mut processed = 0;
    for (sk, payload) in pending {
        let outcome = match serde_json::from_str::<SubmissionPayload>(&payload) {
            Ok(p) => process(ctx, &p, &[]).await.map(|_| ()),
            Err(e) => Err(ApiError::internal(e)),
        };
        match outcome {
            Ok(()) => {
                processed += 1;
                if let Err(e) = ctx.store().delete_pending_submission(mapping, &sk).await {
                    tracing::warn!(error = %e, "processed pending submission not removed");
                }
            }
            Err(e) => tracing::warn!(quest_id = quest.id, error = %e, "pending submission still failing; kept"),
        }
    }
    processed
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
        store_files(ctx, user_id, &p.submission_files, parts, &mut blocks, &mut stored).await?;
        let lms_ref = serde_json::json!({ "platform": SOURCE, "user_id": p.spark_user_id, "course_id": p.spark_course_id,
                                          "assignment_id": p.spark_assignment_id });
        let submission =
            Submission { source: SOURCE, key, user_id, quest, evidence: &blocks, grade: p.grade.as_ref(), lms_ref: Some(lms_ref) };
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
                files::stream_to_s3(ctx, &key, response.bytes_stream(), budget).await?
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
        assert_eq!(check_timestamp(at + 299, None, "2026-11-22T02:00:00.123Z").unwrap(), at);
        assert_eq!(check_timestamp(at + 301, None, "2026-11-22T02:00:00Z").unwrap_err().code, "stale_timestamp");
        assert_eq!(check_timestamp(at - 301, None, "2026-11-22T02:00:00Z").unwrap_err().code, "stale_timestamp");
        // The header, when sent, decides.
        assert!(check_timestamp(at, Some(&at.to_string()), "1999-01-01T00:00:00Z").is_ok());
        assert_eq!(check_timestamp(at, None, "yesterday").unwrap_err().code, "invalid_timestamp");
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
}
