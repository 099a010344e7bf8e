//! School syncs against the Clever simulator and the local AWS stack: full and incremental syncs,
//! change detection, deletions only in full syncs, the shrink guard, failures midway, fallback without
//! events, baselines (empty feeds, quiet schools, expiry however Clever says it), events page by page,
//! users with several roles, per-school isolation and the history.

use std::time::Duration;

use clever_sim::{DistrictSpec, Simulator, World};
use hub::integrations::clever::client::{CleverClient, Credentials};
use hub::integrations::clever::sync::{Mode, SyncOutcome, sync_school};
use hub::store::clever::SyncRecord;

use crate::common::TestStack;
use crate::throttling::{Throttle, ThrottlingDynamo};

const SPEC: DistrictSpec = DistrictSpec::sized(2, 120, 8, 6);

struct Clever {
    t: TestStack,
    sim: Simulator,
    ctx: hub::Context,
    client: CleverClient,
    district: String,
    schools: Vec<String>,
}

async fn setup(name: &str) -> Clever {
    setup_with(name, &[]).await
}

async fn setup_with(name: &str, overrides: &[(&str, &str)]) -> Clever {
    setup_world(name, overrides, World::generate(11, &[SPEC])).await
}

async fn setup_world(name: &str, overrides: &[(&str, &str)], world: World) -> Clever {
    setup_full(name, overrides, world, None).await
}

/// Everything configurable: the simulated world, and a DynamoDB proxy to go through.
async fn setup_full(name: &str, overrides: &[(&str, &str)], world: World, proxy: Option<&ThrottlingDynamo>) -> Clever {
    let sim = Simulator::start(world, 0).await.unwrap();
    let t = TestStack::new(name).await;
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let settings = [
        ("CLEVER_OAUTH_URL", oauth.as_str()),
        ("CLEVER_API_URL", sim.base_url.as_str()),
        ("CLEVER_RETRY_BASE_MS", "10"),
        ("CLEVER_WRITE_RETRY_BASE_MS", "10"),
    ];
    let mut ctx = t.context_for("auth-me", &[settings.as_slice(), overrides].concat());
    if let Some(proxy) = proxy {
        ctx = ctx.with_dynamodb(proxy.client(&t.sdk));
    }
    let (district, client_id, secret, schools) = {
        let w = sim.world.lock().unwrap();
        let d = &w.districts[0];
        (d.id.clone(), d.client_id.clone(), d.client_secret.clone(), w.schools.keys().cloned().collect::<Vec<_>>())
    };
    let client = CleverClient::new(
        ctx.config.clever.clone(),
        &district,
        Credentials { client_id, client_secret: secret.into() },
    )
    .unwrap();
    for school in &schools {
        ctx.store().upsert_clever_school(&district, school, "School").await.unwrap();
    }
    Clever { t, sim, ctx, client, district, schools }
}

impl Clever {
    async fn sync(&self, school: usize, mode: Mode, force: bool) -> SyncOutcome {
        let record = self.ctx.store().clever_school(&self.schools[school]).await.unwrap().unwrap();
        sync_school(&self.ctx, &self.client, &record, mode, force).await.unwrap()
    }

    fn roster(&self, school: usize) -> hub::store::roster::SchoolRoster<'_> {
        hub::store::roster::SchoolRoster::new(
            self.ctx.store(),
            &self.district,
            &self.schools[school],
            Duration::from_millis(10),
            Duration::from_secs(5),
        )
    }

    async fn stored(
        &self,
        school: usize,
        entity: &str,
    ) -> std::collections::HashMap<String, hub::store::roster::RosterRecord> {
        self.roster(school).load(entity).await.unwrap()
    }

    fn students_in_clever(&self, school: usize) -> Vec<String> {
        self.students_in_clever_locked(&self.sim.world.lock().unwrap(), school)
    }
}

fn entity<'a>(outcome: &'a SyncOutcome, name: &str) -> &'a SyncRecord {
    outcome.records.iter().find(|r| r.entity == name).unwrap()
}

fn counts(r: &SyncRecord) -> (u64, u64, u64, u64) {
    (r.processed, r.created, r.updated, r.deleted)
}

