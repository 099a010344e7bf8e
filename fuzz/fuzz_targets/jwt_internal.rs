//! Internal access and refresh tokens (`hub::domain::auth::tokens`), through the real `verify_access`,
//! `verify_refresh` and `guard::authenticate` (bearer header and access cookie), with keys from the
//! in-process Secrets Manager.
//!
//! Input: a mode byte, then
//! - mode % 4 == 0: a raw token as a client sends it; also `Authorization` \0 `Cookie` header bytes;
//! - otherwise: header JSON \0 claims JSON (or, with bit 0x20, claims JSON under a well-formed header
//!   naming the key), signed HS256 by the access (bit 0x10 clear) or refresh key, in its current,
//!   previous or a foreign version (bits 0x0c). This reaches claim parsing and the time checks, which
//!   a fuzzer cannot reach through a forged signature. `@now`, `@now+N`, `@now-N` in the claims
//!   become the current unix time (plus or minus N), so seeds stay inside the time window.
//!
//! Properties: nothing panics; a token verifies only as its own type, only with its own key
//! (current or previous version, never a foreign one), and only inside its time window.
#![no_main]

use hub::domain::auth::tokens::{verify_access, verify_refresh};
use hub_fuzz::{ACCESS, REFRESH, Version, context, key, kid, runtime, sign_raw, split2, with_now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let ctx = context();
    let rt = runtime();
    if mode % 4 == 0 {
        let token = String::from_utf8_lossy(rest);
        let _ = rt.block_on(verify_access(ctx, &token));
        let _ = rt.block_on(verify_refresh(ctx, &token));
        let (authorization, cookie) = split2(rest);
        let mut request = http::Request::builder();
        if let Ok(v) = http::HeaderValue::from_bytes(authorization) {
            request = request.header(http::header::AUTHORIZATION, v);
        }
        if let Ok(v) = http::HeaderValue::from_bytes(cookie) {
            request = request.header(http::header::COOKIE, v);
        }
        if let Ok(request) = request.body(lambda_http::Body::Empty) {
            let _ = rt.block_on(hub::domain::auth::guard::authenticate(ctx, &request));
        }
        return;
    }

    let secret = if mode & 0x10 == 0 { ACCESS } else { REFRESH };
    let version = match (mode >> 2) & 3 {
        0 | 1 => Version::Current,
        2 => Version::Previous,
        _ => Version::Foreign,
    };
    let made_header;
    let (header, claims) = if mode & 0x20 != 0 {
        made_header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, kid(secret, version));
        (made_header.as_bytes(), rest)
    } else {
        split2(rest)
    };
    let claims = with_now(claims, ctx.clock.now());
    let token = sign_raw(header, &claims, &key(secret, version));
    let before = ctx.clock.now();
    let access = rt.block_on(verify_access(ctx, &token));
    let refresh = rt.block_on(verify_refresh(ctx, &token));
    let after = ctx.clock.now();
    hub_fuzz::trace(|| {
        format!(
            "access: {:?}; refresh: {:?}",
            access.as_ref().map(|c| &c.sub).map_err(|e| &e.code),
            refresh.as_ref().map(|c| &c.sub).map_err(|e| &e.code)
        )
    });

    if let Ok(c) = &access {
        assert_eq!(secret, ACCESS, "a token signed with the refresh key verified as an access token");
        assert_ne!(version, Version::Foreign, "a token signed with a foreign key verified");
        assert_eq!(c.token_type, "access");
        in_window(c.iat, c.nbf, c.exp, before, after);
    }
    if let Ok(c) = &refresh {
        assert_eq!(secret, REFRESH, "a token signed with the access key verified as a refresh token");
        assert_ne!(version, Version::Foreign, "a token signed with a foreign key verified");
        assert_eq!(c.token_type, "refresh");
        in_window(c.iat, c.nbf, c.exp, before, after);
    }
});

/// The 30-second leeway of `tokens.rs`, checked in i128 so the check itself cannot overflow.
fn in_window(iat: i64, nbf: i64, exp: i64, before: i64, after: i64) {
    let (iat, nbf, exp) = (iat as i128, nbf as i128, exp as i128);
    assert!(exp + 30 > before as i128, "an expired token verified (exp {exp}, now {before})");
    assert!(nbf - 30 <= after as i128 && iat - 30 <= after as i128, "a future token verified");
}
