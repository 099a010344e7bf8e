//! A page of Clever's Events API through the real `CleverClient::events` pager and
//! `newest_event_id` (bytes served over loopback by the fake Clever), then reduced to roster changes
//! exactly as the incremental sync does (`clever::events::page_changes`).
//!
//! Input: the events page body.
//!
//! Properties: nothing panics; every record kept has a non-blank id, is keyed by it, and never differs
//! from itself; the page's last event id is the last id the page carries.
#![no_main]

use hub::integrations::clever::events::page_changes;
use hub::integrations::clever::roster::changed;
use hub_fuzz::{FakeClever, runtime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CLIENT: std::sync::OnceLock<hub::integrations::clever::client::CleverClient> = std::sync::OnceLock::new();
    let server = FakeClever::get();
    let client = CLIENT.get_or_init(|| server.client(0.75));
    server.serve(data);
    let _ = runtime().block_on(client.newest_event_id());
    server.serve(data);
    let mut pages = client.events("school-1", Some("evt-0"), 1000);
    let page = runtime().block_on(pages.next_page(Some));
    hub_fuzz::trace(|| format!("events: {:?}", page.as_ref().map(|p| p.as_ref().map(|p| p.items.len())).map_err(|e| e.to_string())));
    let Ok(Some(page)) = page else { return };

    let changes = page_changes(&page.items, "school-1");
    for records in changes.records.values() {
        for (id, record) in records {
            assert_eq!(&record.id, id, "a record is keyed by its own id");
            assert!(!record.id.is_empty());
            assert!(!changed(record, &record.clone()));
        }
    }
    let last = page.items.iter().rev().find_map(|e| e["id"].as_str());
    assert_eq!(changes.last_event_id.as_deref(), last);
});