#[tokio::test]
async fn a_full_sync_writes_everything_once_and_an_unchanged_one_writes_nothing() {
    let c = setup("clfull").await;
    let first = c.sync(0, Mode::Full, false).await;
    assert_eq!(first.status, "Success");
    assert_eq!(counts(entity(&first, "students")), (120, 120, 0, 0));
    assert_eq!(counts(entity(&first, "teachers")), (8, 8, 0, 0));
    assert_eq!(counts(entity(&first, "sections")), (6, 6, 0, 0));
    assert_eq!(first.roster_writes, 134);
    assert_eq!(c.stored(0, "STUDENT").await.len(), 120);
    // Fewest round trips: a token, the newest event, one page per entity.
    assert_eq!(first.clever_requests, 1 + 1 + 3);
    let school = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap();
    assert!(!school.requires_full_sync);
    assert_eq!(school.last_sync_status.as_deref(), Some("Success"));
    assert_eq!(school.baseline_event_id.as_deref(), Some("start"), "an empty feed is a baseline: from its start");
    // Clever's strings are not normalized and its keys may be missing: stored trimmed, absent as absent.
    let stored = c.stored(0, "STUDENT").await;
    let w = c.sim.world.lock().unwrap().users.clone();
    let untrimmed =
        stored.keys().find(|id| w[*id]["name"]["first"].as_str().unwrap().ends_with(' ')).expect("a messy name");
    assert!(!stored[untrimmed].fields["first_name"].ends_with(' '));
    let keyless = stored.keys().find(|id| w[*id].get("email").is_none()).expect("a user without an email key");
    assert!(!stored[keyless].fields.contains_key("email"));

    // The same data again (term ids differ at every listing, as Clever's do): nothing is written.
    let again = c.sync(0, Mode::Full, false).await;
    assert_eq!(counts(entity(&again, "students")), (120, 0, 0, 0));
    assert_eq!(counts(entity(&again, "sections")), (6, 0, 0, 0), "term ids are not changes");
    assert_eq!(again.roster_writes, 0, "unchanged records are not written");
    // The other school was not touched.
    assert!(c.stored(1, "STUDENT").await.is_empty());
}

#[tokio::test]
async fn incremental_syncs_apply_events_and_leave_deletions_to_full_syncs() {
    let c = setup("clinc").await;
    c.sync(0, Mode::Full, false).await;
    let students = c.students_in_clever(0);
    let (added, renamed, blank, removed) = {
        let mut w = c.sim.world.lock().unwrap();
        let added = w.add_student(&c.schools[0]);
        w.update_user(&students[0], |u| u["name"]["first"] = "Renamed".into());
        // Only whitespace and null-vs-empty: not a change.
        let email = u_email(&w, &students[1]);
        w.update_user(&students[1], |u| u["email"] = format!("  {}  ", email.unwrap_or_default()).into());
        w.remove_user(&students[2]);
        (added, students[0].clone(), students[1].clone(), students[2].clone())
    };
    let before_blank = c.stored(0, "STUDENT").await[&blank].clone();
    // The first full sync saw an empty feed: its baseline is the feed's start, so events drive the
    // next run, with no Data API read (the newest-event probe and one events page).
    let lists_before = c.sim.count("/v3.0/schools/");
    let inc = c.sync(0, Mode::Incremental, false).await;
    let students = entity(&inc, "students");
    assert_eq!(students.sync_type, "incremental");
    // Created, renamed, blank-padded email (no change), removed (left to the full sync).
    assert_eq!(counts(students), (4, 1, 1, 0));
    assert_eq!(c.sim.count("/v3.0/schools/"), lists_before, "no Data API read");
    assert_eq!(inc.clever_requests, 2);
    let stored = c.stored(0, "STUDENT").await;
    assert!(stored.contains_key(&added) && stored.contains_key(&removed), "no deletion outside a full sync");
    assert_eq!(stored[&renamed].fields["first_name"], "Renamed");
    // The blank-padded address is the same record: stored as before.
    assert_eq!(stored[&blank], before_blank, "blank padding is not a change");
    // The removed student's sections changed too (Clever announces them): written from their events.
    assert!(entity(&inc, "sections").updated >= 1);

    // A full sync applies the deletion.
    let full = c.sync(0, Mode::Full, false).await;
    assert_eq!(counts(entity(&full, "students")), (120, 0, 0, 1));
    let baseline = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().baseline_event_id;
    assert!(baseline.as_deref().is_some_and(|b| b.len() == 24), "{baseline:?}");

    // Now events drive incremental syncs.
    let (new_one, gone) = {
        let mut w = c.sim.world.lock().unwrap();
        let new_one = w.add_student(&c.schools[0]);
        w.update_user(&renamed, |u| u["name"]["last"] = "Again".into());
        let gone = c.students_in_clever_locked(&w, 0)[5].clone();
        w.remove_user(&gone);
        (new_one, gone)
    };
    let inc = c.sync(0, Mode::Incremental, false).await;
    let students = entity(&inc, "students");
    assert_eq!(students.sync_type, "incremental");
    assert_eq!((students.processed, students.created, students.updated, students.deleted), (3, 1, 1, 0));
    let section_writes = entity(&inc, "sections").updated;
    assert_eq!(inc.roster_writes, 2 + section_writes, "only the new and the changed records are written");
    let stored = c.stored(0, "STUDENT").await;
    assert!(stored.contains_key(&new_one) && stored.contains_key(&gone));
    assert_eq!(inc.clever_requests, 3, "the newest-event probe, the baseline check, one events page");
    let new_baseline = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().baseline_event_id;
    assert_ne!(new_baseline, baseline);
    let quiet = c.sync(0, Mode::Incremental, false).await;
    assert_eq!((quiet.roster_writes, entity(&quiet, "students").processed), (0, 0));
}

