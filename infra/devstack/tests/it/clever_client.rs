//! The Clever client against the Clever simulator: tokens (rotation, expiry), paging, rate limits,
//! retries and the events feed.

use std::time::{Duration, Instant};

use clever_sim::{DistrictSpec, Simulator, World};
use hub::clever::client::{CleverClient, CleverError, CleverSettings, Credentials};

const SPEC: DistrictSpec =
    DistrictSpec { schools: 2, students_per_school: 250, teachers_per_school: 12, sections_per_school: 10 };

async fn simulator() -> Simulator {
    Simulator::start(World::generate(7, &[SPEC]), 0).await.unwrap()
}

fn settings(sim: &Simulator) -> CleverSettings {
    CleverSettings {
        oauth_url: format!("{}/oauth/tokens", sim.base_url),
        api_url: sim.base_url.clone(),
        retry_base: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        ..CleverSettings::default()
    }
}

fn client_with(sim: &Simulator, settings: CleverSettings) -> CleverClient {
    let (district, id, secret) = {
        let w = sim.world.lock().unwrap();
        let d = &w.districts[0];
        (d.id.clone(), d.client_id.clone(), d.client_secret.clone())
    };
    CleverClient::new(settings, &district, Credentials { client_id: id, client_secret: secret.into() }).unwrap()
}

fn first_school(sim: &Simulator) -> String {
    sim.world.lock().unwrap().schools.keys().next().unwrap().clone()
}

async fn students(client: &CleverClient, school: &str) -> Result<Vec<String>, CleverError> {
    let path = format!("/v3.0/schools/{school}/users?role=student");
    Ok(client.list(&path, |u| u["id"].as_str().map(str::to_string)).await?.0)
}

#[tokio::test]
async fn lists_follow_next_links_with_the_configured_page_size() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let big = client_with(&sim, settings(&sim));
    let all = students(&big, &school).await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(sim.count("/v3.0/"), 1, "one page of up to 10,000");
    assert_eq!(sim.count("/oauth/tokens"), 1);

    let small = client_with(&sim, CleverSettings { page_size: 100, ..settings(&sim) });
    let paged = students(&small, &school).await.unwrap();
    assert_eq!(paged, all, "same students, same order");
    assert_eq!(sim.count("/v3.0/"), 1 + 3);
    // The district's other school is a different roster.
    let other = sim.world.lock().unwrap().schools.keys().nth(1).unwrap().clone();
    let theirs = students(&big, &other).await.unwrap();
    assert!(theirs.iter().all(|id| !all.contains(id)));
}

#[tokio::test]
async fn a_rotated_token_is_fetched_again_once_and_bad_credentials_fail_clearly() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    students(&client, &school).await.unwrap();
    sim.world.lock().unwrap().rotate_token(0);
    assert_eq!(students(&client, &school).await.unwrap().len(), 250);
    assert_eq!(sim.count("/oauth/tokens"), 2, "one new token after the 401");

    let wrong = CleverClient::new(
        settings(&sim),
        "unknown",
        Credentials { client_id: "client-1".into(), client_secret: "not-the-secret".to_string().into() },
    )
    .unwrap();
    assert!(matches!(students(&wrong, &school).await, Err(CleverError::Unauthorized(401))));
}

#[tokio::test]
async fn expiring_tokens_are_replaced_at_three_quarters_of_their_life() {
    let sim = simulator().await;
    sim.world.lock().unwrap().districts[0].token_lifetime = Some(4);
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    students(&client, &school).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // Past 75 % of its 4 s: replaced before use (Clever hands out a fresh one), so it is never refused.
    students(&client, &school).await.unwrap();
    assert_eq!(sim.count("/oauth/tokens"), 2);
    assert_eq!(sim.count("/v3.0/"), 2, "no request was refused and retried");
}

