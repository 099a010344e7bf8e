//! School syncs against the Clever simulator and the local AWS stack: full and incremental syncs,
//! change detection, deletions only in full syncs, the shrink guard, failures midway, fallback without
//! events, expired baselines, per-school isolation and the history.

use std::time::Duration;

use clever_sim::{DistrictSpec, Simulator, World};
use hub::clever::client::{CleverClient, Credentials};
use hub::clever::sync::{Mode, SyncOutcome, sync_school};
use hub::store::clever::SyncRecord;

use crate::common::TestStack;

const SPEC: DistrictSpec =
    DistrictSpec { schools: 2, students_per_school: 120, teachers_per_school: 8, sections_per_school: 6 };

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
    let sim = Simulator::start(World::generate(11, &[SPEC]), 0).await.unwrap();
    let t = TestStack::new(name).await;
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let settings = [
        ("CLEVER_OAUTH_URL", oauth.as_str()),
        ("CLEVER_API_URL", sim.base_url.as_str()),
        ("CLEVER_RETRY_BASE_MS", "10"),
        ("CLEVER_WRITE_RETRY_BASE_MS", "10"),
    ];
    let ctx = t.context_for("auth-me", &[settings.as_slice(), overrides].concat());
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
            3,
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
    assert_eq!(school.baseline_event_id, None, "the feed was empty");

    let again = c.sync(0, Mode::Full, false).await;
    assert_eq!(counts(entity(&again, "students")), (120, 0, 0, 0));
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
    // The baseline was taken before those events: the feed was empty, so set one now and redo.
    let baseline_before = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().baseline_event_id;
    assert_eq!(baseline_before, None);
    // Without a baseline an incremental run reads the Data API (no deletions).
    let fallback = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(entity(&fallback, "students").sync_type, "incremental-fallback");
    assert_eq!(counts(entity(&fallback, "students")), (120, 1, 1, 0));
    let stored = c.stored(0, "STUDENT").await;
    assert!(stored.contains_key(&added) && stored.contains_key(&removed), "no deletion outside a full sync");
    assert_eq!(stored[&renamed].fields["first_name"], "Renamed");
    let _ = blank;

    // A full sync sets the events baseline and applies the deletion.
    let full = c.sync(0, Mode::Full, false).await;
    assert_eq!(counts(entity(&full, "students")), (120, 0, 0, 1));
    let baseline = c.ctx.store().clever_school(&c.schools[0]).await.unwrap().unwrap().baseline_event_id;
    assert!(baseline.is_some());

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
    assert_eq!(inc.roster_writes, 2, "only the new and the changed student are written");
    let stored = c.stored(0, "STUDENT").await;
    assert!(stored.contains_key(&new_one) && stored.contains_key(&gone));
    assert_eq!(inc.clever_requests, 1, "one events page, the token is cached");
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

#[tokio::test]
async fn without_events_incremental_syncs_read_the_data_api_and_an_expired_baseline_means_a_full_sync() {
    let c = setup("clnoev").await;
    c.sim.world.lock().unwrap().add_student(&c.schools[0]); // the feed now has an event
    let full = c.sync(0, Mode::Full, false).await;
    assert!(entity(&full, "students").baseline_event_id.is_some());

    c.sim.world.lock().unwrap().districts[0].events_enabled = false;
    let fallback = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(entity(&fallback, "students").sync_type, "incremental-fallback");
    assert_eq!(fallback.status, "Success");

    {
        let mut w = c.sim.world.lock().unwrap();
        w.districts[0].events_enabled = true;
        let ids = c.students_in_clever_locked(&w, 0);
        w.remove_user(&ids[0]);
        w.expire_events();
    }
    let recovered = c.sync(0, Mode::Incremental, false).await;
    assert_eq!(entity(&recovered, "students").sync_type, "full", "the baseline left the feed");
    assert_eq!(entity(&recovered, "students").deleted, 1);
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
    let record = entity(&outcome, "students");
    assert_eq!((record.processed, record.created, record.failed), (120, 119, 1));
    assert_eq!(record.status, "Partial", "the unusable record is reported");
    assert!(record.errors[0].contains("without an id"));
    assert!(c.stored(0, "STUDENT").await.contains_key(&students[0]), "mapped fields keep syncing");
    assert_eq!(entity(&outcome, "teachers").status, "Success");
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
    // The other school is not held by the first.
    assert_eq!(c.sync(1, Mode::Full, false).await.status, "Success");

    // A run killed by the Lambda timeout: its lease and its InProgress records stay behind.
    let store = c.ctx.store();
    let school = &c.schools[0];
    let killed_at = c.ctx.clock.now() - hub::clever::sync::LEASE_SECS - 5;
    let lease = store
        .take_school_lease(school, "sync_killed", killed_at, killed_at + hub::clever::sync::LEASE_SECS)
        .await
        .unwrap();
    assert_eq!(lease, hub::store::clever::Lease::Taken { stale: None });
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