fn u_email(w: &World, id: &str) -> Option<String> {
    w.users[id]["email"].as_str().map(str::to_string)
}

impl Clever {
    fn students_in_clever_locked(&self, w: &World, school: usize) -> Vec<String> {
        w.school_users(&self.schools[school], "student").iter().map(|u| u["id"].as_str().unwrap().to_string()).collect()
    }
}

#[tokio::test]
async fn the_shrink_guard_refuses_mass_deletions_unless_forced() {
    let c = setup("clshrink").await;
    c.sync(0, Mode::Full, false).await;
    {
        let mut w = c.sim.world.lock().unwrap();
        for id in c.students_in_clever_locked(&w, 0).into_iter().take(70) {
            w.remove_user(&id);
        }
    }
    let guarded = c.sync(0, Mode::Full, false).await;
    assert_eq!(guarded.status, "Partial");
    let students = entity(&guarded, "students");
    assert_eq!((students.status.as_str(), students.deleted), ("Partial", 0));
    assert!(students.errors[0].contains("70 of 120"), "{:?}", students.errors);
    assert_eq!(c.stored(0, "STUDENT").await.len(), 120);
    assert!(c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().requires_full_sync);
    // Partial night after night is counted (an alarm fires at 3), not reset as a success would be.
    let school = || async { c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap() };
    assert_eq!((school().await.consecutive_partials, school().await.consecutive_failures), (1, 0));
    assert_eq!(c.sync(0, Mode::Incremental, false).await.status, "Partial");
    assert_eq!(school().await.consecutive_partials, 2);

    let forced = c.sync(0, Mode::Full, true).await;
    assert_eq!(forced.status, "Success");
    assert_eq!(school().await.consecutive_partials, 0);
    assert_eq!(entity(&forced, "students").deleted, 70);
    assert_eq!(c.stored(0, "STUDENT").await.len(), 50);
}

#[tokio::test]
async fn a_sync_failing_midway_changes_nothing_and_counts_failures() {
    let c = setup_with("clmid", &[("CLEVER_PAGE_SIZE", "50")]).await;
    c.sync(0, Mode::Full, false).await;
    {
        let mut w = c.sim.world.lock().unwrap();
        let ids = c.students_in_clever_locked(&w, 0);
        w.remove_user(&ids[0]);
        w.update_user(&ids[1], |u| u["name"]["first"] = "Changed".into());
    }
    // Students come in three pages; the third fails for good.
    c.sim.faults.lock().unwrap().fail_after_pages = Some(2);
    let failed = c.sync(0, Mode::Full, false).await;
    assert_eq!(failed.status, "Failed");
    assert!(entity(&failed, "students").errors[0].contains("nothing was changed"));
    assert_eq!(failed.roster_writes, 0);
    let stored = c.stored(0, "STUDENT").await;
    assert_eq!(stored.len(), 120, "nothing deleted");
    assert_ne!(stored[&c.students_in_clever(0)[0]].fields["first_name"], "Changed");
    c.sync(0, Mode::Full, false).await;
    c.sync(0, Mode::Full, false).await;
    let school = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap();
    assert_eq!(school.consecutive_failures, 3);
    assert!(school.requires_full_sync, "the next run is a full sync again");

    c.sim.faults.lock().unwrap().fail_after_pages = None;
    let recovered = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(recovered.status, "Success");
    assert_eq!(entity(&recovered, "students").sync_type, "full");
    assert_eq!(counts(entity(&recovered, "students")), (119, 0, 1, 1));
    assert_eq!(c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().consecutive_failures, 0);
}