#[tokio::test]
async fn rate_limits_wait_for_the_reset_and_failures_back_off_then_give_up() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    client.check_token().await.unwrap();
    {
        let mut f = sim.faults.lock().unwrap();
        f.statuses.extend([429]);
        f.rate_limit_reset_secs = 1;
    }
    let started = Instant::now();
    assert_eq!(students(&client, &school).await.unwrap().len(), 250);
    assert!(started.elapsed() >= Duration::from_millis(900), "waited {:?} for the reset", started.elapsed());
    assert_eq!(sim.count("/v3.0/"), 2);

    sim.faults.lock().unwrap().statuses.extend([500, 502, 503]);
    assert_eq!(students(&client, &school).await.unwrap().len(), 250, "three transient failures are retried");
    assert_eq!(sim.count("/v3.0/"), 2 + 4);

    sim.faults.lock().unwrap().statuses.extend([500; 6]);
    match students(&client, &school).await {
        Err(CleverError::Unavailable { attempts, .. }) => assert_eq!(attempts, 6, "five retries, then give up"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn timeouts_are_retried_and_refusals_are_not() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    client.check_token().await.unwrap();
    sim.faults.lock().unwrap().stall = Some((1, Duration::from_secs(2)));
    assert_eq!(students(&client, &school).await.unwrap().len(), 250);
    assert_eq!(sim.count("/v3.0/"), 2, "the stalled request timed out and was retried");

    let before = sim.count("/v3.0/");
    let err = students(&client, "000000000000000000000000").await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 404, .. }), "{err:?}");
    let too_big = client_with(&sim, CleverSettings { page_size: 20_000, ..settings(&sim) });
    assert!(matches!(students(&too_big, &school).await, Err(CleverError::Refused { status: 400, .. })));
    assert_eq!(sim.count("/v3.0/"), before + 2, "4xx answers are not retried");
}

#[tokio::test]
async fn the_events_feed_from_a_baseline() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    assert_eq!(client.newest_event_id().await.unwrap(), None);
    let added = sim.world.lock().unwrap().add_student(&school);
    let baseline = client.newest_event_id().await.unwrap().expect("an event");
    let renamed = sim.world.lock().unwrap().schools.keys().nth(1).unwrap().clone();
    let elsewhere = sim.world.lock().unwrap().add_student(&renamed);
    sim.world.lock().unwrap().update_user(&added, |u| u["name"]["first"] = "Renamed".into());
    let events = client.events_after(&baseline, &school).await.unwrap();
    assert_eq!(events.len(), 1, "only this school's events after the baseline");
    assert_eq!(events[0]["type"], "users.updated");
    assert_eq!(events[0]["data"]["object"]["name"]["first"], "Renamed");
    assert!(events.iter().all(|e| e["data"]["object"]["id"] != elsewhere.as_str()));

    sim.world.lock().unwrap().expire_events();
    let err = client.events_after(&baseline, &school).await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 400, .. }), "a baseline older than the feed: {err:?}");
    sim.world.lock().unwrap().districts[0].events_enabled = false;
    let err = client.newest_event_id().await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 403, .. }), "events not enabled: {err:?}");
}

#[tokio::test]
async fn the_district_token_is_found_on_any_page_of_the_app_s_token_list() {
    // One app authorized by three districts (Clever's credentials are the app's, not a district's).
    let small = DistrictSpec { schools: 1, students_per_school: 3, teachers_per_school: 1, sections_per_school: 1 };
    let sim = Simulator::start(World::generate(9, &[small, small, small]), 0).await.unwrap();
    let (id, secret, last) = {
        let mut w = sim.world.lock().unwrap();
        let (id, secret) = (w.districts[0].client_id.clone(), w.districts[0].client_secret.clone());
        for d in w.districts.iter_mut() {
            (d.client_id, d.client_secret) = (id.clone(), secret.clone());
        }
        let mut ids: Vec<String> = w.districts.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        (id, secret, ids.pop().unwrap())
    };
    sim.faults.lock().unwrap().token_page_size = Some(1);
    let client =
        CleverClient::new(settings(&sim), &last, Credentials { client_id: id, client_secret: secret.into() }).unwrap();
    client.check_token().await.unwrap();
    assert_eq!(sim.count("/oauth/tokens"), 3, "one page per district, ours last");
    let (id, secret) = {
        let w = sim.world.lock().unwrap();
        (w.districts[0].client_id.clone(), w.districts[0].client_secret.clone())
    };
    let unknown = CleverClient::new(
        settings(&sim),
        "district-that-never-authorized",
        Credentials { client_id: id, client_secret: secret.into() },
    )
    .unwrap();
    assert!(matches!(unknown.check_token().await, Err(CleverError::Malformed(_))));
}
