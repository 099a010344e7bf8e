//! Clever sync end to end: an admin registers a district through the API, syncs are queued by the API
//! and by the nightly schedule and run by the worker from the queue, history and districts are read back
//! through the API; the health endpoint; authorization and bad input.

use std::sync::Arc;

use clever_sim::{DistrictSpec, Simulator, World};
use hub::domain::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestStack, error_code};

const SPEC: DistrictSpec = DistrictSpec::sized(2, 60, 5, 4);

struct Setup {
    t: TestStack,
    sim: Simulator,
    admin: String,
    district: String,
    client_id: String,
    client_secret: String,
}

async fn setup(name: &str) -> Setup {
    let sim = Simulator::start(World::generate(5, &[SPEC]), 0).await.unwrap();
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let t = TestStack::with_parameters(
        name,
        &[("CleverApiUrl", sim.base_url.as_str()), ("CleverOauthUrl", oauth.as_str()), ("CleverRetryBaseMs", "10")],
    )
    .await;
    let (_, admin) = t.signed_in_as(&format!("root@{name}.example.com"), Role::Admin, "platform").await;
    let (district, client_id, client_secret) = {
        let w = sim.world.lock().unwrap();
        (w.districts[0].id.clone(), w.districts[0].client_id.clone(), w.districts[0].client_secret.clone())
    };
    Setup { t, sim, admin: admin.access_token, district, client_id, client_secret }
}

impl Setup {
    async fn register(&self, secret: &str) -> reqwest::Response {
        let body = json!({"name": "Lincoln Unified", "client_id": self.client_id, "client_secret": secret});
        let url = self.t.url(&format!("/api/clever/districts/{}", self.district));
        self.t.http.put(url).bearer_auth(&self.admin).json(&body).send().await.unwrap()
    }

    async fn sync(&self, body: Value) -> reqwest::Response {
        self.t.http.post(self.t.url("/api/clever/sync")).bearer_auth(&self.admin).json(&body).send().await.unwrap()
    }

    /// Runs the worker on queued jobs until `n` were processed.
    async fn work(&self, n: usize) {
        let mut done = 0;
        while done < n {
            let (received, failed) = self.t.gateway.poll("clever-sync-worker", 2).await.unwrap();
            assert_eq!(failed, 0);
            assert!(received > 0, "expected {n} jobs, got {done}");
            done += received;
        }
    }

    fn schools(&self) -> Vec<String> {
        self.sim.world.lock().unwrap().schools.keys().cloned().collect()
    }
}

