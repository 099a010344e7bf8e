//! Spark SSO tokens (`hub::integrations::spark::sso::verify`), with the Spark secret's current and previous
//! versions from the in-process Secrets Manager.
//!
//! Input: a mode byte, then
//! - mode % 4 == 0: a raw token as Spark's redirect carries it;
//! - otherwise: header JSON \0 claims JSON (or, with bit 0x20, claims JSON under `{"alg":"HS256"}`),
//!   signed HS256 by the Spark secret (current, previous or a foreign version: bits 0x0c) or, with
//!   bit 0x10, by our internal access key (which must never pass as Spark's). `@now`, `@now+N`,
//!   `@now-N` in the claims become the current unix time (plus or minus N).
//!
//! Properties: nothing panics; a token verifies only with Spark's secret, current or previous; a
//! verified login has `exp` not past and at most 10 minutes (plus leeway) ahead, a non-blank `sub`
//! of at most 255 bytes, an email, and the token's SHA-256 as fingerprint.
#![no_main]

use hub::integrations::spark::sso;
use hub_fuzz::{ACCESS, SPARK_SSO, Version, context, key, runtime, sign_raw, split2, with_now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let ctx = context();
    let rt = runtime();
    if mode % 4 == 0 {
        let token = String::from_utf8_lossy(rest);
        let _ = rt.block_on(sso::verify(ctx, &token));
        return;
    }

    let secret = if mode & 0x10 == 0 { SPARK_SSO } else { ACCESS };
    let version = match (mode >> 2) & 3 {
        0 | 1 => Version::Current,
        2 => Version::Previous,
        _ => Version::Foreign,
    };
    let (header, claims) = if mode & 0x20 != 0 { (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest) } else { split2(rest) };
    let claims = with_now(claims, ctx.clock.now());
    let token = sign_raw(header, &claims, &key(secret, version));
    let before = ctx.clock.now() as i128;
    let login = rt.block_on(sso::verify(ctx, &token));
    let after = ctx.clock.now() as i128;
    hub_fuzz::trace(|| format!("sso: {:?}", login.as_ref().map(|l| &l.profile.external_id).map_err(|e| &e.message)));

    if let Ok(login) = login {
        assert_eq!(secret, SPARK_SSO, "a token signed with another secret verified as Spark's");
        assert_ne!(version, Version::Foreign, "a token signed with a foreign key verified");
        let exp = login.expires_at as i128;
        assert!(exp + 30 > before, "an expired SSO token verified (exp {exp}, now {before})");
        assert!(exp - after <= 630, "an SSO token living more than 10 minutes verified (exp {exp}, now {after})");
        let sub = &login.profile.external_id;
        assert!(!sub.trim().is_empty() && sub.len() <= 255 && sub.trim() == sub, "bad sub {sub:?}");
        assert!(login.profile.email.as_deref().is_some_and(|e| !e.trim().is_empty()), "no email");
        assert_eq!(login.profile.provider, sso::PROVIDER);
        assert_eq!(login.fingerprint, hub::support::crypto::sha256_hex(token.as_bytes()));
    }
});
