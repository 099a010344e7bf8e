//! What one page of Clever's events feed changes in one school's roster.
//!
//! Incremental syncs apply the feed a page at a time: each page is reduced here to the latest version
//! of each changed record, the deletions it announced (left to the next full sync, EC-005), the
//! objects without a usable id, and the fields we do not map. A user with several roles changes each
//! of their records in the school; a section changes when it is the school's. Other event types
//! (`terms.*`, `courses.*`, `schools.*`, ...) change no roster record.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::roster::Entity;
use crate::store::roster::RosterRecord;

/// One page's effect on one school's roster.
#[derive(Debug, Default)]
pub struct PageChanges {
    /// The latest version of each created or updated record, by entity and id.
    pub records: BTreeMap<Entity, BTreeMap<String, RosterRecord>>,
    /// Deletions announced (applied by the next full sync), by entity.
    pub deletions: BTreeMap<Entity, u64>,
    /// Objects that could not be mapped (no id), by entity.
    pub rejected: BTreeMap<Entity, usize>,
    /// Fields of Clever's objects we do not map, by entity (EC-008).
    pub unmapped: BTreeMap<Entity, BTreeSet<String>>,
    /// The id of the page's last event (where the next page, or the next run, starts).
    pub last_event_id: Option<String>,
}

/// Reduces a page of events (oldest first) to what it changes in `school`'s roster.
pub fn page_changes(events: &[Value], school: &str) -> PageChanges {
    let mut changes = PageChanges::default();
    for event in events {
        if let Some(id) = event["id"].as_str() {
            changes.last_event_id = Some(id.to_string());
        }
        let kind = event["type"].as_str().unwrap_or_default();
        let object = &event["data"]["object"];
        for entity in Entity::of_event_in(kind, object, school) {
            if kind.ends_with(".deleted") {
                *changes.deletions.entry(entity).or_default() += 1;
                continue;
            }
            let unmapped = entity.unmapped_fields(object);
            if !unmapped.is_empty() {
                changes.unmapped.entry(entity).or_default().extend(unmapped);
            }
            match entity.record(object) {
                Some(record) => {
                    changes.records.entry(entity).or_default().insert(record.id.clone(), record);
                }
                None => *changes.rejected.entry(entity).or_default() += 1,
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, kind: &str, object: Value) -> Value {
        json!({"id": id, "type": kind, "data": {"object": object}})
    }

    #[test]
    fn a_page_keeps_the_latest_version_of_each_record_of_the_school() {
        let student =
            |first: &str| json!({"id": "u1", "name": {"first": first}, "roles": {"student": {"school": "A"}}});
        let page = [
            event("e1", "users.created", student("Ada")),
            event("e2", "users.updated", student("Augusta")),
            event("e3", "users.deleted", json!({"id": "u2", "roles": {"teacher": {"school": "A"}}})),
            event("e4", "sections.updated", json!({"id": "s1", "school": "B", "name": "elsewhere"})),
            event("e5", "terms.created", json!({"id": "t1"})),
            event("e6", "users.updated", json!({"roles": {"student": {"school": "A"}}, "pronouns": "she/her"})),
        ];
        let changes = page_changes(&page, "A");
        let students = &changes.records[&Entity::Student];
        assert_eq!(students.len(), 1);
        assert_eq!(students["u1"].fields["first_name"], "Augusta");
        assert_eq!(changes.deletions[&Entity::Teacher], 1);
        assert!(!changes.records.contains_key(&Entity::Section));
        assert_eq!(changes.rejected[&Entity::Student], 1);
        assert_eq!(changes.unmapped[&Entity::Student], BTreeSet::from(["pronouns".to_string()]));
        assert_eq!(changes.last_event_id.as_deref(), Some("e6"));
    }
}