#[tokio::test]
async fn an_admin_adds_a_district_and_its_schools_sync_through_the_queue() {
    let s = setup("clapi").await;
    let r = s.register(&s.client_secret).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["schools_found"], 2);
    assert!(!body.to_string().contains(&s.client_secret), "the secret is never returned");

    // The credentials are in Secrets Manager under the stack's prefix, nowhere else.
    let sm = aws_sdk_secretsmanager::Client::new(&s.t.sdk);
    let secret_id = format!("{}/clever/districts/{}", s.t.stack.name, s.district);
    let stored = sm.get_secret_value().secret_id(&secret_id).send().await.unwrap().secret_string.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&stored).unwrap()["client_secret"], s.client_secret.as_str());

    let districts = s.t.get_json("/api/clever/districts", &s.admin).await;
    assert!(!districts.to_string().contains(&s.client_secret));
    let schools = districts["districts"][0]["schools"].as_array().unwrap();
    assert_eq!(schools.len(), 2);
    assert!(schools.iter().all(|s| s["requires_full_sync"] == true && s["last_sync_status"].is_null()));

    let r = s.sync(json!({"mode": "full"})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["queued"], 2);
    s.work(2).await;

    let school = &s.schools()[0];
    let history = s.t.get_json(&format!("/api/clever/sync-history?school_id={school}"), &s.admin).await;
    let records = history["history"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    let students = records.iter().find(|r| r["entity"] == "students").unwrap();
    assert_eq!((students["status"].as_str(), students["created"].as_u64()), (Some("Success"), Some(60)));
    let only = s.t.get_json(&format!("/api/clever/sync-history?school_id={school}&entity=teachers"), &s.admin).await;
    assert_eq!(only["history"].as_array().unwrap().len(), 1);
    let districts = s.t.get_json("/api/clever/districts", &s.admin).await;
    assert!(
        districts["districts"][0]["schools"].as_array().unwrap().iter().all(|s| s["last_sync_status"] == "Success")
    );

    // The nightly schedule queues every active school; its syncs are incremental.
    let summary: Value =
        s.t.http.post(s.t.url("/_local/schedules/clever-sync-scheduler")).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["queued"], 2, "{summary}");
    s.work(2).await;
    let history = s.t.get_json(&format!("/api/clever/sync-history?school_id={school}&entity=students"), &s.admin).await;
    let newest = &history["history"][0];
    assert_eq!(newest["sync_type"], "incremental", "{history}");
    assert_eq!((newest["created"].as_u64(), newest["updated"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test]
async fn one_school_failing_does_not_stop_the_others() {
    let s = setup("clone").await;
    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let schools = s.schools();
    s.sim.faults.lock().unwrap().failing_schools.insert(schools[1].clone());
    assert_eq!(s.sync(json!({"district_id": s.district, "mode": "full"})).await.status(), 202);
    s.work(2).await;
    let districts = s.t.get_json("/api/clever/districts", &s.admin).await;
    let status = |id: &str| {
        districts["districts"][0]["schools"].as_array().unwrap().iter().find(|x| x["id"] == id).unwrap().clone()
    };
    assert_eq!(status(&schools[0])["last_sync_status"], "Success");
    assert_eq!(status(&schools[1])["last_sync_status"], "Failed");
    assert_eq!(status(&schools[1])["consecutive_failures"], 1);
    let history = s.t.get_json(&format!("/api/clever/sync-history?school_id={}", schools[1]), &s.admin).await;
    assert!(history["history"].as_array().unwrap().iter().all(|r| r["status"] == "Failed"));

    // One school, by id: recovers once Clever answers for it.
    s.sim.faults.lock().unwrap().failing_schools.clear();
    assert_eq!(s.sync(json!({"school_id": schools[1], "mode": "incremental"})).await.status(), 202);
    s.work(1).await;
    let districts = s.t.get_json("/api/clever/districts", &s.admin).await;
    let school = districts["districts"][0]["schools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == schools[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (school["last_sync_status"].as_str(), school["consecutive_failures"].as_i64()),
        (Some("Success"), Some(0))
    );
}

#[tokio::test]
async fn refused_credentials_unauthorized_callers_and_bad_requests() {
    let s = setup("clbad").await;
    let r = s.register("not-the-secret").await;
    assert_eq!(error_code(r).await, (400, "clever_refused_credentials".into()));
    assert!(s.t.get_json("/api/clever/districts", &s.admin).await["districts"].as_array().unwrap().is_empty());
    let sm = aws_sdk_secretsmanager::Client::new(&s.t.sdk);
    let secret_id = format!("{}/clever/districts/{}", s.t.stack.name, s.district);
    let stored = sm.get_secret_value().secret_id(&secret_id).send().await;
    assert!(
        stored.as_ref().is_err_and(|e| e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception())),
        "nothing stored: {stored:?}"
    );

    let (_, org_admin) = s.t.signed_in_as("orgadmin@clbad.example.com", Role::OrgAdmin, "org-1").await;
    let http = &s.t.http;
    for request in [
        http.get(s.t.url("/api/clever/districts")),
        http.post(s.t.url("/api/clever/sync")).json(&json!({"mode": "full"})),
        http.get(s.t.url("/api/clever/sync-history?school_id=x")),
        http.put(s.t.url(&format!("/api/clever/districts/{}", s.district)))
            .json(&json!({"name": "x", "client_id": "a", "client_secret": "b"})),
    ] {
        let r = request.try_clone().unwrap().bearer_auth(&org_admin.access_token).send().await.unwrap();
        assert_eq!(error_code(r).await.0, 403, "platform admins only");
        let r = request.send().await.unwrap();
        assert_eq!(error_code(r).await.0, 401);
    }

    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let cases = [
        (json!({"mode": "partial"}), 400, "invalid_mode"),
        (json!({"mode": "incremental", "force": true}), 400, "invalid_mode"),
        (json!({"school_id": "nope", "mode": "full"}), 404, "school_not_found"),
        (json!({"district_id": "nope", "mode": "full"}), 404, "district_not_found"),
        (json!({"mode": "full", "extra": 1}), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        assert_eq!(error_code(s.sync(body).await).await, (status, code.into()));
    }
    for query in ["", "?school_id=x&since=yesterday", "?school_id=x&entity=parents", "?school_id=x&limit=0"] {
        let r =
            http.get(s.t.url(&format!("/api/clever/sync-history{query}"))).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(error_code(r).await.0, 400, "{query}");
    }
    let r = http
        .put(s.t.url("/api/clever/districts/bad%20id"))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "x", "client_id": "a", "client_secret": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_district".into()));
    // Nothing was queued by the refused requests.
    assert_eq!(s.t.gateway.poll("clever-sync-worker", 0).await.unwrap(), (0, 0));
}

#[tokio::test]
async fn health_is_healthy_degraded_or_unhealthy_and_answers_from_its_cache() {
    let s = setup("clhealth").await;
    // A generous first-report budget: these checks must not race the clock (the default is 80 ms).
    let report = |mut overrides: Vec<(&'static str, String)>| {
        overrides.push(("CLEVER_HEALTH_FIRST_BUDGET_MS", "5000".into()));
        let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let ctx = Arc::new(s.t.context_for("clever-health", &pairs));
        async move {
            let (first, status) = hub::integrations::clever::health::report(ctx.clone()).await;
            let (again, _) = hub::integrations::clever::health::report(ctx).await;
            assert!(Arc::ptr_eq(&first, &again), "a fresh report is served from the cache");
            ((*first).clone(), status)
        }
    };
    let (r, status) = report(vec![]).await;
    assert_eq!((r["status"].as_str(), status), (Some("Healthy"), 200), "{r}");

    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let (r, status) = report(vec![]).await;
    assert_eq!((r["status"].as_str(), status), (Some("Healthy"), 200), "{r}");
    assert_eq!(r["checks"]["districts"][0]["token"], "valid");
    assert_eq!(r["checks"]["secrets_manager"]["status"], "up");

    // Clever unreachable: Degraded, and the function still answers.
    let (r, status) = report(vec![("CLEVER_OAUTH_URL", "http://127.0.0.1:9/oauth/tokens".into())]).await;
    assert_eq!((r["status"].as_str(), status), (Some("Degraded"), 200), "{r}");
    assert_eq!(r["checks"]["districts"][0]["token"], "unavailable");

    // Clever refuses the district's credentials: Unhealthy.
    s.sim.world.lock().unwrap().districts[0].client_secret = "rotated-by-the-district".into();
    let (r, status) = report(vec![]).await;
    assert_eq!((r["status"].as_str(), status), (Some("Unhealthy"), 503), "{r}");
    assert!(!r.to_string().contains(&s.client_secret));

    // Through the API, without authentication: status and codes only, no district id, no error text.
    let r = s.t.http.get(s.t.url("/health/clever-auth")).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 200 | 503));
    let public: Value = r.json().await.unwrap();
    assert!(public["status"].is_string(), "{public}");
    assert!(public["checks"]["districts"]["valid"].is_u64(), "{public}");
    let text = public.to_string();
    assert!(!text.contains(&s.district) && !text.contains("error") && !text.contains("Clever refused"), "{text}");
    // A platform admin sees the full report.
    let r = s.t.http.get(s.t.url("/health/clever-auth")).bearer_auth(&s.admin).send().await.unwrap();
    let full: Value = r.json().await.unwrap();
    assert_eq!(full["checks"]["districts"][0]["district_id"], s.district.as_str(), "{full}");
    // Anyone else's token is refused (a student's: 403), not shown the details.
    let (_, student) = s.t.signed_in("kid@clhealth.example", hub::domain::auth::Role::Student).await;
    let r = s.t.http.get(s.t.url("/health/clever-auth")).bearer_auth(&student.access_token).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains(&s.district));
}

