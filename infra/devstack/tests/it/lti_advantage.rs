//! LTI Advantage end to end through the dev gateway, against the local LTI platform (which checks
//! what we sign with our published JWKS, as an LMS does): deep linking puts a quest in a course; the
//! link's launches land in the quest; a student's progress and a teacher's grade go back to the
//! line item (Assignment and Grade Services, with retries); a course's roster is synced (Names and Role
//! Provisioning Services, page by page); a Mentor launch links the mentor to their students; an admin
//! points a link at a quest.

use std::time::Duration;

use hub::domain::auth::Role;
use lti_platform_sim::Platform;
use serde_json::{Value, json};

use crate::lti_flow::{CLAIM, CLIENT_ID, Lms, form_body, refused, setup_with, value_of};

const SCORE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
const LINEITEM: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem";
const AGS: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
const NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";

/// A registered platform that trusts our JWKS (served by the gateway), as a real LMS is configured.
async fn setup(name: &str) -> Lms {
    let lms = setup_with(name, &[("PassbackRetryBaseSeconds", "1")], |p| p.base_url.clone()).await;
    lms.platform.trust_tool(CLIENT_ID, &lms.t.url("/api/lti/jwks"));
    lms
}

fn registration_id(lms: &Lms) -> String {
    hub::integrations::lti::registration::registration_id(&lms.issuer, CLIENT_ID)
}

/// A quest of organization `lincoln`: three tasks, 30, 50 and 20 XP.
async fn quest(lms: &Lms, title: &str) -> Value {
    let body = json!({"title": title, "pillar": "stem", "organization_id": "lincoln",
                      "tasks": [{"title": "Observe", "xp": 30}, {"title": "Report", "xp": 50}, {"title": "Reflect", "xp": 20}]});
    let r = lms.t.http.post(lms.t.url("/api/admin/quests")).bearer_auth(&lms.admin).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// Launches `claims` for `hint` through the browser: the launch's answer.
async fn launch(lms: &Lms, hint: &str, claims: Value) -> reqwest::Response {
    lms.platform.prepare(hint, claims);
    let form = lms.login(hint).await;
    lms.post(&form, Some(&form.cookie)).await
}

/// The page's form: its action and its hidden fields.
fn form_of(html: &str) -> String {
    html.split("<form method=\"post\" action=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&")
}

async fn post_form(lms: &Lms, url: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
    lms.browser
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(pairs))
        .send()
        .await
        .unwrap()
}

/// Runs the events consumer until it is idle, then one grade passback batch: (received, failed).
async fn pass_back(lms: &Lms) -> (usize, usize) {
    while lms.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    lms.t.gateway.poll("grade-passback", 1).await.unwrap()
}

async fn submit(lms: &Lms, token: &str, quest: &Value, task: usize, key: &str) -> reqwest::Response {
    let path = format!(
        "/api/quests/{}/tasks/{}/submissions",
        quest["id"].as_str().unwrap(),
        quest["tasks"][task]["id"].as_str().unwrap()
    );
    lms.t
        .http
        .post(lms.t.url(&path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"evidence": [{"type": "text", "content": "What I saw"}, {"type": "link", "content": "https://docs.example.org/report"}]}))
        .send()
        .await
        .unwrap()
}

