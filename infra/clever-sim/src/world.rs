//! The simulated Clever data: districts (each with its app credentials and district token), schools,
//! users (students, teachers) and sections, in Clever's v3.0 JSON shapes, plus the district's event
//! feed. Generated from a seed, so a run is reproducible; changed through methods that also append the
//! matching event (`users.created`, `users.updated` with `previous_attributes`, `users.deleted`, ...).
//!
//! Ids are 24 hex digits from one counter, so sorting by id is sorting by creation, as with Clever's
//! ObjectIds, and `starting_after`/`ending_before` paging works on that order.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// How big a generated district is.
#[derive(Clone, Copy, Debug)]
pub struct DistrictSpec {
    pub schools: usize,
    pub students_per_school: usize,
    pub teachers_per_school: usize,
    pub sections_per_school: usize,
}

#[derive(Clone, Debug)]
pub struct District {
    pub id: String,
    pub name: String,
    /// The Clever app's credentials for this district (HTTP Basic on `/oauth/tokens`).
    pub client_id: String,
    pub client_secret: String,
    /// The district token the app currently holds; rotating it invalidates the old one.
    pub token: String,
    /// When set, token listings carry `expires_in` (seconds) and tokens stop working after it.
    pub token_lifetime: Option<u64>,
    pub token_issued_at: std::time::Instant,
    pub events_enabled: bool,
}

/// One event of a district's feed.
#[derive(Clone, Debug)]
pub struct Event {
    pub district: String,
    /// Schools the event concerns (the `school` filter of `/events`).
    pub schools: Vec<String>,
    pub body: Value,
}

pub struct World {
    pub districts: Vec<District>,
    pub schools: BTreeMap<String, Value>,
    pub users: BTreeMap<String, Value>,
    pub sections: BTreeMap<String, Value>,
    pub events: BTreeMap<String, Event>,
    /// Events older than this id have left the feed (Clever keeps 30 days).
    pub events_retained_after: Option<String>,
    next_id: u64,
    rng: StdRng,
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Sophie",
    "Tim",
    "Hedy",
    "John",
    "Shafi",
    "Leslie",
    "Mary",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Wilson",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Goldwasser",
    "Lamport",
    "Clarke",
];
const SUBJECTS: &[&str] = &["math", "science", "english/language arts", "social studies", "arts and music"];
const STAMP: &str = "2026-08-15T12:00:00.000Z";