#[tokio::test]
async fn districts_have_their_own_credentials_and_syncs_target_all_one_district_or_one_school() {
    let sim = Simulator::start(World::generate(9, &[SPEC, SPEC]), 0).await.unwrap();
    let oauth = format!("{}/oauth/tokens", sim.base_url);
    let t = TestStack::with_parameters(
        "clmulti",
        &[("CleverApiUrl", sim.base_url.as_str()), ("CleverOauthUrl", oauth.as_str()), ("CleverRetryBaseMs", "10")],
    )
    .await;
    let (_, admin) = t.signed_in_as("root@clmulti.example.com", Role::Admin, "platform").await;
    let districts: Vec<(String, String, String)> = sim
        .world
        .lock()
        .unwrap()
        .districts
        .iter()
        .map(|d| (d.id.clone(), d.client_id.clone(), d.client_secret.clone()))
        .collect();
    // One district's credentials do not open the other.
    let (first, second) = (&districts[0], &districts[1]);
    let crossed = json!({"name": "Crossed", "client_id": first.1, "client_secret": first.2});
    let r = t
        .http
        .put(t.url(&format!("/api/clever/districts/{}", second.0)))
        .bearer_auth(&admin.access_token)
        .json(&crossed)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "clever_no_district_token".into()));
    for (id, client_id, secret) in &districts {
        let body = json!({"name": format!("District {id}"), "client_id": client_id, "client_secret": secret});
        let r = t
            .http
            .put(t.url(&format!("/api/clever/districts/{id}")))
            .bearer_auth(&admin.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let sync = |body: Value| {
        let request = t.http.post(t.url("/api/clever/sync")).bearer_auth(&admin.access_token).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["queued"].as_u64().unwrap() }
    };
    assert_eq!(sync(json!({"mode": "full"})).await, 4, "every school of every district");
    assert_eq!(sync(json!({"district_id": second.0, "mode": "full"})).await, 2);
    let school =
        sim.world.lock().unwrap().schools.iter().find(|(_, s)| s["district"] == second.0.as_str()).unwrap().0.clone();
    assert_eq!(sync(json!({"school_id": school, "mode": "incremental"})).await, 1);
    let mut done = 0;
    while done < 7 {
        let (received, failed) = t.gateway.poll("clever-sync-worker", 2).await.unwrap();
        assert_eq!(failed, 0);
        done += received;
    }
    let listed = t.get_json("/api/clever/districts", &admin.access_token).await;
    for district in listed["districts"].as_array().unwrap() {
        for s in district["schools"].as_array().unwrap() {
            assert_eq!(s["district_id"], district["id"]);
            assert_eq!(s["last_sync_status"], "Success");
        }
    }
}

