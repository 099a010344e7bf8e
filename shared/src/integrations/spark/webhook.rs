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

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::learning::submissions::Recorded;
use crate::support::crypto::{constant_time_eq, hmac_sha256, sha256_hex};
use crate::support::secrets::key_bytes;
use crate::{ApiError, Context};

pub const SIGNATURE_HEADER: &str = "x-spark-signature";
/// How old (or how far ahead) a submission may be.
const REPLAY_WINDOW_SECS: i64 = 300;
/// JSON submissions are small: files come by URL.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// What a synchronous Lambda request can carry (about 6 MB): larger files must come by URL.
pub const MAX_MULTIPART_BYTES: usize = 6 * 1024 * 1024;
const MAX_TEXT_BYTES: usize = 100 * 1024;
const MAX_FILES: usize = 20;
const MAX_URL_BYTES: usize = 4096;
pub(super) const SOURCE: &str = "spark";

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
