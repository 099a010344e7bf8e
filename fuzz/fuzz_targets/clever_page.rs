//! A page of Clever's Data API through the real `clever::client::CleverClient::list`: the bytes are
//! served over loopback by the fake Clever, read as a page with its items kept raw, each item
//! parsed in turn and mapped by `roster::Entity::record` (plus `unmapped_fields`), and its `next`
//! link followed (the fake then answers an empty page).
//!
//! Input: the page body. The mode is the first byte of nothing: every entity maps every page.
//!
//! Properties: nothing panics; a mapped record has a trimmed, non-blank id and no empty field; a
//! record never differs from itself (`roster::changed`); items are mapped or counted as rejected.
#![no_main]

use hub::integrations::clever::roster::{Entity, changed};
use hub_fuzz::{FakeClever, runtime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CLIENT: std::sync::OnceLock<hub::integrations::clever::client::CleverClient> = std::sync::OnceLock::new();
    let server = FakeClever::get();
    let client = CLIENT.get_or_init(|| server.client(0.75));
    for entity in Entity::ALL {
        server.serve(data);
        let listed = runtime().block_on(client.list(&entity.list_path("school-1"), |object| {
            let _ = entity.unmapped_fields(&object);
            entity.record(&object)
        }));
        hub_fuzz::trace(|| {
            format!("{entity:?}: {:?}", listed.as_ref().map(|(r, n)| (r.len(), n)).map_err(|e| e.to_string()))
        });
        let Ok((records, _rejected)) = listed else { continue };
        for record in &records {
            assert!(!record.id.is_empty() && record.id.trim() == record.id, "id {:?}", record.id);
            assert!(record.fields.values().all(|v| !v.is_empty()), "an empty field was kept");
            assert!(!changed(record, &record.clone()));
        }
    }
});