#[tokio::test]
async fn a_first_health_report_cut_short_is_provisional_and_refreshed_at_once() {
    let s = setup("clprov").await;
    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    // Clever's token endpoint accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let oauth = format!("http://{}/oauth/tokens", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let ctx = Arc::new(s.t.context_for(
        "clever-health",
        &[
            ("CLEVER_OAUTH_URL", oauth.as_str()),
            ("CLEVER_HEALTH_FIRST_BUDGET_MS", "500"),
            ("CLEVER_TIMEOUT_SECONDS", "1"),
        ],
    ));
    let (first, status) = hub::integrations::clever::health::report(ctx.clone()).await;
    assert_eq!(
        (first["status"].as_str(), status, first["provisional"].as_bool()),
        (Some("Degraded"), 200, Some(true)),
        "{first}"
    );
    // Served as it is, while a refresh starts at once instead of 30 s later.
    let (served, _) = hub::integrations::clever::health::report(ctx.clone()).await;
    assert!(Arc::ptr_eq(&first, &served));
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (now, _) = hub::integrations::clever::health::report(ctx.clone()).await;
        if !Arc::ptr_eq(&first, &now) {
            assert_eq!(now["status"], "Degraded", "Clever still does not answer: {now}");
            break;
        }
        assert!(started.elapsed().as_secs() < 20, "the provisional report was never refreshed");
    }
}