#[tokio::test]
async fn rate_limits_and_token_rotation_do_not_fail_a_sync() {
    let c = setup("clrate").await;
    c.client.check_token().await.unwrap();
    c.sim.world.lock().unwrap().rotate_token(0);
    {
        let mut f = c.sim.faults.lock().unwrap();
        f.statuses.extend([429, 503]);
        f.rate_limit_reset_secs = 1;
    }
    let outcome = c.sync(0, Mode::Full, false).await;
    assert_eq!(outcome.status, "Success");
    assert_eq!(entity(&outcome, "students").created, 120);
}

async fn baseline(c: &Clever, school: usize) -> Option<String> {
    c.ctx.store().clever_school(&c.schools[school]).await.unwrap().unwrap().baseline_event_id
}

#[tokio::test]
async fn a_fallback_run_establishes_a_baseline_once_events_are_available() {
    for status in [403, 404] {
        let c = setup(&format!("clnoev{status}")).await;
        c.sim.faults.lock().unwrap().events_disabled_status = Some(status);
        c.sim.world.lock().unwrap().districts[0].events_enabled = false;
        // However Clever refuses the events call, the full sync goes on, without a baseline.
        let full = c.sync(0, Mode::Full, false).await;
        assert_eq!(full.status, "Success", "HTTP {status}");
        assert_eq!(baseline(&c, 0).await, None);

        let fallback = c.sync(0, Mode::Incremental, false).await;
        assert_eq!(
            (entity(&fallback, "students").sync_type.as_str(), fallback.status.as_str()),
            ("incremental-fallback", "Success")
        );
        assert_eq!(baseline(&c, 0).await, None);

        // Events switched on: the next fallback leaves a baseline, and the run after reads events.
        c.sim.world.lock().unwrap().districts[0].events_enabled = true;
        let fallback = c.sync(0, Mode::Incremental, false).await;
        assert_eq!(entity(&fallback, "students").sync_type, "incremental-fallback");
        assert_eq!(baseline(&c, 0).await.as_deref(), Some("start"));
        let added = c.sim.world.lock().unwrap().add_student(&c.schools[0]);
        let inc = c.sync(0, Mode::Incremental, false).await;
        assert_eq!((entity(&inc, "students").sync_type.as_str(), entity(&inc, "students").created), ("incremental", 1));
        assert!(c.stored(0, "STUDENT").await.contains_key(&added));
    }
}

#[tokio::test]
async fn a_quiet_school_keeps_a_live_baseline() {
    let c = setup("clquiet").await;
    c.sim.world.lock().unwrap().add_student(&c.schools[1]);
    c.sync(0, Mode::Full, false).await;
    // A month of events, all at the other school.
    for _ in 0..5 {
        let school = c.schools[1].clone();
        c.sim.world.lock().unwrap().add_student(&school);
    }
    let quiet = c.sync(0, Mode::Incremental, false).await;
    assert_eq!((quiet.status.as_str(), quiet.roster_writes), ("Success", 0));
    let newest = c.sim.world.lock().unwrap().newest_event_id();
    assert_eq!(baseline(&c, 0).await, newest, "the district's newest event, not the school's last");
    // The feed forgets everything up to that event: the baseline is still in it, so no full sync.
    {
        let mut w = c.sim.world.lock().unwrap();
        let before_newest = w.events.keys().rev().nth(1).unwrap().clone();
        w.expire_events_through(&before_newest);
    }
    let next = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(entity(&next, "students").sync_type, "incremental");
}

