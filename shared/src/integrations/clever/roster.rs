//! What we keep of Clever's students, teachers and sections, and how two versions are compared.
//!
//! Values are normalized before they are stored or compared: trimmed, and null, empty and blank are
//! the same (absent) value, so a record is "updated" only when its data really changed. Clever's
//! `last_modified` is kept but not compared (Clever moves it without changing anything we keep).
//! A section's `term_id` is not kept at all: Clever's term ids are not stable, so a stored one would
//! be wrong by the next listing and would make every section look changed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::store::roster::RosterRecord;

/// The entities a school sync covers, in sync order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Student,
    Teacher,
    Section,
}

impl Entity {
    pub const ALL: [Entity; 3] = [Entity::Student, Entity::Teacher, Entity::Section];

    /// The name in keys and history (`STUDENT`...).
    pub fn key(self) -> &'static str {
        match self {
            Entity::Student => "STUDENT",
            Entity::Teacher => "TEACHER",
            Entity::Section => "SECTION",
        }
    }

    /// The name in the API (`students`...).
    pub fn plural(self) -> &'static str {
        match self {
            Entity::Student => "students",
            Entity::Teacher => "teachers",
            Entity::Section => "sections",
        }
    }

    pub fn parse(s: &str) -> Option<Entity> {
        Entity::ALL
            .into_iter()
            .find(|e| e.plural() == s || e.key().eq_ignore_ascii_case(s) || e.plural().trim_end_matches('s') == s)
    }

    /// The Data API list of a school's records of this entity.
    pub fn list_path(self, school: &str) -> String {
        match self {
            Entity::Student => format!("/v3.0/schools/{school}/users?role=student"),
            Entity::Teacher => format!("/v3.0/schools/{school}/users?role=teacher"),
            Entity::Section => format!("/v3.0/schools/{school}/sections"),
        }
    }

    /// The fields of Clever's object we know (kept, or deliberately ignored); others are reported.
    fn known_fields(self) -> &'static [&'static str] {
        match self {
            Entity::Student | Entity::Teacher => {
                &["id", "district", "email", "name", "roles", "created", "last_modified"]
            }
            Entity::Section => &[
                "id",
                "district",
                "school",
                "name",
                "period",
                "subject",
                "grade",
                "course",
                "teacher",
                "teachers",
                "students",
                "term_id",
                "section_number",
                "sis_id",
                "created",
                "last_modified",
                "ext",
            ],
        }
    }

    /// Maps a Clever object to the record we keep; `None` when it is not usable (no id).
    pub fn record(self, object: &Value) -> Option<RosterRecord> {
        let id = object["id"].as_str().map(str::trim).filter(|id| !id.is_empty())?.to_string();
        let text = |v: &Value| normalize(v);
        let mut fields = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                fields.insert(k.to_string(), v);
            }
        };
        match self {
            Entity::Student | Entity::Teacher => {
                put("first_name", text(&object["name"]["first"]));
                put("last_name", text(&object["name"]["last"]));
                put("email", text(&object["email"]));
                put("last_modified", text(&object["last_modified"]));
                let role =
                    if self == Entity::Student { &object["roles"]["student"] } else { &object["roles"]["teacher"] };
                if self == Entity::Student {
                    put("grade", text(&role["grade"]));
                    put("student_number", text(&role["student_number"]));
                } else {
                    put("title", text(&role["title"]));
                    put("teacher_number", text(&role["teacher_number"]));
                }
                put("sis_id", text(&role["sis_id"]));
            }
            Entity::Section => {
                for key in ["name", "period", "subject", "grade", "course", "teacher", "last_modified"] {
                    put(key, text(&object[key]));
                }
                put("teachers", ids(&object["teachers"]));
                put("students", ids(&object["students"]));
            }
        }
        Some(RosterRecord { id, fields })
    }

    /// Fields of `object` this version does not map (a Clever schema change to look at).
    pub fn unmapped_fields(self, object: &Value) -> Vec<String> {
        let known = self.known_fields();
        object
            .as_object()
            .map(|o| o.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect())
            .unwrap_or_default()
    }

    /// The entities of `school` a Clever event concerns: for `users.*`, each of the user's roles
    /// (student, teacher) in that school (one Clever user may hold both, and teach in several
    /// schools); for `sections.*`, the section when it belongs to that school. Other types: none.
    pub fn of_event_in(event_type: &str, object: &Value, school: &str) -> Vec<Entity> {
        let in_school = |v: &Value| {
            v["school"] == school || v["schools"].as_array().is_some_and(|all| all.iter().any(|s| s == school))
        };
        match event_type.split('.').next() {
            Some("users") => [(Entity::Student, "student"), (Entity::Teacher, "teacher")]
                .into_iter()
                .filter(|(_, role)| {
                    let role = &object["roles"][*role];
                    role.is_object() && in_school(role)
                })
                .map(|(entity, _)| entity)
                .collect(),
            Some("sections") if object["school"].is_null() || object["school"] == school => vec![Entity::Section],
            _ => Vec::new(),
        }
    }
}

