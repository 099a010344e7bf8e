//! The Clever client against the Clever simulator: tokens (rotation, expiry), paging, rate limits,
//! retries and the events feed, with the simulator behaving as Clever's reference says (a fixed
//! 1,200-a-minute window per token, 413 above 10,000 a page, 404 for an expired events cursor).

use std::time::{Duration, Instant};

use clever_sim::{DistrictSpec, Simulator, World};
use hub::integrations::clever::client::{CleverClient, CleverError, CleverSettings, Credentials};

const SPEC: DistrictSpec = DistrictSpec::sized(2, 250, 12, 10);

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
    assert_eq!(sim.count("/v3.0/"), before + 1, "a 404 is not retried");
    let too_big = client_with(&sim, CleverSettings { page_size: 20_000, ..settings(&sim) });
    too_big.check_token().await.unwrap();
    let before = sim.count("/v3.0/");
    assert!(matches!(students(&too_big, &school).await, Err(CleverError::Refused { status: 413, .. })));
    assert_eq!(sim.answered(413), 1, "Clever answers an over-limit page with 413");
    // 501 is an answer, not an outage: not retried (Clever retries 429, 500, 502 and 503 only).
    sim.faults.lock().unwrap().statuses.push_back(501);
    assert!(matches!(students(&client, &school).await, Err(CleverError::Refused { status: 501, .. })));
    assert_eq!(sim.count("/v3.0/"), before + 2, "4xx and 501 answers are not retried");
}

#[tokio::test]
async fn the_rate_limit_is_a_fixed_window_per_token_and_lists_wait_for_its_reset() {
    let sim = simulator().await;
    let school = first_school(&sim);
    sim.faults.lock().unwrap().rate_limit = clever_sim::RateLimit { limit: 10, window_secs: 1 };
    // The headers, as a raw client sees them: the remaining count goes down within a window.
    let token = sim.world.lock().unwrap().districts[0].token.clone();
    let http = reqwest::Client::new();
    let url = format!("{}/v3.0/schools/{school}", sim.base_url);
    let first = http.get(&url).bearer_auth(&token).send().await.unwrap();
    let remaining =
        |r: &reqwest::Response| r.headers()["x-ratelimit-remaining"].to_str().unwrap().parse::<u64>().unwrap();
    let second = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert!(remaining(&second) < remaining(&first) || remaining(&second) == 9, "a new window may start between");
    assert_eq!(first.headers()["x-ratelimit-limit"], "10");
    assert!(first.headers()["x-ratelimit-bucket"].to_str().unwrap().starts_with("district-"));

    // 25 pages against 10 requests a second: the list waits for each reset and loses nothing.
    let client = client_with(&sim, CleverSettings { page_size: 10, ..settings(&sim) });
    let started = Instant::now();
    assert_eq!(students(&client, &school).await.unwrap().len(), 250);
    assert!(sim.answered(429) >= 1, "the simulator refused requests over its window");
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for a reset: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_district_token_without_a_lifetime_is_kept_until_clever_refuses_it() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    for _ in 0..20 {
        students(&client, &school).await.unwrap();
    }
    assert_eq!(sim.count("/oauth/tokens"), 1, "Clever's district tokens announce no lifetime: none is invented");
    sim.world.lock().unwrap().rotate_token(0);
    students(&client, &school).await.unwrap();
    assert_eq!(sim.count("/oauth/tokens"), 2, "refused once, fetched once");
}

#[tokio::test]
async fn lists_of_any_api_version_follow_their_own_links() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, CleverSettings { page_size: 100, ..settings(&sim) });
    let path = format!("/v3.1/schools/{school}/users?role=student");
    let (ids, _) = client.list(&path, |u| u["id"].as_str().map(str::to_string)).await.unwrap();
    assert_eq!(ids.len(), 250, "every page, not the first 100");
    assert_eq!(sim.count("/v3.1/"), 3);
}

async fn events(
    client: &CleverClient,
    school: &str,
    after: Option<&str>,
) -> Result<Vec<serde_json::Value>, CleverError> {
    let mut pages = client.events(school, after, 2);
    let mut all = Vec::new();
    while let Some(page) = pages.next_page(Some).await? {
        all.extend(page.items);
    }
    Ok(all)
}

#[tokio::test]
async fn the_events_feed_from_a_baseline() {
    let sim = simulator().await;
    let school = first_school(&sim);
    let client = client_with(&sim, settings(&sim));
    assert_eq!(client.newest_event_id().await.unwrap(), None);
    let added = sim.world.lock().unwrap().add_student(&school);
    let baseline = client.newest_event_id().await.unwrap().expect("an event");
    assert_eq!(client.event(&baseline).await.unwrap()["data"]["type"], "users.created");
    let other = sim.world.lock().unwrap().schools.keys().nth(1).unwrap().clone();
    let elsewhere = sim.world.lock().unwrap().add_student(&other);
    for n in 0..4 {
        sim.world.lock().unwrap().update_user(&added, |u| u["name"]["first"] = format!("Renamed {n}").into());
    }
    let after = events(&client, &school, Some(&baseline)).await.unwrap();
    assert_eq!(after.len(), 4, "only this school's events after the baseline, over pages of 2");
    assert_eq!(after[3]["type"], "users.updated");
    assert_eq!(after[3]["data"]["object"]["name"]["first"], "Renamed 3");
    assert!(after.iter().all(|e| e["data"]["object"]["id"] != elsewhere.as_str()));
    assert_eq!(events(&client, &school, None).await.unwrap().len(), 5, "from the start: the creation too");

    // The feed moves past the baseline: Clever's definition documents 404; other statuses happen.
    sim.world.lock().unwrap().expire_events();
    let err = events(&client, &school, Some(&baseline)).await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 404, .. }), "a baseline older than the feed: {err:?}");
    assert!(matches!(client.event(&baseline).await, Err(CleverError::Refused { status: 404, .. })));
    sim.faults.lock().unwrap().expired_cursor_status = Some(400);
    let err = events(&client, &school, Some(&baseline)).await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 400, .. }), "{err:?}");
    sim.world.lock().unwrap().districts[0].events_enabled = false;
    let err = client.newest_event_id().await.unwrap_err();
    assert!(matches!(err, CleverError::Refused { status: 403, .. }), "events not enabled: {err:?}");
}

#[tokio::test]
async fn the_district_token_is_found_on_any_page_of_the_app_s_token_list() {
    // One app authorized by three districts (Clever's credentials are the app's, not a district's).
    let small = DistrictSpec::sized(1, 3, 1, 1);
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
