//! The Spark submission webhook's multipart body: `spark::webhook::parse_multipart` (multer, driven
//! on a current-thread tokio runtime), then its `metadata` as the JSON payload (`validate`).
//!
//! Input: `Content-Type` header bytes \0 body. Seeds carry well-formed bodies with their boundary.
//!
//! Properties: nothing panics; a parsed body has its metadata and at most 20 file parts, none of
//! them named `metadata`.
#![no_main]

use hub::integrations::spark::webhook::{SubmissionPayload, parse_multipart, validate};
use hub_fuzz::{runtime, split2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = split2(data);
    let content_type = String::from_utf8_lossy(content_type);
    let parsed = runtime().block_on(parse_multipart(&content_type, body));
    hub_fuzz::trace(|| {
        format!("multipart: {:?}", parsed.as_ref().map(|(m, p)| (m.len(), p.len())).map_err(|e| &e.message))
    });
    let Ok((metadata, parts)) = parsed else { return };
    assert!(parts.len() <= 20, "{} file parts accepted", parts.len());
    assert!(parts.iter().all(|p| p.name != "metadata"));
    if let Ok(payload) = serde_json::from_slice::<SubmissionPayload>(&metadata) {
        let _ = validate(&payload);
    }
});
