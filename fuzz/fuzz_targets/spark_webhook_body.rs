//! The Spark submission webhook's JSON body, as `api::spark::submission` reads it: the signature
//! (`spark::webhook::verify_signature`, with the in-process Secrets Manager), then serde into
//! `SubmissionPayload`, `check_timestamp`, `validate` and `idempotency_key`.
//!
//! Input: a mode byte, then
//! - mode % 4 == 0: `X-Spark-Signature` header bytes \0 body;
//! - 1, 2: the body, signed (hex, with or without `sha256=`, any case: bits 0x04, 0x08) with the
//!   current (1) or previous (2) secret, which must verify;
//! - 3: the body signed with a foreign key, which must not verify.
//!
//! Properties: nothing panics; signatures verify exactly when made with the secret; a parsed
//! `submitted_at` is accepted at its own time (`check_timestamp(at, s) == Ok(at)`).
#![no_main]

use hub::integrations::spark::webhook::{
    SubmissionPayload, check_timestamp, idempotency_key, parse_time, validate, verify_signature,
};
use hub_fuzz::{SPARK_WEBHOOK, Version, context, key, runtime, split2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let ctx = context();
    let rt = runtime();
    let body = if mode % 4 == 0 {
        let (header, body) = split2(rest);
        let header = String::from_utf8_lossy(header);
        let _ = rt.block_on(verify_signature(ctx, body, Some(&header)));
        body
    } else {
        let version = [Version::Current, Version::Previous, Version::Foreign][(mode % 4 - 1) as usize];
        let mut header = hex::encode(hub::support::crypto::hmac_sha256(&key(SPARK_WEBHOOK, version), rest));
        if mode & 0x04 != 0 {
            header = header.to_ascii_uppercase();
        }
        if mode & 0x08 != 0 {
            header = format!("sha256={header}");
        }
        let verified = rt.block_on(verify_signature(ctx, rest, Some(&header)));
        assert_eq!(verified.is_ok(), version != Version::Foreign, "signature check wrong for {version:?}");
        rest
    };

    let parsed = serde_json::from_slice::<SubmissionPayload>(body);
    hub_fuzz::trace(|| {
        format!("payload: {:?}", parsed.as_ref().map(|p| validate(p).map_err(|e| e.message)).map_err(|e| e.to_string()))
    });
    let Ok(payload) = parsed else { return };
    let _ = check_timestamp(ctx.clock.now(), &payload.submitted_at);
    if let Some(at) = parse_time(&payload.submitted_at) {
        assert_eq!(check_timestamp(at, &payload.submitted_at).ok(), Some(at));
    }
    let _ = validate(&payload);
    let _ = idempotency_key(&payload);
});
