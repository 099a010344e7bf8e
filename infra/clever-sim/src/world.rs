//! The simulated Clever data: districts (each with its app credentials and district token), schools,
//! users (students, teachers) and sections, in Clever's v3.0 JSON shapes, plus the district's event
//! feed. Generated from a seed, so a run is reproducible; changed through methods that also append the
//! matching event (`users.created`, `users.updated` with `previous_attributes`, `users.deleted`, ...).
//!
//! Ids are 24 hex digits from one counter, so sorting by id is sorting by creation, as with Clever's
//! ObjectIds, and `starting_after`/`ending_before` paging works on that order.
//!
//! The quirks of the real API (`shared/reference/README.md`, "Quirks a faithful test double should
//! reproduce") are on by default: some users have no `email` or `name.middle` key at all, some strings
//! carry trailing spaces or capitals, a user with several roles is one user (`roles.student` and
//! `roles.teacher`), a teacher may teach in several schools, and section `term_id`s change from one
//! listing to the next.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// How big a generated district is, and which of its users have several roles.
#[derive(Clone, Copy, Debug)]
pub struct DistrictSpec {
    pub schools: usize,
    pub students_per_school: usize,
    pub teachers_per_school: usize,
    pub sections_per_school: usize,
    /// Students of each school who also teach there: one Clever user with both roles.
    pub student_teachers: usize,
    /// Teachers of each school who also teach at the next school (`roles.teacher.schools` lists both).
    pub shared_teachers: usize,
    /// Students carry Clever's optional fields (demographics, location, enrollments, `ext`), 3 to 5 KB
    /// each as in real districts, instead of about 0.6 KB.
    pub realistic_users: bool,
}