#[tokio::test]
async fn an_expired_or_unknown_baseline_means_a_full_sync_however_clever_refuses_it() {
    for status in [400, 404] {
        let c = setup(&format!("clexp{status}")).await;
        c.sim.faults.lock().unwrap().expired_cursor_status = Some(status);
        c.sim.world.lock().unwrap().add_student(&c.schools[0]);
        c.sync(0, Mode::Full, false).await;
        {
            let mut w = c.sim.world.lock().unwrap();
            let ids = c.students_in_clever_locked(&w, 0);
            w.remove_user(&ids[0]);
            let newest = w.newest_event_id().unwrap();
            w.expire_events_through(&newest);
        }
        let recovered = c.sync(0, Mode::Incremental, false).await;
        assert_eq!(recovered.status, "Success", "HTTP {status}");
        assert_eq!(entity(&recovered, "students").sync_type, "full", "the baseline left the feed");
        assert_eq!(entity(&recovered, "students").deleted, 1);
    }
    // A baseline Clever never had (a restored backup, another district's id): a full sync too.
    let c = setup("clexpunknown").await;
    c.sync(0, Mode::Full, false).await;
    c.ctx
        .store()
        .finish_school_sync(
            &c.schools[0],
            "sync_manual",
            "Success",
            c.ctx.clock.now(),
            &hub::store::clever::BaselineUpdate::Set("ffffffffffffffffffffff00".into(), c.ctx.clock.now()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(entity(&c.sync(0, Mode::Incremental, false).await, "students").sync_type, "full");
    // A baseline not confirmed for longer than the feed keeps events: a full sync, whatever Clever says.
    let stale_at = c.ctx.clock.now() - 30 * 24 * 3600;
    let id = baseline(&c, 0).await.unwrap();
    let store = c.ctx.store();
    store
        .finish_school_sync(
            &c.schools[0],
            "sync_old",
            "Success",
            stale_at,
            &hub::store::clever::BaselineUpdate::Set(id, stale_at),
            None,
        )
        .await
        .unwrap();
    assert_eq!(entity(&c.sync(0, Mode::Incremental, false).await, "students").sync_type, "full");
}

#[tokio::test]
async fn events_are_applied_page_by_page_and_a_failure_resumes_from_the_last_page() {
    let c = setup_with("clpages", &[("CLEVER_EVENTS_PAGE_SIZE", "50")]).await;
    c.sync(0, Mode::Full, false).await;
    let students = c.students_in_clever(0);
    {
        let mut w = c.sim.world.lock().unwrap();
        for (n, id) in students.iter().enumerate().take(120) {
            w.update_user(id, |u| u["name"]["first"] = format!("Page {}", n / 50).into());
        }
        for id in &students[..30] {
            w.update_user(id, |u| u["name"]["last"] = "Twice".into());
        }
    }
    // 150 events in pages of 50 (read from the feed's start: it was empty at the full sync); the third
    // page fails for good.
    c.sim.faults.lock().unwrap().fail_events_after_pages = Some(1 + 2); // the newest-event probe, 2 pages
    let failed = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(failed.status, "Failed");
    assert_eq!(entity(&failed, "students").updated, 100, "two pages applied before the failure");
    let stored = c.stored(0, "STUDENT").await;
    assert_eq!(stored[&students[99]].fields["first_name"], "Page 1");
    assert_ne!(stored[&students[100]].fields["first_name"], "Page 2");
    let checkpoint = baseline(&c, 0).await.unwrap();
    let hundredth = {
        let w = c.sim.world.lock().unwrap();
        w.events.keys().rev().nth(50).unwrap().clone()
    };
    assert_eq!(checkpoint, hundredth, "the baseline moved to the last applied page");

    c.sim.faults.lock().unwrap().fail_events_after_pages = None;
    let pages_before = c.sim.count("/v3.0/events?school");
    let resumed = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(resumed.status, "Success");
    assert_eq!(c.sim.count("/v3.0/events?school") - pages_before, 1, "only the last page is read again");
    let students_record = entity(&resumed, "students");
    assert_eq!((students_record.processed, students_record.updated), (50, 50));
    let stored = c.stored(0, "STUDENT").await;
    assert_eq!(stored[&students[119]].fields["first_name"], "Page 2");
    assert_eq!(stored[&students[0]].fields["last_name"], "Twice");
}

#[tokio::test]
async fn incremental_syncs_apply_section_events_and_ignore_terms_and_courses() {
    let c = setup("clsections").await;
    c.sync(0, Mode::Full, false).await;
    let school = c.schools[0].clone();
    let (changed_section, created_section) = {
        let mut w = c.sim.world.lock().unwrap();
        let sections: Vec<String> =
            w.sections.iter().filter(|(_, s)| s["school"] == school.as_str()).map(|(id, _)| id.clone()).collect();
        w.update_section(&sections[0], |s| {
            s["period"] = "9".into();
            s["students"].as_array_mut().unwrap().truncate(3);
        });
        let students = c.students_in_clever_locked(&w, 0);
        let created = w.add_section(&school, None, students[..4].to_vec());
        w.new_term(&school);
        (sections[0].clone(), created)
    };
    let inc = c.sync(0, Mode::Incremental, false).await;
    let sections = entity(&inc, "sections");
    assert_eq!((sections.created, sections.updated), (1, 1));
    assert_eq!(inc.roster_writes, 2, "the term is not a roster change");
    let stored = c.stored(0, "SECTION").await;
    assert_eq!(stored[&changed_section].fields["period"], "9");
    assert_eq!(stored[&changed_section].fields["students"].split(',').count(), 3);
    assert!(stored.contains_key(&created_section));
}

#[tokio::test]
async fn users_with_several_roles_are_one_user_and_every_role_is_kept() {
    let spec = DistrictSpec { student_teachers: 1, shared_teachers: 1, ..SPEC };
    let c = setup_world("clroles", &[], World::generate(11, &[spec])).await;
    let (student_teacher, shared_teacher) = {
        let w = c.sim.world.lock().unwrap();
        let both =
            w.users.values().find(|u| u["roles"]["student"].is_object() && u["roles"]["teacher"].is_object()).unwrap();
        let shared = w
            .users
            .values()
            .find(|u| u["roles"]["teacher"]["schools"].as_array().is_some_and(|s| s.len() == 2))
            .unwrap();
        (both["id"].as_str().unwrap().to_string(), shared["id"].as_str().unwrap().to_string())
    };
    let full = c.sync(0, Mode::Full, false).await;
    assert_eq!((entity(&full, "students").created, entity(&full, "teachers").created), (120, 9));
    assert!(c.stored(0, "STUDENT").await.contains_key(&student_teacher));
    assert!(c.stored(0, "TEACHER").await.contains_key(&student_teacher));
    c.sync(1, Mode::Full, false).await;
    assert!(c.stored(1, "TEACHER").await.contains_key(&shared_teacher), "a teacher of two schools is in both");

    // One rename: both of the user's records in the school change.
    c.sim.world.lock().unwrap().update_user(&student_teacher, |u| u["name"]["last"] = "Both".into());
    // A teacher of school 0 who studies at school 1 (no student role in school 0).
    let school1 = c.schools[1].clone();
    let teacher =
        c.sim.world.lock().unwrap().school_users(&c.schools[0], "teacher")[3]["id"].as_str().unwrap().to_string();
    c.sim.world.lock().unwrap().add_role(&teacher, "student", &school1);
    let inc = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(c.stored(0, "STUDENT").await[&student_teacher].fields["last_name"], "Both");
    assert_eq!(c.stored(0, "TEACHER").await[&student_teacher].fields["last_name"], "Both");
    assert!(!c.stored(0, "STUDENT").await.contains_key(&teacher), "their student role is another school's");
    assert_eq!((entity(&inc, "students").created, entity(&inc, "teachers").created), (0, 0));

    // Losing the teacher role in school 0: the next full sync removes that record only.
    let school0 = c.schools[0].clone();
    c.sim.world.lock().unwrap().remove_role(&student_teacher, "teacher", &school0);
    let full = c.sync(0, Mode::Full, false).await;
    assert_eq!((entity(&full, "teachers").deleted, entity(&full, "students").deleted), (1, 0));
    assert!(c.stored(0, "STUDENT").await.contains_key(&student_teacher));
}

#[tokio::test]
async fn schools_are_isolated_even_for_the_same_clever_id() {
    let c = setup("cliso").await;
    let shared = c.students_in_clever(0)[0].clone();
    let other_school = c.schools[1].clone();
    c.sim.world.lock().unwrap().update_user(&shared, |u| {
        u["roles"]["student"]["schools"].as_array_mut().unwrap().push(other_school.clone().into());
    });
    c.sync(0, Mode::Full, false).await;
    let second = c.sync(1, Mode::Full, false).await;
    assert_eq!(entity(&second, "students").created, 121, "the transfer appears in both schools");
    assert!(c.stored(0, "STUDENT").await.contains_key(&shared));
    assert!(c.stored(1, "STUDENT").await.contains_key(&shared));

    // Leaving the second school removes the second school's record only.
    let first_school = c.schools[0].clone();
    c.sim.world.lock().unwrap().update_user(&shared, |u| {
        u["roles"]["student"]["schools"] = serde_json::json!([first_school]);
    });
    let after = c.sync(1, Mode::Full, false).await;
    assert_eq!(entity(&after, "students").deleted, 1);
    assert!(!c.stored(1, "STUDENT").await.contains_key(&shared));
    assert!(c.stored(0, "STUDENT").await.contains_key(&shared));
}

#[tokio::test]
async fn history_is_kept_per_school_entity_and_run_and_can_be_queried() {
    let c = setup("clhist").await;
    let first = c.sync(0, Mode::Full, false).await;
    c.sync(0, Mode::Full, false).await;
    c.sync(1, Mode::Full, false).await;
    let store = c.ctx.store();
    let now = crate::common::now();
    let all = store.sync_history(&c.schools[0], now - 3600, now + 3600, None, 100).await.unwrap();
    assert_eq!(all.len(), 6, "two runs of three entities");
    assert!(all.iter().all(|r| r.school_id == c.schools[0] && r.status == "Success" && r.ended_at.is_some()));
    let students = store.sync_history(&c.schools[0], now - 3600, now + 3600, Some("students"), 100).await.unwrap();
    assert_eq!(students.len(), 2);
    assert!(students.iter().any(|r| r.sync_id == first.sync_id && r.created == 120));
    assert!(store.sync_history(&c.schools[0], now + 3600, now + 7200, None, 100).await.unwrap().is_empty());
    let _ = &c.t;
}

#[tokio::test]
async fn fields_clever_adds_do_not_stop_a_sync_and_records_without_an_id_are_counted() {
    let c = setup("clschema").await;
    let students = c.students_in_clever(0);
    {
        let mut w = c.sim.world.lock().unwrap();
        // Clever adds a field to users (a schema change), and one record arrives without an id.
        for id in &students[..3] {
            w.users.get_mut(id).unwrap()["pronouns"] = "they/them".into();
        }
        w.users.get_mut(&students[3]).unwrap()["id"] = "".into();
    }
    let outcome = c.sync(0, Mode::Full, false).await;
    assert_eq!(outcome.unmapped_fields["students"], ["pronouns".to_string()].into(), "reported (EC-008)");
    let record = entity(&outcome, "students");
    assert_eq!((record.processed, record.created, record.failed), (120, 119, 1));
    assert_eq!(record.status, "Partial", "the unusable record is reported");
    assert!(record.errors[0].contains("without an id"));
    assert!(c.stored(0, "STUDENT").await.contains_key(&students[0]), "mapped fields keep syncing");
    assert_eq!(entity(&outcome, "teachers").status, "Success");
}

#[tokio::test]
async fn incremental_runs_report_unmapped_fields_too() {
    let c = setup("clschemainc").await;
    c.sync(0, Mode::Full, false).await;
    let student = c.students_in_clever(0)[4].clone();
    c.sim.world.lock().unwrap().update_user(&student, |u| u["nickname"] = "Ace".into());
    let inc = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(entity(&inc, "students").sync_type, "incremental");
    assert_eq!(inc.unmapped_fields["students"], ["nickname".to_string()].into());
    assert_eq!(entity(&inc, "students").updated, 0, "an unmapped field is no change of what we keep");
}

#[tokio::test]
async fn one_sync_per_school_at_a_time_and_a_killed_run_is_recorded_as_failed() {
    let c = setup("clever-lease").await;
    c.sync(0, Mode::Full, false).await;
    // Two runs at once for one school: one syncs, the other is skipped and writes nothing.
    let (a, b) = tokio::join!(c.sync(0, Mode::Full, false), c.sync(0, Mode::Full, false));
    let mut statuses = [a.status.as_str(), b.status.as_str()];
    statuses.sort();
    assert_eq!(statuses, ["Skipped", "Success"]);
    let skipped = if a.status == "Skipped" { &a } else { &b };
    assert!(skipped.records.is_empty() && skipped.clever_requests == 0);
    // A full sync asked for while one ran is not lost: the next run is a full one.
    assert_eq!(entity(&c.sync(0, Mode::Incremental, false).await, "students").sync_type, "full");
    assert_eq!(entity(&c.sync(0, Mode::Incremental, false).await, "students").sync_type, "incremental", "once");
    // The other school is not held by the first.
    assert_eq!(c.sync(1, Mode::Full, false).await.status, "Success");

    // A run killed by the Lambda timeout: its lease and its InProgress records stay behind.
    let store = c.ctx.store();
    let school = &c.schools[0];
    let killed_at = c.ctx.clock.now() - hub::integrations::clever::sync::LEASE_SECS - 5;
    let lease = store
        .take_school_lease(school, "sync_killed", killed_at, killed_at + hub::integrations::clever::sync::LEASE_SECS)
        .await
        .unwrap();
    assert_eq!(lease, hub::store::clever::Lease::Taken { stale: None, full_requested: false });
    let retention = 3600;
    for entity in ["students", "teachers", "sections"] {
        let record = SyncRecord {
            sync_id: "sync_killed".into(),
            school_id: school.clone(),
            district_id: c.district.clone(),
            entity: entity.into(),
            sync_type: "full".into(),
            status: "InProgress".into(),
            started_at: killed_at,
            ended_at: None,
            processed: 0,
            created: 0,
            updated: 0,
            deleted: 0,
            failed: 0,
            errors: vec![],
            baseline_event_id: None,
        };
        store.put_sync_record(&record, retention).await.unwrap();
    }
    // While it would still be running, a new run is skipped; once its lease expired, the next run
    // takes over and records it as failed.
    let held = store.take_school_lease(school, "sync_other", killed_at + 60, killed_at + 120).await.unwrap();
    assert!(matches!(held, hub::store::clever::Lease::Held { ref sync_id, .. } if sync_id == "sync_killed"));
    let next = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(next.status, "Success");
    let killed = store.sync_run_records(school, "sync_killed", killed_at).await.unwrap();
    assert_eq!(killed.len(), 3);
    assert!(
        killed.iter().all(|r| r.status == "Failed" && r.errors[0].contains("stopped before it finished")),
        "{killed:?}"
    );
    // And the lease is free again for the run after.
    assert_eq!(c.sync(0, Mode::Incremental, false).await.status, "Success");
}

#[tokio::test]
async fn roster_writes_slow_down_under_throttling_instead_of_failing() {
    let proxy = ThrottlingDynamo::start().await;
    let c = setup_full("clthrottle", &[], World::generate(11, &[SPEC]), Some(&proxy)).await;
    // A new on-demand table during a mass onboarding: refusals, then many partial throttles.
    proxy.plan([Throttle::Exception].into_iter().chain([Throttle::Unprocessed; 8]));
    let outcome = c.sync(0, Mode::Full, false).await;
    assert_eq!(outcome.status, "Success", "{:?}", outcome.records);
    assert_eq!(c.stored(0, "STUDENT").await.len(), 120);
    assert_eq!(outcome.roster_writes, 134, "every item written once");
    assert!(outcome.write_throttles >= 1);
    assert!(*proxy.throttled.lock().unwrap() >= 9, "the proxy answered every planned throttle");
}

#[tokio::test]
async fn throttling_past_the_budget_fails_the_run_cleanly() {
    let proxy = ThrottlingDynamo::start().await;
    let overrides = [("CLEVER_WRITE_THROTTLE_BUDGET_SECONDS", "1")];
    let c = setup_full("clthrottlebudget", &overrides, World::generate(11, &[SPEC]), Some(&proxy)).await;
    proxy.always(Some(Throttle::Unprocessed));
    let failed = c.sync(0, Mode::Full, false).await;
    assert_eq!(failed.status, "Failed");
    let errors = &entity(&failed, "students").errors;
    assert!(errors.iter().any(|e| e.contains("throttled roster writes for longer than 1 s")), "{errors:?}");
    // The run ended properly: its lease is free and its history is written.
    proxy.always(None);
    let next = c.sync(0, Mode::Full, false).await;
    assert_eq!(next.status, "Success");
    assert_eq!(c.stored(0, "STUDENT").await.len(), 120);
}