/// Trimmed text; null, empty and blank are all "".
pub fn normalize(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

fn ids(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

/// Whether two versions of a record differ in anything but `last_modified`.
pub fn changed(old: &RosterRecord, new: &RosterRecord) -> bool {
    let compared = |r: &RosterRecord| -> BTreeSet<(String, String)> {
        r.fields
            .iter()
            .filter(|(k, v)| *k != "last_modified" && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    compared(old) != compared(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn student(first: Value, email: Value, modified: &str) -> RosterRecord {
        Entity::Student
            .record(&json!({"id": "s1", "name": {"first": first, "last": "Lovelace"}, "email": email,
                            "last_modified": modified, "roles": {"student": {"grade": "7"}}}))
            .unwrap()
    }

    #[test]
    fn null_empty_and_blank_are_the_same_value_and_last_modified_is_not_a_change() {
        let a = student(json!("Ada"), Value::Null, "2026-01-01");
        assert!(!changed(&a, &student(json!(" Ada "), json!(""), "2026-02-02")));
        assert!(!changed(&a, &student(json!("Ada"), json!("   "), "2026-03-03")));
        assert!(changed(&a, &student(json!("Ada"), json!("ada@example.org"), "2026-01-01")));
        assert!(changed(&a, &student(json!("Augusta"), Value::Null, "2026-01-01")));
    }

    #[test]
    fn records_need_an_id_and_unknown_fields_are_reported() {
        assert!(Entity::Student.record(&json!({"name": {"first": "x"}})).is_none());
        assert!(Entity::Student.record(&json!({"id": "  "})).is_none());
        let with_new = json!({"id": "s1", "name": {}, "pronouns": "she/her"});
        assert_eq!(Entity::Student.unmapped_fields(&with_new), ["pronouns"]);
        let section = Entity::Section.record(&json!({"id": "x", "students": ["a", "b"], "teachers": []})).unwrap();
        assert_eq!(section.fields["students"], "a,b");
        assert!(!section.fields.contains_key("teachers"));
    }

    #[test]
    fn events_name_every_role_the_user_has_in_the_school() {
        let of = |kind: &str, object: Value| Entity::of_event_in(kind, &object, "A");
        assert_eq!(of("users.updated", json!({"roles": {"student": {"school": "A"}}})), [Entity::Student]);
        let both = json!({"roles": {"student": {"school": "A"}, "teacher": {"school": "B", "schools": ["B", "A"]}}});
        assert_eq!(of("users.updated", both), [Entity::Student, Entity::Teacher]);
        // Studies in B, teaches in A: only the teacher record belongs to A.
        let elsewhere = json!({"roles": {"student": {"school": "B", "schools": ["B"]}, "teacher": {"school": "A"}}});
        assert_eq!(of("users.created", elsewhere), [Entity::Teacher]);
        assert_eq!(of("sections.deleted", json!({"school": "A"})), [Entity::Section]);
        assert!(of("sections.updated", json!({"school": "B"})).is_empty());
        assert!(of("courses.created", json!({})).is_empty());
        assert!(of("terms.created", json!({"school": "A"})).is_empty());
        assert_eq!(Entity::parse("students"), Some(Entity::Student));
        assert_eq!(Entity::parse("TEACHER"), Some(Entity::Teacher));
    }

    /// Clever's pages and events are bytes from outside: any JSON maps to a record or to nothing.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::hash_map(
                    "(id|name|email|data|type|school|schools|roles|[a-z_]{1,8})",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_clever_object_maps_or_is_skipped(object in any_json(), event_type in "[a-z.]{0,20}") {
            for entity in [Entity::Student, Entity::Teacher, Entity::Section] {
                let _ = entity.record(&object);
                let _ = entity.unmapped_fields(&object);
            }
            let _ = Entity::of_event_in(&event_type, &object, "school-1");
            let _ = normalize(&object);
        }
    }
}
