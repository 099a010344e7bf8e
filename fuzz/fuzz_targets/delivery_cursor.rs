//! Delivery-log cursors (`store::webhooks::decode_cursor`): the `cursor` query parameter of
//! `GET /api/webhooks/deliveries`, any string a client sends.
//!
//! Input: a mode byte, then the cursor text (even mode) or the bytes behind its base64 (odd mode,
//! so the fuzzer reaches the checks after decoding).
//!
//! Properties: nothing panics; an accepted cursor names a delivery (`pk` `DELIVERY#...`, `sk`
//! `DELIVERY`) in the caller's own index, with a 12-digit time prefix; re-encoding it gives the same key.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hub::store::ItemExt;
use hub::store::webhooks::decode_cursor;
use libfuzzer_sys::fuzz_target;

const INDEX: &str = "ORG#mine#DELIVERIES";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cursor = if mode % 2 == 0 { String::from_utf8_lossy(rest).into_owned() } else { URL_SAFE_NO_PAD.encode(rest) };
    let decoded = decode_cursor(INDEX, &cursor);
    hub_fuzz::trace(|| format!("cursor: {:?}", decoded.as_ref().map(|k| k.str("pk"))));
    let Ok(key) = decoded else { return };
    assert_eq!(key.len(), 4);
    assert_eq!(key.str("gsi1pk"), Some(INDEX), "a cursor reached another index");
    assert_eq!(key.str("sk"), Some("DELIVERY"));
    let pk = key.str("pk").expect("pk");
    assert!(pk.starts_with("DELIVERY#") && pk.len() <= 200, "pk {pk:?}");
    let sort = key.str("gsi1sk").expect("gsi1sk");
    assert!((13..=200).contains(&sort.len()) && sort.as_bytes()[..12].iter().all(u8::is_ascii_digit), "sort {sort:?}");
    let again = decode_cursor(INDEX, &URL_SAFE_NO_PAD.encode(format!("{sort}\n{pk}"))).expect("re-encoded cursor");
    assert_eq!(again, key);
});