#[tokio::test]
async fn schools_clever_no_longer_lists_are_deactivated_and_come_back_when_listed_again() {
    let s = setup("cldelist").await;
    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let gone = s.schools()[0].clone();
    let school = s.sim.world.lock().unwrap().schools.remove(&gone).unwrap();
    let nightly = || async {
        let r = s.t.http.post(s.t.url("/_local/schedules/clever-sync-scheduler")).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };
    // Not synced every night into a 404: deactivated, and only the listed school is queued.
    assert_eq!(nightly().await["queued"], 1);
    s.work(1).await;
    let state = |id: String| {
        let (t, admin) = (&s.t, s.admin.clone());
        async move {
            let districts = t.get_json("/api/clever/districts", &admin).await;
            districts["districts"][0]["schools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id.as_str())
                .unwrap()
                .clone()
        }
    };
    let delisted = state(gone.clone()).await;
    assert_eq!(delisted["active"], false);
    assert!(delisted["delisted_at"].is_i64());
    // Listed again: active, and its next sync is a full one.
    s.sim.world.lock().unwrap().schools.insert(gone.clone(), school);
    assert_eq!(nightly().await["queued"], 2);
    let back = state(gone.clone()).await;
    assert_eq!((back["active"].as_bool(), back["requires_full_sync"].as_bool()), (Some(true), Some(true)));
    assert!(back["delisted_at"].is_null());
    s.work(2).await;

    // A listing that suddenly leaves out most of the district (a Clever incident) deactivates only
    // the schools Clever confirms are gone (404), school by school.
    s.sim.faults.lock().unwrap().empty_school_listing = true;
    assert_eq!(nightly().await["queued"], 2, "both schools still answer: both kept and synced");
    s.work(2).await;
    assert_eq!(state(gone.clone()).await["active"], true);
    s.sim.world.lock().unwrap().remove_school(&gone);
    assert_eq!(nightly().await["queued"], 1, "the school Clever answers 404 for is deactivated");
    s.work(1).await;
    assert_eq!(state(gone.clone()).await["active"], false);
}

#[tokio::test]
async fn every_sync_publishes_a_summary_that_admins_can_subscribe_to() {
    let s = setup("clsummary").await;
    // An admin's subscription, as a queue (an email subscription gets the same text).
    let sqs = aws_sdk_sqs::Client::new(&s.t.sdk);
    let queue = sqs.create_queue().queue_name(format!("{}-summaries", s.t.stack.name)).send().await.unwrap();
    let queue_url = queue.queue_url.unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let topic = s.t.stack.refs["CleverSyncSummaryTopic"].clone();
    aws_sdk_sns::Client::new(&s.t.sdk)
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();

    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let schools = s.schools();
    s.sim.faults.lock().unwrap().failing_schools.insert(schools[1].clone());
    assert_eq!(s.sync(json!({"mode": "full"})).await.status(), 202);
    s.work(2).await;

    let mut summaries = Vec::new();
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let status =
                m.message_attributes.as_ref().and_then(|a| a.get("status")).and_then(|v| v.string_value.clone());
            let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            summaries.push((body, status));
        }
        if summaries.len() >= 2 {
            break;
        }
    }
    assert_eq!(summaries.len(), 2, "one summary per school");
    let of = |school: &str| summaries.iter().find(|(b, _)| b["school_id"] == school).unwrap();
    let (ok, ok_status) = of(&schools[0]);
    assert_eq!((ok["status"].as_str(), ok_status.as_deref()), (Some("Success"), Some("Success")));
    assert_eq!(ok["sync_type"], "full");
    let students = ok["entities"].as_array().unwrap().iter().find(|e| e["entity"] == "students").unwrap();
    assert_eq!(students["created"], 60);
    assert_eq!(ok["district_id"], s.district.as_str());
    let (failed, failed_status) = of(&schools[1]);
    assert_eq!((failed["status"].as_str(), failed_status.as_deref()), (Some("Failed"), Some("Failed")));
    assert!(failed["errors"][0].as_str().unwrap().contains("HTTP 500"), "{failed}");
}

#[tokio::test]
async fn the_health_probe_notices_revoked_credentials_in_a_warm_instance() {
    let s = setup("clprobe").await;
    assert_eq!(s.register(&s.client_secret).await.status(), 200);
    let probe = || async {
        let r = s.t.http.post(s.t.url("/_local/schedules/clever-health-probe")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let healthy = probe().await;
    assert_eq!((healthy["status"].as_str(), healthy["districts"].as_u64()), (Some("Healthy"), Some(1)), "{healthy}");
    // The district revokes the app's credentials: the same warm instance (its district client and
    // token held) must ask Clever again, not trust the token it holds.
    s.sim.world.lock().unwrap().districts[0].client_secret = "revoked".into();
    let unhealthy = probe().await;
    assert_eq!(unhealthy["status"], "Unhealthy", "{unhealthy}");
    assert_eq!(unhealthy["districts_refused"], 1);
    assert!(!unhealthy.to_string().contains(&s.district), "the result carries counts only");
}