impl DistrictSpec {
    /// A district of single-role users of the simulator's compact size.
    pub const fn sized(schools: usize, students: usize, teachers: usize, sections: usize) -> Self {
        Self {
            schools,
            students_per_school: students,
            teachers_per_school: teachers,
            sections_per_school: sections,
            student_teachers: 0,
            shared_teachers: 0,
            realistic_users: false,
        }
    }
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
    /// Hypothetical: Clever's district tokens announce no lifetime (they last until Clever rotates or
    /// revokes them). When set, token listings carry `expires_in` (seconds) and tokens stop working
    /// after it, only to test the client's rule for tokens that do announce one.
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
    /// Section `term_id`s are rendered anew at every listing (Clever's are not stable).
    pub stable_term_ids: bool,
    /// Bumped by every sections listing; part of each rendered `term_id`.
    pub term_epoch: u64,
    /// Students added later carry Clever's optional fields too (a district generated realistic).
    pub realistic_users: bool,
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
            stable_term_ids: false,
            term_epoch: 0,
            realistic_users: specs.iter().any(|s| s.realistic_users),
            next_id: 1,
            rng: StdRng::seed_from_u64(seed),
        };
        for (d, spec) in specs.iter().enumerate() {
            let mut district_schools: Vec<(String, Vec<String>)> = Vec::new();
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
                let students: Vec<String> = (0..spec.students_per_school)
                    .map(|_| world.insert_student(&district, &school, spec.realistic_users))
                    .collect();
                let teachers: Vec<String> =
                    (0..spec.teachers_per_school).map(|_| world.insert_teacher(&district, &school)).collect();
                for student in students.iter().take(spec.student_teachers) {
                    world.add_role_silently(student, "teacher", &school);
                }
                for n in 0..spec.sections_per_school {
                    let teacher = teachers.get(n % teachers.len().max(1)).cloned();
                    let start = (n * 25) % students.len().max(1);
                    let roster: Vec<String> =
                        students.iter().cycle().skip(start).take(25.min(students.len())).cloned().collect();
                    world.insert_section(&district, &school, n, teacher, roster);
                }
                district_schools.push((school, teachers));
            }
            // Shared teachers: the first teachers of each school also teach at the next one.
            for i in 0..district_schools.len().saturating_sub(1) {
                let next = district_schools[i + 1].0.clone();
                for teacher in district_schools[i].1.clone().iter().take(spec.shared_teachers) {
                    world.add_role_silently(teacher, "teacher", &next);
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

    /// A user's common fields as Clever sends them, quirks included: no `email` key for about one in
    /// five students, no `name.middle` key for about a third, and about one in twenty with a trailing
    /// space in the first name or capitals in the email.
    fn user_fields(&mut self, id: &str, district: &str, domain: &str, always_email: bool) -> Value {
        let (first, last) = self.name();
        let messy = self.rng.random_range(0..20) == 0;
        let mut email = format!("{}.{}{}@{domain}", first.to_lowercase(), last.to_lowercase(), self.next_id);
        if messy {
            email = email.to_uppercase();
        }
        let first = if messy { format!("{first} ") } else { first };
        let mut user = json!({"id": id, "district": district, "name": {"first": first, "last": last},
                              "created": STAMP, "last_modified": STAMP, "roles": {}});
        if always_email || self.rng.random_range(0..10) > 1 {
            user["email"] = json!(email);
        }
        if self.rng.random_range(0..3) > 0 {
            user["name"]["middle"] = json!("");
        }
        user
    }

    fn insert_student(&mut self, district: &str, school: &str, realistic: bool) -> String {
        let id = self.new_id();
        let mut user = self.user_fields(&id, district, "students.example.org", false);
        let grade = self.rng.random_range(6..=8).to_string();
        let number = format!("S{:07}", self.next_id);
        user["roles"]["student"] = json!({"school": school, "schools": [school], "grade": grade,
                                          "student_number": number, "sis_id": number, "legacy_id": id,
                                          "enrollments": []});
        if realistic {
            self.add_realistic_student_fields(&mut user, school);
        }
        self.users.insert(id.clone(), user);
        id
    }

    fn insert_teacher(&mut self, district: &str, school: &str) -> String {
        let id = self.new_id();
        let mut user = self.user_fields(&id, district, "staff.example.org", true);
        user["roles"]["teacher"] = json!({"school": school, "schools": [school], "title": "Teacher",
                                          "teacher_number": format!("T{:06}", self.next_id), "legacy_id": id});
        self.users.insert(id.clone(), user);
        id
    }

    /// Clever's optional student fields (`v3.0.yml`, `Student`), under `roles.student` where Clever puts
    /// them: demographics, a home location, contacts, enrollments and district extension fields.
    fn add_realistic_student_fields(&mut self, user: &mut Value, school: &str) {
        let n = self.next_id;
        let zip = format!("{:05}", 10_000 + n % 89_999);
        let enrollments: Vec<Value> = (0..4)
            .map(|k| json!({"school": school, "start_date": format!("202{k}-08-15"), "end_date": format!("202{}-06-15", k + 1)}))
            .collect();
        let contacts: Vec<Value> = (0..2)
            .map(|k| {
                json!({"name": format!("Guardian {k} of student {n}"), "relationship": "Parent",
                           "phone": format!("+1-555-01{:02}-{:04}", k, n % 10_000),
                           "email": format!("guardian{k}.{n}@family.example.org"), "sis_id": format!("C{n}{k}")})
            })
            .collect();
        let role = &mut user["roles"]["student"];
        role["dob"] = json!(format!("2013-0{}-1{}", n % 9 + 1, n % 9));
        role["gender"] = json!(["F", "M", "X"][(n % 3) as usize]);
        role["race"] = json!("Two or More Races");
        role["hispanic_ethnicity"] = json!("N");
        role["ell_status"] = json!("N");
        role["frl_status"] = json!("Paid");
        role["iep_status"] = json!("N");
        role["home_language"] = json!("English");
        role["graduation_year"] = json!("2031");
        role["state_id"] = json!(format!("ST{n:010}"));
        role["location"] = json!({"address": format!("{n} Long Schoolhouse Road, Apartment {}", n % 400),
                                  "city": "Springfield", "state": "IL", "zip": zip,
                                  "lat": "39.7817", "lon": "-89.6501"});
        role["enrollments"] = json!(enrollments);
        role["contacts"] = json!(contacts);
        role["credentials"] = json!({"district_username": format!("student{n}")});
        role["ext"] = json!({
            "sis_program_codes": ["GT", "STEM", "MUSIC", "ATHLETICS"],
            "transportation": {"bus_route": format!("R{}", n % 40), "stop": format!("Corner of Elm and {}th", n % 90)},
            "accommodations": "Extended time on assessments; preferential seating near the front of the classroom.",
            "notes": "Imported from the district SIS nightly export. Contact the registrar's office for corrections \
                      to enrollment history, guardianship records or program participation.",
            "history": (0..12).map(|k| json!({"term": format!("T{k}"), "homeroom": format!("HR-{}", (n + k) % 30),
                                              "counselor": format!("Counselor {}", (n + k) % 12)})).collect::<Vec<_>>(),
        });
    }

    /// Gives an existing user a (further) role in a school, without an event (world generation).
    fn add_role_silently(&mut self, id: &str, role: &str, school: &str) {
        let Some(user) = self.users.get_mut(id) else { return };
        let entry = &mut user["roles"][role];
        if !entry.is_object() {
            let n = id.trim_start_matches('0');
            *entry = match role {
                "teacher" => {
                    json!({"school": school, "schools": [], "title": "Teacher", "teacher_number": format!("T{n}"), "legacy_id": id})
                }
                _ => {
                    json!({"school": school, "schools": [], "grade": "7", "student_number": format!("S{n}"), "legacy_id": id})
                }
            };
        }
        if let Some(schools) = entry["schools"].as_array_mut()
            && !schools.iter().any(|s| s == school)
        {
            schools.push(json!(school));
        }
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

    /// A section as a listing shows it: with a `term_id` that changes at every listing unless
    /// `stable_term_ids` (Clever's term ids are not stable).
    pub fn render_section(&self, section: &Value) -> Value {
        let mut section = section.clone();
        let epoch = if self.stable_term_ids { 0 } else { self.term_epoch };
        let id = section["id"].as_str().unwrap_or_default();
        section["term_id"] = json!(format!("{:024x}", fnv(id) ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        section
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
        let id = self.insert_student(&district, school, self.realistic_users);
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

    /// Gives a user a role in a school (a student who starts teaching, a teacher taking a class at
    /// another school), announced by `users.updated`.
    pub fn add_role(&mut self, id: &str, role: &str, school: &str) {
        let Some(before) = self.users.get(id).map(|u| u["roles"].clone()) else { return };
        self.add_role_silently(id, role, school);
        let user = self.users[id].clone();
        self.emit("users.updated", &user, Some(json!({"roles": before})));
    }

    /// Takes a user's role in a school away (the role goes when it was its last school), announced by
    /// `users.updated`.
    pub fn remove_role(&mut self, id: &str, role: &str, school: &str) {
        let Some(user) = self.users.get_mut(id) else { return };
        let before = user["roles"].clone();
        let entry = &mut user["roles"][role];
        if let Some(schools) = entry["schools"].as_array_mut() {
            schools.retain(|s| s != school);
        }
        let left = entry["schools"].as_array().and_then(|s| s.first().cloned());
        match left {
            Some(other) => entry["school"] = other,
            None => {
                if let Some(roles) = user["roles"].as_object_mut() {
                    roles.remove(role);
                }
            }
        }
        let user = user.clone();
        self.emit("users.updated", &user, Some(json!({"roles": before})));
    }

    /// Removes a user (graduated, transferred), announced by `users.deleted`; the sections they were
    /// in change too, each announced by `sections.updated`.
    pub fn remove_user(&mut self, id: &str) {
        if let Some(user) = self.users.remove(id) {
            let touched: Vec<String> = self
                .sections
                .iter()
                .filter(|(_, s)| {
                    ["students", "teachers"].iter().any(|k| s[*k].as_array().is_some_and(|a| a.iter().any(|x| x == id)))
                })
                .map(|(sid, _)| sid.clone())
                .collect();
            self.emit("users.deleted", &user, None);
            for section in touched {
                self.update_section(&section, |s| {
                    for key in ["students", "teachers"] {
                        if let Some(list) = s[key].as_array_mut() {
                            list.retain(|x| x != id);
                        }
                    }
                    if s["teacher"] == id {
                        s["teacher"] = s["teachers"].as_array().and_then(|t| t.first().cloned()).unwrap_or(Value::Null);
                    }
                });
            }
        }
    }

    /// A new section in `school`, announced by `sections.created`.
    pub fn add_section(&mut self, school: &str, teacher: Option<String>, students: Vec<String>) -> String {
        let district = self.district_of_school(school);
        let n = self.sections.values().filter(|s| s["school"] == school).count();
        let id = self.insert_section(&district, school, n, teacher, students);
        let section = self.sections[&id].clone();
        self.emit("sections.created", &section, None);
        id
    }

    /// Changes a section, announced by `sections.updated` with the previous values of what changed.
    pub fn update_section(&mut self, id: &str, change: impl FnOnce(&mut Value)) {
        let Some(section) = self.sections.get_mut(id) else { return };
        let before = section.clone();
        change(section);
        let after = section.clone();
        let previous: serde_json::Map<String, Value> = after
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| before.get(k.as_str()) != Some(*v))
            .map(|(k, _)| (k.clone(), before[k.as_str()].clone()))
            .collect();
        let rendered = self.render_section(&after);
        self.emit("sections.updated", &rendered, Some(Value::Object(previous)));
    }

    /// Removes a section, announced by `sections.deleted`.
    pub fn remove_section(&mut self, id: &str) {
        if let Some(section) = self.sections.remove(id) {
            let rendered = self.render_section(&section);
            self.emit("sections.deleted", &rendered, None);
        }
    }

    /// A new term for a school's district, announced by `terms.created` (an event a roster sync ignores).
    pub fn new_term(&mut self, school: &str) -> String {
        let district = self.district_of_school(school);
        let id = self.new_id();
        let term = json!({"id": id, "district": district, "name": "Spring", "start_date": "2027-01-10",
                          "end_date": "2027-06-10"});
        self.emit("terms.created", &term, None);
        id
    }

    /// Removes a school (closed, or the district withdrew it from the app): no longer listed,
    /// `/schools/{id}` answers 404, announced by `schools.deleted`.
    pub fn remove_school(&mut self, id: &str) {
        if let Some(school) = self.schools.remove(id) {
            self.emit("schools.deleted", &school, None);
        }
    }

    /// A new school year at `school`, as the events feed shows it: every student moves up a grade
    /// (`users.updated`), a quarter graduate (`users.deleted`, and their sections change), as many new
    /// students arrive (`users.created`), and every section is replaced (`sections.deleted`, then
    /// `sections.created` with the new roster). Returns how many events it added.
    pub fn year_rollover(&mut self, school: &str) -> usize {
        let before = self.events.len();
        let students: Vec<String> =
            self.school_users(school, "student").iter().filter_map(|u| u["id"].as_str().map(str::to_string)).collect();
        for id in &students {
            self.update_user(id, |u| {
                let grade = u["roles"]["student"]["grade"].as_str().and_then(|g| g.parse::<u32>().ok()).unwrap_or(6);
                u["roles"]["student"]["grade"] = json!((grade + 1).to_string());
            });
        }
        let graduating = students.len() / 4;
        for id in &students[..graduating] {
            self.remove_user(id);
        }
        let newcomers: Vec<String> = (0..graduating).map(|_| self.add_student(school)).collect();
        let sections: Vec<(String, Value)> = self
            .sections
            .iter()
            .filter(|(_, s)| s["school"] == school)
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        let roster: Vec<String> = students[graduating..].iter().chain(&newcomers).cloned().collect();
        for (n, (id, old)) in sections.into_iter().enumerate() {
            self.remove_section(&id);
            let start = (n * 25) % roster.len().max(1);
            let members: Vec<String> = roster.iter().cycle().skip(start).take(25.min(roster.len())).cloned().collect();
            let teacher = old["teacher"].as_str().map(str::to_string);
            self.add_section(school, teacher, members);
        }
        self.events.len() - before
    }

    /// Forgets the feed up to now (the 30-day window moved past every event so far).
    pub fn expire_events(&mut self) {
        self.events_retained_after = self.events.keys().next_back().cloned();
        self.events.clear();
    }

    /// Forgets the events up to and including `id` and keeps the newer ones (the 30-day window moving).
    pub fn expire_events_through(&mut self, id: &str) {
        let kept = self.events.split_off(&format!("{id}\u{0}"));
        self.events_retained_after = Some(id.to_string());
        self.events = kept;
    }

    /// The newest event id of the whole world (tests name expiry points with it).
    pub fn newest_event_id(&self) -> Option<String> {
        self.events.keys().next_back().cloned()
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

/// A stable 64-bit hash of a string (FNV-1a), so rendered term ids do not depend on the process.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
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