/// What PyPI's `lti1p3platform` (a platform library that is not ours) makes of a client assertion and a
/// deep linking answer we signed: it fetches our JWKS itself.
async fn independent_check(lms: &Lms, client_assertion: &str, deep_linking_jwt: &str) -> Value {
    use tokio::io::AsyncWriteExt;
    let python = devstack::repo_root().join(".venv/bin/python");
    assert!(python.exists(), "the test virtualenv is missing: run `make test`, which installs requirements-dev.txt");
    let mut child = tokio::process::Command::new(python)
        .arg(devstack::repo_root().join("infra/lti-conformance/lti1p3platform_check.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let given = json!({"jwks_url": lms.t.url("/api/lti/jwks"), "issuer": lms.issuer, "client_id": CLIENT_ID,
                       "client_assertion": client_assertion, "scope": SCORE, "deep_linking_jwt": deep_linking_jwt});
    child.stdin.take().unwrap().write_all(given.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "lti1p3platform check failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A client assertion as the grade passback signs it.
async fn client_assertion(lms: &Lms) -> String {
    let registration = lms.t.ctx.store().lti_registration(&registration_id(lms)).await.unwrap().unwrap();
    let claims = hub::integrations::lti::services::client_assertion_claims(&registration, crate::common::now());
    // The context of the worker that signs them (it reads the tool key).
    let worker = lms.t.context_for("grade-passback", &[]);
    hub::integrations::lti::tool_key::current(&worker).await.unwrap().sign(&claims)
}

#[tokio::test]
async fn deep_linking_puts_a_quest_in_a_course_whose_launches_land_there_and_whose_scores_go_back() {
    let lms = setup("ltiadv").await;
    let cells = quest(&lms, "Cells under the microscope").await;
    let quest_id = cells["id"].as_str().unwrap().to_string();

    // The instructor's deep linking request: a page of the organization's quests, framed by the LMS.
    let mut request = lms.claims("teacher-1", "Instructor", "LtiDeepLinkingRequest");
    request["https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"] = json!({
        "deep_link_return_url": lms.platform.deep_link_return_url(), "accept_types": ["ltiResourceLink"],
        "accept_multiple": false, "data": "opaque-platform-data"});
    let page = launch(&lms, "teacher", request).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(!csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Cells under the microscope") && html.contains(&format!("value=\"{quest_id}\"")), "{html}");
    let session = value_of(&html, "session").to_string();
    let action = lms.t.url(&form_of(&html));

    // The choice: a page that posts the signed answer to the platform at once.
    let chosen = [("session", session.as_str()), ("quest_id", quest_id.as_str()), ("action", "add")];
    let answer = post_form(&lms, &action, &chosen).await;
    assert_eq!(answer.status(), 200);
    let csp = answer.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'sha256-") && csp.contains(&lms.platform.base_url), "{csp}");
    let html = answer.text().await.unwrap();
    assert_eq!(form_of(&html), lms.platform.deep_link_return_url());
    let jwt = value_of(&html, "JWT").to_string();
    let r = post_form(&lms, &lms.platform.deep_link_return_url(), &[("JWT", &jwt)]).await;
    assert_eq!(
        r.status(),
        200,
        "the platform verified our answer with our JWKS: {:?}",
        lms.platform.deep_link_rejections.lock().unwrap()
    );
    let response = lms.platform.deep_link_responses.lock().unwrap()[0].clone();
    let item = &response["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"][0];
    assert_eq!(
        (item["type"].as_str(), item["custom"]["quest_id"].as_str()),
        (Some("ltiResourceLink"), Some(quest_id.as_str()))
    );
    assert_eq!(item["lineItem"]["scoreMaximum"], 100, "{item}");
    assert_eq!(item["url"], lms.t.url("/api/lti/launch"));
    assert_eq!(response["https://purl.imsglobal.org/spec/lti-dl/claim/data"], "opaque-platform-data");
    assert_eq!(response[format!("{CLAIM}deployment_id")], crate::lti_flow::DEPLOYMENT);

    // A platform library that is not ours accepts the same answer and our client assertion, and refuses
    // them once tampered with.
    let assertion = client_assertion(&lms).await;
    let seen = independent_check(&lms, &assertion, &jwt).await;
    assert_eq!(seen["token"]["scope"], SCORE, "{seen}");
    assert_eq!(seen["content_items"][0]["custom"]["quest_id"], quest_id.as_str(), "{seen}");
    let tamper = |jwt: &str| {
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        format!("{signed}.{}{}", if signature.starts_with('A') { "B" } else { "A" }, &signature[1..])
    };
    let seen = independent_check(&lms, &tamper(&assertion), &tamper(&jwt)).await;
    assert!(seen["token"]["error"].is_string() && seen["content_items"]["error"].is_string(), "{seen}");

    // One answer per request; a forged session answers nothing.
    let again = post_form(&lms, &action, &chosen).await;
    assert_eq!(refused(again).await, (400, "invalid_session".into()));
    let forged = post_form(&lms, &action, &[("session", "forged"), ("quest_id", &quest_id)]).await;
    assert_eq!(refused(forged).await, (400, "invalid_session".into()));

    // The platform creates the link with its line item; a student launches it.
    let lineitem = lms.platform.create_lineitem("Cells under the microscope", 100.0, Some("link-1"));
    let mut student = lms.claims("student-1", "Learner", "LtiResourceLinkRequest");
    student[format!("{CLAIM}custom")] = json!({"quest_id": quest_id});
    student[AGS] = json!({"scope": [LINEITEM, SCORE], "lineitem": lineitem,
                          "lineitems": format!("{}/lineitems", lms.platform.base_url)});
    let launched = launch(&lms, "student", student.clone()).await;
    let location = launched.headers()["location"].to_str().unwrap().to_string();
    assert!(location.ends_with(&format!("&next=%2Fquests%2F{quest_id}")), "the frontend opens the quest: {location}");
    let (token, me) = lms.signed_in(launched).await;
    assert_eq!(me["role"], "student");

    // The quest the launch leads to, before any work.
    let opened = lms.t.get_json(&format!("/api/quests/{quest_id}"), &token).await;
    assert_eq!(
        (opened["title"].as_str(), opened["status"].as_str()),
        (Some("Cells under the microscope"), Some("not_started"))
    );
    assert_eq!(opened["tasks"].as_array().unwrap().len(), 3);

    // A task done: XP so far out of the quest's, in progress.
    let r = submit(&lms, &token, &cells, 0, "observe-1").await;
    assert_eq!(r.status(), 201);
    assert_eq!(submit(&lms, &token, &cells, 0, "observe-1").await.status(), 200, "the same submission again");
    assert_eq!(pass_back(&lms).await, (1, 0));
    let scores = lms.platform.scores(&lineitem);
    assert_eq!(scores.len(), 1, "{scores:?}");
    assert_eq!(
        (scores[0]["userId"].as_str(), scores[0]["scoreGiven"].as_f64(), scores[0]["scoreMaximum"].as_f64()),
        (Some("student-1"), Some(30.0), Some(100.0))
    );
    assert_eq!(
        (scores[0]["activityProgress"].as_str(), scores[0]["gradingProgress"].as_str()),
        (Some("InProgress"), Some("PendingManual")),
        "a partial score until a teacher grades the work"
    );
    assert_eq!(*lms.platform.token_requests.lock().unwrap(), 1);

    // The last task, while the platform fails once: retried after its backoff, with the cached token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    lms.platform.faults.lock().unwrap().score_failures = Some((503, 1));
    let completed: Value = submit(&lms, &token, &cells, 1, "report-1").await.json().await.unwrap();
    assert_eq!(pass_back(&lms).await, (1, 1));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(lms.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 0));
    let scores = lms.platform.scores(&lineitem);
    assert_eq!(
        (scores[1]["scoreGiven"].as_f64(), scores[1]["activityProgress"].as_str()),
        (Some(80.0), Some("InProgress"))
    );
    assert_eq!(*lms.platform.token_requests.lock().unwrap(), 1, "the token is cached per scope");

    // The teacher grades the report: the grade goes back as a percentage.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let teacher = launch(&lms, "teacher-launch", lms.claims("teacher-1", "Instructor", "LtiResourceLinkRequest")).await;
    let (teacher, _) = lms.signed_in(teacher).await;
    let path = format!("/api/completions/{}/grade", completed["completion_id"].as_str().unwrap());
    let r = lms.t.http.put(lms.t.url(&path)).bearer_auth(&teacher).json(&json!({"grade": 95})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(pass_back(&lms).await, (1, 0));
    let scores = lms.platform.scores(&lineitem);
    assert_eq!(
        (scores.len(), scores[2]["scoreGiven"].as_f64(), scores[2]["scoreMaximum"].as_f64()),
        (3, Some(95.0), Some(100.0))
    );
    assert_eq!(scores[2]["gradingProgress"], "FullyGraded");
    // Graded work is not replaced from the hub; teachers do not earn XP by submitting.
    let r = submit(&lms, &token, &cells, 1, "report-2").await;
    assert_eq!(crate::common::error_code(r).await, (409, "task_already_graded".into()));
    assert_eq!(crate::common::error_code(submit(&lms, &teacher, &cells, 0, "t").await).await.0, 403);
    // The last task after the teacher's grade: the grade stands in the gradebook, nothing is sent.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(submit(&lms, &token, &cells, 2, "reflect-1").await.status(), 201);
    assert_eq!(pass_back(&lms).await, (0, 0));
    assert_eq!(lms.platform.scores(&lineitem).len(), 3);

    // Bad evidence and other organizations' quests are refused, and nothing is scored.
    let path = format!("/api/quests/{quest_id}/tasks/{}/submissions", cells["tasks"][0]["id"].as_str().unwrap());
    let r = lms
        .t
        .http
        .post(lms.t.url(&path))
        .bearer_auth(&token)
        .json(&json!({"evidence": [{"type": "link", "content": "javascript:alert(1)"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(crate::common::error_code(r).await, (400, "invalid_evidence".into()));
    let (_, outsider) = lms.t.signed_in_as("kid@other.example", Role::Student, "other-school").await;
    let r = submit(&lms, &outsider.access_token, &cells, 0, "x").await;
    assert_eq!(crate::common::error_code(r).await, (404, "quest_not_found".into()));
    let r = lms
        .t
        .http
        .get(lms.t.url(&format!("/api/quests/{quest_id}")))
        .bearer_auth(&outsider.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(crate::common::error_code(r).await, (404, "quest_not_found".into()));
    let done = lms.t.get_json(&format!("/api/quests/{quest_id}"), &token).await;
    assert_eq!((done["status"].as_str(), done["tasks"][1]["status"].as_str()), (Some("completed"), Some("completed")));
    while lms.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    assert_eq!(lms.t.gateway.poll("grade-passback", 0).await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_course_roster_is_synced_page_by_page_and_inactive_members_are_reported_not_deleted() {
    let lms = setup("ltinrps").await;
    let mut members: Vec<Value> = (0..240)
        .map(|i| json!({"user_id": format!("learner-{i}"), "status": "Active", "given_name": "Kid", "family_name": format!("N{i}"),
                        "email": format!("learner-{i}@lincoln.example"), "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]}))
        .collect();
    members.extend(
        (0..5).map(|i| json!({"user_id": format!("teacher-{i}"), "status": "Active", "roles": ["Instructor"]})),
    );
    members.extend((0..5).map(|i| json!({"user_id": format!("gone-{i}"), "status": "Inactive", "roles": ["Learner"]})));
    // A parent listed as the course's Mentor; an Instructor listed with a student's address.
    members.push(json!({"user_id": "mentor-1", "status": "Active", "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Mentor"]}));
    members
        .push(json!({"user_id": "ta-1", "status": "Active", "email": "kid2@lincoln.example", "roles": ["Instructor"]}));
    let (kid2, _) = lms.t.signed_in_as("kid2@lincoln.example", Role::Student, "lincoln").await;
    let url = lms.platform.set_members("course-7", members);
    *lms.platform.page_size.lock().unwrap() = 100;

    // The course is known from a launch that offers the roster service.
    let mut teacher = lms.claims("teacher-0", "Instructor", "LtiResourceLinkRequest");
    teacher[NRPS] = json!({"context_memberships_url": url, "service_versions": ["2.0"]});
    let (token, _) = lms.signed_in(launch(&lms, "teacher", teacher).await).await;
    let course = hub::integrations::lti::links::course_id(&registration_id(&lms), "course-7");
    let sync = |token: String| {
        let (http, url) = (lms.t.http.clone(), lms.t.url(&format!("/api/lti/contexts/{course}/roster-sync")));
        async move { http.post(url).bearer_auth(token).send().await.unwrap() }
    };
    let summary = synced(&lms, sync(token.clone()).await, &token).await;
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let summary = &summary["summary"];
    assert_eq!(
        (
            summary["total"].as_u64(),
            summary["successful"].as_u64(),
            summary["failed"].as_u64(),
            summary["inactive"].as_u64()
        ),
        (Some(252), Some(247), Some(5), Some(5)),
        "{summary}"
    );
    assert_eq!(
        (summary["created"].as_u64(), summary["updated"].as_u64(), summary["skipped"].as_u64()),
        (Some(245), Some(1), Some(1)),
        "the launching teacher updated, the mentor skipped"
    );
    assert_eq!(summary["pages"], 3);
    assert_eq!(*lms.platform.membership_requests.lock().unwrap(), 3, "Link rel=next followed to the end");
    let provider = format!("lti:{}", registration_id(&lms));
    let account = |member: &'static str| {
        let (store, provider) = (lms.t.ctx.store(), provider.clone());
        async move { store.user_id_by_identity(&provider, member).await.unwrap() }
    };
    assert_eq!(account("mentor-1").await, None, "mentors join through their own launch");
    // An Instructor listed with a student's address is not linked into the student's account (another
    // role): an account of its own, the student's untouched.
    assert_ne!(account("ta-1").await.expect("an account for the TA"), kid2.id);
    assert_eq!(lms.t.ctx.store().get_user(&kid2.id).await.unwrap().unwrap(), kid2, "untouched");
    let gone = summary["errors"].as_array().unwrap().iter().find(|m| m["member_id"] == "gone-1").unwrap();
    assert!(gone["message"].as_str().unwrap().starts_with("inactive"), "{gone}");
    assert_eq!(account("gone-1").await, None, "reported, not provisioned");
    let learner = account("learner-7").await.expect("created");
    let user = lms.t.ctx.store().get_user(&learner).await.unwrap().unwrap();
    assert_eq!(
        (user.role, user.org_id.as_deref(), user.email.as_deref()),
        (Role::Student, Some("lincoln"), Some("learner-7@lincoln.example"))
    );
    let teacher_3 = account("teacher-3").await.unwrap();
    assert_eq!(lms.t.ctx.store().get_user(&teacher_3).await.unwrap().unwrap().role, Role::Teacher);

    // Again: the same accounts, updated; a member who left stays (reported, not deleted).
    let again = synced(&lms, sync(token.clone()).await, &token).await;
    assert_eq!((again["summary"]["updated"].as_u64(), again["summary"]["created"].as_u64()), (Some(246), Some(0)));
    assert_eq!(account("learner-7").await, Some(learner));

    // Who never launched into the course as its Instructor does not sync (its course roles decide, not
    // the account's); other organizations do not see the course, nor its syncs.
    let (_, student) = lms.t.signed_in_as("kid@lincoln.example", Role::Student, "lincoln").await;
    assert_eq!(
        crate::common::error_code(sync(student.access_token.clone()).await).await,
        (404, "course_not_found".into())
    );
    let status_of = |token: String| {
        let (http, url) =
            (lms.t.http.clone(), lms.t.url(&format!("/api/lti/roster-syncs/{}", again["id"].as_str().unwrap())));
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        crate::common::error_code(status_of(student.access_token).await).await,
        (404, "roster_sync_not_found".into())
    );
    let (_, other) = lms.t.signed_in_as("t@other.example", Role::Teacher, "other-school").await;
    assert_eq!(
        crate::common::error_code(sync(other.access_token.clone()).await).await,
        (404, "course_not_found".into())
    );
    let (_, other_admin) = lms.t.signed_in_as("head@other.example", Role::OrgAdmin, "other-school").await;
    assert_eq!(crate::common::error_code(status_of(other_admin.access_token).await).await.0, 404);
    let (_, colleague) = lms.t.signed_in_as("colleague@lincoln.example", Role::Teacher, "lincoln").await;
    assert_eq!(
        crate::common::error_code(sync(colleague.access_token).await).await,
        (404, "course_not_found".into()),
        "a teacher who never taught the course"
    );
    let (_, school_admin) = lms.t.signed_in_as("head@lincoln.example", Role::OrgAdmin, "lincoln").await;
    assert_eq!(status_of(school_admin.access_token.clone()).await.status(), 200, "the school's admins see it");
    let by_admin = synced(&lms, sync(school_admin.access_token.clone()).await, &school_admin.access_token).await;
    assert_eq!(by_admin["status"], "succeeded", "the school's admins may");
    // The platform failing: the sync fails, saying why.
    lms.platform.faults.lock().unwrap().memberships_status = Some(500);
    let failed = synced(&lms, sync(token.clone()).await, &token).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("could not be read"), "{failed}");
    // Five requests of a course a minute (a run crossing into the next minute may see a few more):
    // until then, every request answers the one run already queued.
    lms.platform.faults.lock().unwrap().memberships_status = None;
    let (mut runs, mut limited) = (std::collections::BTreeSet::new(), false);
    for _ in 0..11 {
        let r = sync(token.clone()).await;
        if r.status() == 429 {
            limited = true;
            break;
        }
        assert_eq!(r.status(), 202);
        runs.insert(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    assert!(limited, "a sixth request in a minute is refused");
    assert_eq!(runs.len(), 1, "one run for every request while it is queued");
}

#[tokio::test]
async fn a_course_of_a_thousand_members_syncs_on_the_queue_while_its_status_is_polled() {
    let lms = setup("ltibig").await;
    let members: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"user_id": format!("big-{i}"), "status": "Active", "given_name": "Kid",
                        "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]})
        })
        .collect();
    let url = lms.platform.set_members("course-7", members);
    *lms.platform.page_size.lock().unwrap() = 200;
    let mut teacher = lms.claims("teacher-big", "Instructor", "LtiResourceLinkRequest");
    teacher[NRPS] = json!({"context_memberships_url": url, "service_versions": ["2.0"]});
    let (token, _) = lms.signed_in(launch(&lms, "teacher", teacher).await).await;
    let course = hub::integrations::lti::links::course_id(&registration_id(&lms), "course-7");
    let started = std::time::Instant::now();
    let r = lms
        .t
        .http
        .post(lms.t.url(&format!("/api/lti/contexts/{course}/roster-sync")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once, whatever the course's size");
    let location = r.headers()["location"].to_str().unwrap().to_string();

    // The worker runs while the requester polls the status, as a client would.
    let poll = async {
        let mut seen = Vec::new();
        loop {
            let sync = lms.t.get_json(&location, &token).await;
            let status = sync["status"].as_str().unwrap().to_string();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "succeeded" || status == "failed" {
                return (seen, sync);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let ((received, failed), (seen, sync)) = tokio::join!(lms.t.drain("lti-roster-sync-worker"), poll);
    assert_eq!((received, failed), (1, 0));
    assert_eq!(seen.last().map(String::as_str), Some("succeeded"), "{sync}");
    assert!(seen.iter().any(|s| s == "running"), "seen running on the way: {seen:?}");
    let summary = &sync["summary"];
    assert_eq!(
        (summary["total"].as_u64(), summary["created"].as_u64(), summary["failed"].as_u64()),
        (Some(1000), Some(1000), Some(0))
    );
    assert_eq!(summary["pages"], 5);
}

/// A score for `registration`'s line item, as the passback queue carries it.
fn score_job(registration: &str, lineitem: &str, i: usize) -> hub::integrations::passback::PassbackJob {
    hub::integrations::passback::PassbackJob::Lti(hub::integrations::passback::lti_ags::LtiScore {
        completion_id: format!("cmp_{registration}_{i}"),
        registration_id: registration.into(),
        lineitem_url: lineitem.into(),
        user_id: format!("student-{i}"),
        score_given: Some(80.0),
        score_maximum: 100.0,
        activity_progress: "Completed".into(),
        grading_progress: "FullyGraded".into(),
        comment: None,
        timestamp: hub::runtime::events::rfc3339(1_796_000_000 + i as i64),
    })
}

#[tokio::test]
async fn a_hanging_lms_is_paused_while_other_schools_scores_keep_flowing() {
    let lms = setup("ltitarpit").await;
    // A second school, on an LMS of its own.
    let maple = Platform::start(0).await.unwrap();
    maple.trust_tool(CLIENT_ID, &lms.t.url("/api/lti/jwks"));
    let body = json!({
        "organization_id": "maple", "name": "Maple LMS", "issuer": maple.base_url, "client_id": CLIENT_ID,
        "deployment_ids": ["deployment-1"], "auth_url": format!("{}/authorize", maple.base_url),
        "token_url": maple.token_url(), "jwks_url": maple.jwks_url(),
    });
    let r =
        lms.t.http.post(lms.t.url("/api/lti/registrations")).bearer_auth(&lms.admin).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let maple_registration = hub::integrations::lti::registration::registration_id(&maple.base_url, CLIENT_ID);

    // Lincoln's LMS hangs on every token request; 200 of its scores are queued before Maple's one.
    lms.platform.faults.lock().unwrap().token_delay = Some(Duration::from_secs(120));
    let lincoln_item = lms.platform.create_lineitem("Tarpit", 100.0, None);
    let maple_item = maple.create_lineitem("Healthy", 100.0, None);
    let worker = lms.t.context_for("grade-passback", &[]);
    let queue = worker.config.grade_passback_queue_url.clone().unwrap();
    for i in 0..200 {
        hub::runtime::jobs::enqueue(&worker, &queue, &score_job(&registration_id(&lms), &lincoln_item, i))
            .await
            .unwrap();
    }
    hub::runtime::jobs::enqueue(&worker, &queue, &score_job(&maple_registration, &maple_item, 0)).await.unwrap();

    // The worker at its template concurrency (10 instances, one score each).
    lms.t.work_until("grade-passback", 10, Duration::from_secs(60), || !maple.scores(&maple_item).is_empty()).await;
    assert_eq!(maple.scores(&maple_item).len(), 1, "Maple's score is in its gradebook");
    // Lincoln's LMS held at most its share of the workers (2 at once, and 2 more before the third
    // timeout opened its breaker); its jobs wait, none lost or dead.
    assert!(*lms.platform.token_requests.lock().unwrap() <= 4, "a paused LMS is not called");
    let paused =
        lms.t.ctx.store().breaker(&format!("lti:{}", registration_id(&lms)), lms.t.ctx.clock.now()).await.unwrap();
    assert!(paused.open_until.is_some_and(|until| until > lms.t.ctx.clock.now()), "{paused:?}");
    lms.t.assert_still_queued("GradePassbackQueue", 200).await;
    assert_eq!(lms.t.queued("GradePassbackDeadLetterQueue").await, 0, "nothing in the dead-letter queue");
}

#[tokio::test]
async fn a_breaker_opens_after_three_failures_pauses_longer_each_time_closes_on_a_success_and_caps_calls_in_flight() {
    let lms = setup("ltibreaker").await;
    let ctx = &lms.t.ctx;
    use hub::runtime::breaker::{Admission, Destination, admit, record};
    let call = |admission: Admission| match admission {
        Admission::Call(ticket) => ticket,
        other => panic!("not admitted: {other:?}"),
    };
    let waits = |admission: Admission| match admission {
        Admission::Paused(seconds) => seconds,
        other => panic!("not paused: {other:?}"),
    };
    let busy = |admission: Admission| assert!(matches!(admission, Admission::Busy), "{admission:?}");
    let to = |key: &str, max: i64| Destination::new(key.into(), max, 30);
    for _ in 0..2 {
        record(ctx, call(admit(ctx, &to("lms-a", 10)).await), false).await;
    }
    record(ctx, call(admit(ctx, &to("lms-b", 10)).await), false).await;
    call(admit(ctx, &to("lms-a", 10)).await); // two failures: still closed
    record(ctx, call(admit(ctx, &to("lms-a", 10)).await), false).await;
    assert_eq!(waits(admit(ctx, &to("lms-a", 10)).await), 60, "three failures in a minute: a minute's pause");
    call(admit(ctx, &to("lms-b", 10)).await);
    ctx.clock.advance(61);
    let probe = call(admit(ctx, &to("lms-a", 10)).await);
    assert_eq!(waits(admit(ctx, &to("lms-a", 10)).await), 30, "one probe at a time after a pause");
    record(ctx, probe, false).await;
    assert_eq!(waits(admit(ctx, &to("lms-a", 10)).await), 120, "a failed probe: twice the pause, at once");
    ctx.clock.advance(121);
    record(ctx, call(admit(ctx, &to("lms-a", 10)).await), true).await;
    assert_eq!(ctx.store().breaker("lms-a", ctx.clock.now()).await.unwrap().open_until, None, "a success closes it");
    // At most `max_in_flight` calls at once; one that ends frees its place; a count a crashed
    // worker never took back is forgotten two minutes on.
    ctx.clock.advance(60 - ctx.clock.now() % 60); // at the start of a minute
    let first = call(admit(ctx, &to("lms-d", 2)).await);
    let _second = call(admit(ctx, &to("lms-d", 2)).await);
    busy(admit(ctx, &to("lms-d", 2)).await); // two in flight already
    record(ctx, first, true).await;
    let _third = call(admit(ctx, &to("lms-d", 2)).await);
    busy(admit(ctx, &to("lms-d", 2)).await);
    ctx.clock.advance(61);
    busy(admit(ctx, &to("lms-d", 2)).await); // last minute's calls count
    ctx.clock.advance(60);
    call(admit(ctx, &to("lms-d", 2)).await);
    // A call that started before the breaker opened does not close it when it ends well.
    record(ctx, call(admit(ctx, &to("lms-e", 10)).await), false).await;
    let early = call(admit(ctx, &to("lms-e", 10)).await); // sees one failure: its success would reset them
    for _ in 0..2 {
        record(ctx, call(admit(ctx, &to("lms-e", 10)).await), false).await;
    }
    record(ctx, early, true).await;
    assert!(matches!(admit(ctx, &to("lms-e", 10)).await, Admission::Paused(_)), "still paused");
    // Failures far apart never open it.
    for _ in 0..5 {
        record(ctx, call(admit(ctx, &to("lms-c", 10)).await), false).await;
        ctx.clock.advance(61);
    }
    call(admit(ctx, &to("lms-c", 10)).await);
}

/// The sync a roster-sync request answered (`202`, its status at `Location`), once the worker ran it.
async fn synced(lms: &Lms, requested: reqwest::Response, token: &str) -> Value {
    assert_eq!(requested.status(), 202);
    let location = requested.headers()["location"].to_str().unwrap().to_string();
    let sync: Value = requested.json().await.unwrap();
    assert_eq!(location, format!("/api/lti/roster-syncs/{}", sync["id"].as_str().unwrap()));
    assert!(matches!(sync["status"].as_str(), Some("queued" | "running")), "{sync}");
    lms.t.drain("lti-roster-sync-worker").await;
    lms.t.get_json(&location, token).await
}

#[tokio::test]
async fn one_roster_sync_per_course_a_few_per_school_and_a_dead_run_is_recorded_as_failed() {
    let lms = setup("ltisyncs").await;
    let registration = lms.t.ctx.store().lti_registration(&registration_id(&lms)).await.unwrap().unwrap();
    let members = |n: usize| {
        (0..n)
            .map(|i| json!({"user_id": format!("m-{i}"), "status": "Active", "roles": ["Learner"]}))
            .collect::<Vec<_>>()
    };
    let now = lms.t.ctx.clock.now();
    let mut courses = Vec::new();
    for c in 0..3 {
        let course = hub::integrations::lti::links::Course {
            id: hub::integrations::lti::links::course_id(&registration.id, &format!("c-{c}")),
            registration_id: registration.id.clone(),
            organization_id: "lincoln".into(),
            context_id: format!("c-{c}"),
            label: None,
            title: None,
            deployment_id: "deployment-1".into(),
            memberships_url: Some(lms.platform.set_members(&format!("c-{c}"), members(3))),
            updated_at: now,
        };
        lms.t.ctx.store().put_lti_course(&course).await.unwrap();
        courses.push(course.id);
    }
    let (admin, tokens) = lms.t.signed_in_as("head@lincoln.example", Role::OrgAdmin, "lincoln").await;
    let request = |course: &str| {
        let (http, url) = (lms.t.http.clone(), lms.t.url(&format!("/api/lti/contexts/{course}/roster-sync")));
        let token = tokens.access_token.clone();
        async move { http.post(url).bearer_auth(token).send().await.unwrap() }
    };

    // Two requests for one course: one run.
    let first: Value = request(&courses[0]).await.json().await.unwrap();
    let second: Value = request(&courses[0]).await.json().await.unwrap();
    assert_eq!(first["id"], second["id"], "the run already queued");
    // Two courses of one school run at once, not a third.
    assert_eq!(request(&courses[1]).await.status(), 202);
    let r = request(&courses[2]).await;
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(crate::common::error_code(r).await, (429, "too_many_roster_syncs".into()));
    assert_eq!(lms.t.drain("lti-roster-sync-worker").await, (2, 0), "two runs, the duplicate request none");
    assert_eq!(request(&courses[2]).await.status(), 202, "a slot is free again");
    lms.t.drain("lti-roster-sync-worker").await;

    // A run that never started (no worker took it: say its worker died) holds its course until its
    // lease ends; then the next request records it as failed and starts another.
    let principal = hub::domain::auth::guard::Principal {
        user_id: admin.id.clone(),
        email: None,
        role: Role::OrgAdmin,
        org_id: Some("lincoln".into()),
        session_id: "s".into(),
    };
    let now = lms.t.context_for("lti-roster-sync", &[]);
    let dead = hub::integrations::lti::roster::request(&now, &principal, &courses[0]).await.unwrap();
    let later = lms.t.context_for("lti-roster-sync", &[]);
    later.clock.advance(21 * 60);
    let next = hub::integrations::lti::roster::request(&later, &principal, &courses[0]).await.unwrap();
    assert_ne!(next.id, dead.id);
    let dead = lms.t.ctx.store().roster_sync(&dead.id).await.unwrap().unwrap();
    assert_eq!(dead.status, hub::store::roster_syncs::RosterSyncStatus::Failed);
    assert!(dead.error.unwrap().contains("stopped before it finished"));
    // A run whose lease ended is reported failed as soon as anyone looks at it, before any new request.
    let quiet = hub::integrations::lti::roster::request(&later, &principal, &courses[1]).await.unwrap();
    let latest = lms.t.context_for("lti-roster-sync-get", &[]);
    latest.clock.advance(42 * 60);
    let looked = hub::integrations::lti::roster::status(&latest, &principal, &quiet.id).await.unwrap();
    assert_eq!(looked.status, hub::store::roster_syncs::RosterSyncStatus::Failed);
    assert_eq!(lms.t.drain("lti-roster-sync-worker").await, (3, 0), "the dead runs' messages are let go");
    let done = lms.t.ctx.store().roster_sync(&next.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.summary.map(|s| s.total)),
        (hub::store::roster_syncs::RosterSyncStatus::Succeeded, Some(3))
    );
}

#[tokio::test]
async fn mentors_are_linked_to_their_students_and_admins_point_links_at_quests() {
    let lms = setup("ltimentor").await;
    let (student_token, student) = lms
        .signed_in(launch(&lms, "student", lms.claims("student-1", "Learner", "LtiResourceLinkRequest")).await)
        .await;
    let mut mentor = lms.claims("parent-1", "Mentor", "LtiResourceLinkRequest");
    mentor[format!("{CLAIM}roles")] = json!(["http://purl.imsglobal.org/vocab/lis/v2/membership#Mentor"]);
    mentor[format!("{CLAIM}role_scope_mentor")] = json!(["student-1", "unknown-student"]);
    let (_, observer) = lms.signed_in(launch(&lms, "mentor", mentor.clone()).await).await;
    let mentor_link = || {
        let (store, student, observer) = (
            lms.t.ctx.store(),
            student["id"].as_str().unwrap().to_string(),
            observer["id"].as_str().unwrap().to_string(),
        );
        async move { store.link(&student, &observer).await.unwrap() }
    };
    let link = mentor_link().await.unwrap();
    assert_eq!(
        (link.source.as_str(), link.relationship.as_str(), link.permissions.can_view_evidence),
        ("lti", "mentor", false)
    );
    // The student lets the mentor see evidence; the next mentor launch keeps that choice.
    let path = format!("/api/observers/{}", observer["id"].as_str().unwrap());
    let r = lms
        .t
        .http
        .put(lms.t.url(&path))
        .bearer_auth(&student_token)
        .json(&json!({"can_view_evidence": true, "can_comment": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    lms.signed_in(launch(&lms, "mentor", mentor.clone()).await).await;
    let link = mentor_link().await.unwrap();
    assert!(link.permissions.can_view_evidence);
    // The student removes the mentor: the mentor's next launch does not bring the link back.
    let r = lms.t.http.delete(lms.t.url(&path)).bearer_auth(&student_token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    lms.signed_in(launch(&lms, "mentor", mentor.clone()).await).await;
    assert!(mentor_link().await.is_none(), "a removed mentor stays removed");

    // A link launched without a quest is listed for the admins, who point it at one.
    let plain = launch(&lms, "student", lms.claims("student-1", "Learner", "LtiResourceLinkRequest")).await;
    assert!(!plain.headers()["location"].to_str().unwrap().contains("next="));
    let listed = lms.t.get_json(&format!("/api/lti/registrations/{}/links", registration_id(&lms)), &lms.admin).await;
    let link = listed["links"][0].clone();
    assert_eq!(
        (link["resource_link_id"].as_str(), link["quest_id"].clone()),
        (Some("link-1"), Value::Null),
        "{listed}"
    );
    let cells = quest(&lms, "Cells").await;
    let path = format!("/api/lti/registrations/{}/links/{}", registration_id(&lms), link["id"].as_str().unwrap());
    let (_, other_admin) = lms.t.signed_in_as("admin@other.example", Role::OrgAdmin, "other-school").await;
    let assign = |token: String, quest_id: Value| {
        let (http, url) = (lms.t.http.clone(), lms.t.url(&path));
        async move { http.put(url).bearer_auth(token).json(&json!({"quest_id": quest_id})).send().await.unwrap() }
    };
    let r = assign(other_admin.access_token, cells["id"].clone()).await;
    assert_eq!(r.status(), 404, "another organization's registration");
    let after = lms.t.get_json(&format!("/api/lti/registrations/{}/links", registration_id(&lms)), &lms.admin).await;
    assert_eq!(after["links"][0]["quest_id"], Value::Null, "the link still leads nowhere: {after}");
    let r = assign(lms.admin.clone(), json!("qst_missing")).await;
    assert_eq!(crate::common::error_code(r).await, (404, "quest_not_found".into()));
    let r = assign(lms.admin.clone(), cells["id"].clone()).await;
    assert_eq!(r.status(), 200);
    let routed = launch(&lms, "student", lms.claims("student-1", "Learner", "LtiResourceLinkRequest")).await;
    let location = routed.headers()["location"].to_str().unwrap().to_string();
    assert!(location.ends_with(&format!("next=%2Fquests%2F{}", cells["id"].as_str().unwrap())), "{location}");
}

#[tokio::test]
async fn deep_linking_answers_go_only_to_the_requesting_platform_and_need_a_live_session() {
    let lms = setup("ltidlbad").await;
    let cells = quest(&lms, "Cells").await;
    let mut request = lms.claims("teacher-1", "Instructor", "LtiDeepLinkingRequest");
    request["https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"] =
        json!({"deep_link_return_url": lms.platform.deep_link_return_url(), "accept_types": ["ltiResourceLink"]});
    let html = launch(&lms, "teacher", request.clone()).await.text().await.unwrap();
    let session = value_of(&html, "session").to_string();
    // Several quests where the LMS accepts one; a quest of another organization.
    let action = lms.t.url("/api/lti/deep-linking");
    let r = post_form(
        &lms,
        &action,
        &[("session", &session), ("quest_id", cells["id"].as_str().unwrap()), ("quest_id", "qst_x")],
    )
    .await;
    assert_eq!(refused(r).await, (400, "invalid_choice".into()));
    // The answer of a cancelled choice: no content, still signed for this platform.
    let html = launch(&lms, "teacher", request).await.text().await.unwrap();
    let session = value_of(&html, "session").to_string();
    let r = post_form(&lms, &action, &[("session", &session), ("action", "cancel")]).await;
    let jwt = value_of(&r.text().await.unwrap(), "JWT").to_string();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], json!([lms.issuer]), "addressed to the platform that asked");
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"], json!([]));
    // Another platform (the same tool registered elsewhere) refuses it: it is not addressed to it.
    let elsewhere = Platform::start(0).await.unwrap();
    elsewhere.trust_tool(CLIENT_ID, &lms.t.url("/api/lti/jwks"));
    let r = post_form(&lms, &elsewhere.deep_link_return_url(), &[("JWT", &jwt)]).await;
    assert_eq!(r.status(), 400);
    assert!(elsewhere.deep_link_responses.lock().unwrap().is_empty());
    // A deep-linking *response* sent to us as a launch is not a launch.
    let response_as_launch = lms.claims("teacher-1", "Instructor", "LtiDeepLinkingResponse");
    assert_eq!(
        refused(launch(&lms, "teacher", response_as_launch).await).await,
        (400, "unsupported_message_type".into())
    );
}
