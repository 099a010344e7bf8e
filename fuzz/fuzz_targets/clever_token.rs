//! Clever's district-token answer through the real `CleverClient` (`fetch_token`): the fake Clever
//! serves the bytes as the answer of `GET /oauth/tokens?owner_type=district`, and refuses the next
//! API request with a 401 once, so each input is read by a forced token refresh (a client keeps
//! its token otherwise; a new client per input would cost a TLS setup each).
//!
//! Input: a mode byte (bit 0: `refresh_at` = 1.0, the largest `CLEVER_TOKEN_REFRESH_AT` the
//! configuration accepts, else the default 0.75), then the token answer body.
//!
//! Properties: nothing panics.
#![no_main]

use std::sync::OnceLock;

use hub::integrations::clever::client::CleverClient;
use hub_fuzz::{FakeClever, runtime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CLIENTS: OnceLock<[CleverClient; 2]> = OnceLock::new();
    let Some((&mode, body)) = data.split_first() else { return };
    let server = FakeClever::get();
    let clients = CLIENTS.get_or_init(|| [server.client(0.75), server.client(1.0)]);
    server.serve_token(body);
    let answer = runtime().block_on(clients[usize::from(mode & 1)].get("/v3.0/districts"));
    hub_fuzz::trace(|| format!("token then API: {:?}", answer.map_err(|e| e.to_string())));
});