impl World {
    /// A world of `specs.len()` districts, the same for the same seed.
    pub fn generate(seed: u64, specs: &[DistrictSpec]) -> Self {
        let mut world = Self {
            districts: Vec::new(),
            schools: BTreeMap::new(),
            users: BTreeMap::new(),
            sections: BTreeMap::new(),
            events: BTreeMap::new(),
            events_retained_after: None,
            next_id: 1,
            rng: StdRng::seed_from_u64(seed),
        };
        for (d, spec) in specs.iter().enumerate() {
            let district = world.new_id();
            world.districts.push(District {
                id: district.clone(),
                name: format!("District {}", d + 1),
                client_id: format!("client-{}", d + 1),
                client_secret: format!("secret-{}-{seed}", d + 1),
                token: format!("token-{district}-1"),
                token_lifetime: None,
                token_issued_at: std::time::Instant::now(),
                events_enabled: true,
            });
            for s in 0..spec.schools {
                let school = world.new_id();
                world.schools.insert(
                    school.clone(),
                    json!({"id": school, "district": district, "name": format!("School {} of district {}", s + 1, d + 1),
                           "school_number": format!("{:03}", s + 1), "low_grade": "6", "high_grade": "8",
                           "created": STAMP, "last_modified": STAMP}),
                );
                let students: Vec<String> =
                    (0..spec.students_per_school).map(|_| world.insert_student(&district, &school)).collect();
                let teachers: Vec<String> =
                    (0..spec.teachers_per_school).map(|_| world.insert_teacher(&district, &school)).collect();
                for n in 0..spec.sections_per_school {
                    let teacher = teachers.get(n % teachers.len().max(1)).cloned();
                    let start = (n * 25) % students.len().max(1);
                    let roster: Vec<String> =
                        students.iter().cycle().skip(start).take(25.min(students.len())).cloned().collect();
                    world.insert_section(&district, &school, n, teacher, roster);
                }
            }
        }
        world
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:024x}", self.next_id)
    }

    fn name(&mut self) -> (String, String) {
        let first = FIRST[self.rng.random_range(0..FIRST.len())];
        let last = LAST[self.rng.random_range(0..LAST.len())];
        (first.to_string(), last.to_string())
    }

    fn insert_student(&mut self, district: &str, school: &str) -> String {
        let id = self.new_id();
        let (first, last) = self.name();
        let grade = self.rng.random_range(6..=8).to_string();
        let number = format!("S{:07}", self.next_id);
        // Some students have no email, as in real districts.
        let email = (self.rng.random_range(0..10) > 1)
            .then(|| format!("{}.{}{}@students.example.org", first.to_lowercase(), last.to_lowercase(), self.next_id));
        let user = json!({
            "id": id, "district": district, "email": email,
            "name": {"first": first, "last": last, "middle": ""},
            "created": STAMP, "last_modified": STAMP,
            "roles": {"student": {"school": school, "schools": [school], "grade": grade, "student_number": number,
                                  "sis_id": number, "legacy_id": id, "enrollments": []}},
        });
        self.users.insert(id.clone(), user);
        id
    }

    fn insert_teacher(&mut self, district: &str, school: &str) -> String {
        let id = self.new_id();
        let (first, last) = self.name();
        let user = json!({
            "id": id, "district": district,
            "email": format!("{}.{}{}@staff.example.org", first.to_lowercase(), last.to_lowercase(), self.next_id),
            "name": {"first": first, "last": last, "middle": ""},
            "created": STAMP, "last_modified": STAMP,
            "roles": {"teacher": {"school": school, "schools": [school], "title": "Teacher",
                                  "teacher_number": format!("T{:06}", self.next_id), "legacy_id": id}},
        });
        self.users.insert(id.clone(), user);
        id
    }

    fn insert_section(
        &mut self,
        district: &str,
        school: &str,
        n: usize,
        teacher: Option<String>,
        students: Vec<String>,
    ) -> String {
        let id = self.new_id();
        let subject = SUBJECTS[n % SUBJECTS.len()];
        let section = json!({
            "id": id, "district": district, "school": school, "name": format!("{subject} {}", n + 1),
            "period": format!("{}", n % 7 + 1), "subject": subject, "grade": "7", "section_number": format!("{n:04}"),
            "teacher": teacher, "teachers": teacher.iter().collect::<Vec<_>>(), "students": students,
            "created": STAMP, "last_modified": STAMP,
        });
        self.sections.insert(id.clone(), section);
        id
    }

    fn district_of_school(&self, school: &str) -> String {
        self.schools[school]["district"].as_str().unwrap_or_default().to_string()
    }

    fn emit(&mut self, kind: &str, object: &Value, previous: Option<Value>) -> String {
        let id = self.new_id();
        let schools = object_schools(object);
        let district = object["district"].as_str().unwrap_or_default().to_string();
        let mut data = json!({"object": object});
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        let body = json!({"id": id, "type": kind, "created": STAMP, "data": data});
        self.events.insert(id.clone(), Event { district, schools, body });
        id
    }

    /// A new student in `school`, announced by `users.created`.
    pub fn add_student(&mut self, school: &str) -> String {
        let district = self.district_of_school(school);
        let id = self.insert_student(&district, school);
        let user = self.users[&id].clone();
        self.emit("users.created", &user, None);
        id
    }

    /// Changes a user's fields, announced by `users.updated` with the previous values.
    pub fn update_user(&mut self, id: &str, change: impl FnOnce(&mut Value)) {
        let Some(user) = self.users.get_mut(id) else { return };
        let before = user.clone();
        change(user);
        let after = user.clone();
        let previous = json!({"name": before["name"], "email": before["email"]});
        self.emit("users.updated", &after, Some(previous));
    }

    /// Removes a user (graduated, transferred), announced by `users.deleted`.
    pub fn remove_user(&mut self, id: &str) {
        if let Some(user) = self.users.remove(id) {
            for section in self.sections.values_mut() {
                if let Some(students) = section["students"].as_array_mut() {
                    students.retain(|s| s != id);
                }
            }
            self.emit("users.deleted", &user, None);
        }
    }

    /// Forgets the feed up to now (the 30-day window moved past every event so far).
    pub fn expire_events(&mut self) {
        self.events_retained_after = self.events.keys().next_back().cloned();
        self.events.clear();
    }

    /// Ids of a school's users of one role.
    pub fn school_users(&self, school: &str, role: &str) -> Vec<&Value> {
        self.users.values().filter(|u| user_in_school(u, school, role)).collect()
    }

    pub fn district_by_token(&self, token: &str) -> Option<&District> {
        self.districts.iter().find(|d| d.token == token)
    }

    /// Replaces a district's token (Clever rotates tokens); the old one stops working at once.
    pub fn rotate_token(&mut self, district: usize) -> String {
        let d = &mut self.districts[district];
        let generation: u32 = d.token.rsplit('-').next().and_then(|g| g.parse().ok()).unwrap_or(1) + 1;
        d.token = format!("token-{}-{generation}", d.id);
        d.token_issued_at = std::time::Instant::now();
        d.token.clone()
    }
}

/// Whether a user has `role` in `school`.
pub fn user_in_school(user: &Value, school: &str, role: &str) -> bool {
    let r = &user["roles"][role];
    r.is_object() && (r["school"] == school || r["schools"].as_array().is_some_and(|s| s.iter().any(|x| x == school)))
}

fn object_schools(object: &Value) -> Vec<String> {
    let mut schools = Vec::new();
    if let Some(s) = object["school"].as_str() {
        schools.push(s.to_string());
    }
    for role in ["student", "teacher"] {
        if let Some(list) = object["roles"][role]["schools"].as_array() {
            schools.extend(list.iter().filter_map(|s| s.as_str().map(str::to_string)));
        }
    }
    schools.sort();
    schools.dedup();
    schools
}
