//! A page of Clever's Events API through the real `CleverClient::events_after` and
//! `newest_event_id` (bytes served over loopback by the fake Clever), then each event classified
//! and mapped as the incremental sync does (`clever::sync`: `type`, `data.object`,
//! `Entity::of_event`, `.deleted` skipped, the latest version of each id kept, `Entity::record`).
//!
//! Input: the events page body.
//!
//! Properties: nothing panics; an event classified as an entity yields a record only with a
//! non-blank id; a record never differs from itself.
#![no_main]

use std::collections::HashMap;

use hub::clever::roster::{Entity, changed};
use hub_fuzz::{FakeClever, runtime};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    static CLIENT: std::sync::OnceLock<hub::clever::client::CleverClient> = std::sync::OnceLock::new();
    let server = FakeClever::get();
    let client = CLIENT.get_or_init(|| server.client(0.75));
    server.serve(data);
    let _ = runtime().block_on(client.newest_event_id());
    server.serve(data);
    let listed = runtime().block_on(client.events_after("evt-0", "school-1"));
    hub_fuzz::trace(|| format!("events: {:?}", listed.as_ref().map(Vec::len).map_err(|e| e.to_string())));
    let Ok(events) = listed else { return };

    // As `sync::School::incremental` reads them.
    let _newest = events.last().and_then(|e| e["id"].as_str()).unwrap_or("evt-0").to_string();
    let mut latest: HashMap<Entity, Vec<(String, Value)>> = HashMap::new();
    for event in &events {
        let kind = event["type"].as_str().unwrap_or_default();
        let object = &event["data"]["object"];
        let Some(entity) = Entity::of_event(kind, object) else { continue };
        if kind.ends_with(".deleted") {
            continue;
        }
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let versions = latest.entry(entity).or_default();
        versions.retain(|(known, _)| *known != id);
        versions.push((id, object.clone()));
    }
    for (entity, objects) in latest {
        for (id, object) in objects {
            if let Some(record) = entity.record(&object) {
                assert_eq!(record.id, id.trim(), "the record is not the event's object");
                assert!(!record.id.is_empty());
                assert!(!changed(&record, &record.clone()));
            }
        }
    }
});
