//! Spark's submission webhook end to end: Spark's own Node code signs and sends, files come from a
//! local server standing in for Spark's storage, and every bad input is refused with nothing written.

use std::sync::Arc;

use hub::domain::auth::Role;
use hub::domain::learning::LmsMapping;
use serde_json::{Value, json};

use crate::common::{Reply, TestStack, error_code, server};

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00";

/// Spark's storage: files by path, plus the bad ones.
fn storage(path: &str) -> Reply {
    match path {
        "/report.pdf" => (200, None, PDF.to_vec()),
        "/photo.png" => (200, None, PNG.to_vec()),
        "/setup.exe" => (200, None, b"MZ\x90\x00\x03\x00\x00\x00\x04\x00".to_vec()),
        "/huge.pdf" => (200, None, [b"%PDF-1.7\n".as_slice(), &vec![b'x'; 51 * 1024 * 1024]].concat()),
        "/to-metadata" => (302, Some("http://169.254.169.254/latest/meta-data/".into()), vec![]),
        _ => (404, None, vec![]),
    }
}

struct Setup {
    t: TestStack,
    secret: String,
    files: String,
    student: hub::domain::auth::User,
    access: String,
}

/// A stack with a Spark-linked student, a quest mapping course `bio`/assignment `lab`, and storage.
async fn setup(name: &str) -> Setup {
    setup_with(name, &[]).await
}

async fn setup_with(name: &str, parameters: &[(&str, &str)]) -> Setup {
    let t = TestStack::with_parameters(name, parameters).await;
    let (_, secret) = t.key("SparkWebhookSecret").await;
    let (addr, _) = server(storage).await;
    let mut p = crate::common::profile("spark", "spark-kid", Some("kid@school.example"), Role::Student);
    p.org_id = Some("demo".into());
    let (student, _) = hub::domain::auth::provisioning::provision_user(&t.ctx, &p).await.unwrap();
    let access = hub::domain::auth::sessions::start_session(&t.ctx, &student).await.unwrap().access_token;
    let (_, admin) = t.signed_in_as("admin@school.example", Role::OrgAdmin, "demo").await;
    let quest = json!({"title": "Lab", "pillar": "stem", "lms": {"platform": "spark", "course_id": "bio", "assignment_id": "lab"},
                       "tasks": [{"title": "Lab report", "xp": 100}]});
    let r = t.http.post(t.url("/api/admin/quests")).bearer_auth(&admin.access_token).json(&quest).send().await.unwrap();
    assert_eq!(r.status(), 201);
    Setup { t, secret, files: format!("http://{addr}"), student, access }
}

fn now_iso() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn payload(files: &[(&str, &str)], assignment: &str) -> Value {
    json!({
        "spark_user_id": "spark-kid", "spark_assignment_id": assignment, "spark_course_id": "bio",
        "submission_text": "My lab report.",
        "submission_files": files.iter().map(|(url, t)| json!({"url": url, "type": t, "filename": url.rsplit('/').next()})).collect::<Vec<_>>(),
        "submitted_at": now_iso(),
    })
}

fn sign(secret: &str, body: &str) -> String {
    hex::encode(hub::support::crypto::hmac_sha256(secret.as_bytes(), body.as_bytes()))
}

async fn post(s: &Setup, body: &str, signature: Option<&str>) -> reqwest::Response {
    post_from(s, &s.t.http, body, signature).await
}

/// As [`post`], from `client` (its own source address).
async fn post_from(s: &Setup, client: &reqwest::Client, body: &str, signature: Option<&str>) -> reqwest::Response {
    let mut r = client
        .post(s.t.url("/spark/webhook/submission"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(sig) = signature {
        r = r.header("x-spark-signature", sig);
    }
    r.send().await.unwrap()
}

/// Runs the submission worker on what the queue holds (as Lambda's event source would), until it is empty.
async fn run_worker(s: &Setup) -> (usize, usize) {
    let (mut received, mut failed) = (0, 0);
    loop {
        let (r, f) = s.t.gateway.poll("spark-submission-worker", 1).await.unwrap();
        if r == 0 {
            return (received, failed);
        }
        received += r;
        failed += f;
    }
}

/// The state of a queued submission's job.
async fn job(s: &Setup, body: &str) -> hub::store::submission_jobs::SubmissionJob {
    let payload: hub::integrations::spark::webhook::SubmissionPayload = serde_json::from_str(body).unwrap();
    let key = hub::integrations::spark::webhook::idempotency_key(&payload);
    s.t.ctx.store().submission_job(&key).await.unwrap().expect("a job")
}

async fn my_quests(s: &Setup) -> Value {
    s.t.get_json("/api/me/quests", &s.access).await
}

async fn stored_objects(s: &Setup) -> usize {
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&s.t.sdk).force_path_style(true).build());
    let out = s3.list_objects_v2().bucket(&s.t.stack.refs["EvidenceBucket"]).send().await.unwrap();
    out.contents().len()
}

#[tokio::test]
async fn sparks_own_code_turns_a_submission_with_files_into_evidence_completion_and_xp() {
    let s = setup("whflow").await;
    let submission = json!({"userId": "spark-kid", "assignmentId": "lab", "courseId": "bio", "text": "My lab report.",
        "files": [{"url": format!("{}/report.pdf", s.files), "mimeType": "application/pdf", "name": "report.pdf"},
                  {"url": format!("{}/photo.png", s.files), "mimeType": "image/jpeg", "name": "photo.jpg"}]});
    // Async: the gateway serving Node's request runs on this test's runtime.
    let out = tokio::process::Command::new("node")
        .arg(devstack::repo_root().join("infra/partner-node/send-submission.js"))
        .arg(s.t.url("/spark/webhook/submission"))
        .arg(submission.to_string())
        .env("OPTIO_WEBHOOK_SECRET", &s.secret)
        .output()
        .await
        .expect("node runs Spark's code");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Verified and recorded at once; the files are fetched off the request path.
    assert_eq!(answer["status"], 202, "{answer}");
    assert_eq!(answer["body"]["status"], "processing");
    let submission_id = answer["body"]["submission_id"].as_str().unwrap().to_string();
    assert!(submission_id.starts_with("sub_"), "{answer}");
    assert_eq!(my_quests(&s).await["quests"], json!([]), "nothing completes before the files are stored");
    assert_eq!(run_worker(&s).await, (1, 0));
    let me = my_quests(&s).await;
    let completion_id = me["quests"][0]["tasks"][0]["completion_id"].as_str().unwrap().to_string();

    assert_eq!(me["xp"]["total"], 100);
    let task = &me["quests"][0]["tasks"][0];
    assert_eq!(task["status"], "completed");
    assert_eq!(task["completion_id"], completion_id.as_str());
    let blocks = task["evidence"].as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0], json!({"order": 1, "type": "text", "text": "My lab report."}));
    assert_eq!(blocks[1]["type"], "document");
    assert_eq!(blocks[1]["file"]["content_type"], "application/pdf");
    // Declared image/jpeg; the bytes say PNG, and the bytes win.
    assert_eq!(blocks[2]["type"], "image");
    assert_eq!(blocks[2]["file"]["content_type"], "image/png");
    // The files are in S3, whole, under unguessable keys of this user.
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&s.t.sdk).force_path_style(true).build());
    let key = blocks[1]["file"]["key"].as_str().unwrap();
    assert!(key.starts_with(&format!("evidence/{}/", s.student.id)) && key.len() > 60, "{key}");
    let object = s3.get_object().bucket(&s.t.stack.refs["EvidenceBucket"]).key(key).send().await.unwrap();
    assert_eq!(object.content_type(), Some("application/pdf"));
    assert_eq!(object.body.collect().await.unwrap().into_bytes().as_ref(), PDF);
}

#[tokio::test]
async fn signatures_are_checked_over_the_raw_bytes() {
    let s = setup("whsig").await;
    let body = payload(&[], "lab").to_string();
    assert_eq!(error_code(post(&s, &body, None).await).await, (401, "missing_signature".into()));
    assert_eq!(error_code(post(&s, &body, Some(&"0".repeat(64))).await).await, (401, "invalid_signature".into()));
    assert_eq!(error_code(post(&s, &body, Some("not hex")).await).await, (401, "invalid_signature".into()));
    assert_eq!(
        error_code(post(&s, &body, Some(&sign("another secret", &body))).await).await,
        (401, "invalid_signature".into())
    );
    // Changed after signing (same JSON meaning, other bytes): refused.
    let reformatted = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    assert_eq!(
        error_code(post(&s, &reformatted, Some(&sign(&s.secret, &body))).await).await,
        (401, "invalid_signature".into())
    );
    assert_eq!(my_quests(&s).await["quests"], json!([]), "nothing was written");
    // The `sha256=` form is accepted.
    let r = post(&s, &body, Some(&format!("sha256={}", sign(&s.secret, &body)))).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn stale_submissions_are_refused_and_retries_are_idempotent() {
    let s = setup("whreplay").await;
    let mut old = payload(&[], "lab");
    old["submitted_at"] = json!(
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - std::time::Duration::from_secs(600))
            .to_string()
    );
    let old = old.to_string();
    assert_eq!(error_code(post(&s, &old, Some(&sign(&s.secret, &old))).await).await, (400, "stale_timestamp".into()));
    // A captured body replayed later with a fresh, unsigned X-Spark-Timestamp: the signed time decides.
    let fresh_header =
        s.t.http
            .post(s.t.url("/spark/webhook/submission"))
            .header("content-type", "application/json")
            .header("x-spark-signature", sign(&s.secret, &old))
            .header("x-spark-timestamp", crate::common::now().to_string())
            .body(old.clone())
            .send()
            .await
            .unwrap();
    assert_eq!(error_code(fresh_header).await, (400, "stale_timestamp".into()));
    assert_eq!(my_quests(&s).await["quests"], json!([]), "the replay recorded nothing");
    let body = payload(&[], "lab").to_string();

    // Spark retries the same delivery, several times at once: one completion, XP once.
    let sig = sign(&s.secret, &body);
    let attempts = (0..6).map(|_| post(&s, &body, Some(&sig)));
    let answers = futures_util::future::join_all(attempts).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in answers {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["completion_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1);
    let me = my_quests(&s).await;
    assert_eq!(me["xp"]["total"], 100, "{me} {ids:?}");
}

#[tokio::test]
async fn unknown_students_and_unmapped_assignments() {
    let s = setup("whpending").await;
    let mut stranger = payload(&[], "lab");
    stranger["spark_user_id"] = json!("never-signed-in");
    let stranger = stranger.to_string();
    assert_eq!(
        error_code(post(&s, &stranger, Some(&sign(&s.secret, &stranger))).await).await,
        (404, "user_not_found".into())
    );

    // An assignment no quest maps yet: kept, then processed when an admin maps it.
    let body = payload(&[(&format!("{}/report.pdf", s.files), "application/pdf")], "essay").to_string();
    let r = post(&s, &body, Some(&sign(&s.secret, &body))).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "pending");
    assert_eq!(my_quests(&s).await["quests"], json!([]));
    let mapping = LmsMapping { platform: "spark".into(), course_id: "bio".into(), assignment_id: "essay".into() };
    assert_eq!(s.t.ctx.store().pending_submissions(&mapping, 10).await.unwrap().0.len(), 1);

    let (_, admin) = s.t.signed_in_as("admin2@school.example", Role::OrgAdmin, "demo").await;
    let quest = json!({"title": "Essay", "pillar": "art", "lms": {"platform": "spark", "course_id": "bio", "assignment_id": "essay"},
                       "tasks": [{"title": "Essay", "xp": 30}]});
    let r =
        s.t.http.post(s.t.url("/api/admin/quests")).bearer_auth(&admin.access_token).json(&quest).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Taken by the new quest through its `quest.mapped` event, off the request.
    assert_eq!(s.t.ctx.store().pending_submissions(&mapping, 10).await.unwrap().0.len(), 1, "not in the request");
    let (_, failed) = s.t.drain("events-dispatch").await;
    assert_eq!(failed, 0, "every event, quest.mapped among them, was handled");
    assert!(s.t.ctx.store().pending_submissions(&mapping, 10).await.unwrap().0.is_empty(), "taken by the new quest");
    assert_eq!(run_worker(&s).await, (1, 0), "its file is fetched by the worker");
    let me = my_quests(&s).await;
    assert_eq!(me["xp"]["by_pillar"]["art"], 30, "{me}");
    assert_eq!(me["quests"][0]["tasks"][0]["evidence"][1]["file"]["content_type"], "application/pdf");
    assert!(s.t.ctx.store().pending_submissions(&mapping, 10).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn kept_submissions_are_listed_to_their_organizations_admins_and_alarm_before_they_expire() {
    let s = setup("whkept").await;
    for assignment in ["essay", "poem"] {
        let body = payload(&[], assignment).to_string();
        assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 202, "{assignment} kept");
    }
    let (_, admin) = s.t.signed_in_as("kept-admin@school.example", Role::OrgAdmin, "demo").await;
    let list = |token: String, query: &'static str| {
        let request = s.t.http.get(s.t.url(&format!("/api/spark/pending-submissions{query}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let r = list(admin.access_token.clone(), "").await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["organization_id"], "demo");
    let kept = page["submissions"].as_array().unwrap();
    let mut assignments: Vec<&str> = kept.iter().map(|k| k["assignment_id"].as_str().unwrap()).collect();
    assignments.sort();
    assert_eq!(assignments, ["essay", "poem"], "{page}");
    for k in kept {
        assert_eq!((k["platform"].as_str(), k["course_id"].as_str()), (Some("spark"), Some("bio")));
        assert_eq!(k["student_external_id"], "spark-kid");
        assert!(k["submission_id"].as_str().unwrap().starts_with("sub_"));
        assert_eq!(k["expires_at"].as_i64().unwrap() - k["received_at"].as_i64().unwrap(), 30 * 24 * 3600);
    }

    // Pages: one at a time, the cursor leads to the other and then ends.
    let first: Value = list(admin.access_token.clone(), "?limit=1").await.json().await.unwrap();
    assert_eq!(first["submissions"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().expect("a next page").to_string();
    let url = s.t.url(&format!("/api/spark/pending-submissions?limit=1&cursor={cursor}"));
    let second: Value = s.t.http.get(url).bearer_auth(&admin.access_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["submissions"].as_array().unwrap().len(), 1);
    assert_ne!(second["submissions"][0]["submission_id"], first["submissions"][0]["submission_id"]);

    // Refusals: bad page parameters; a student; another organization's admin sees only their own.
    assert_eq!(error_code(list(admin.access_token.clone(), "?limit=0").await).await, (400, "invalid_query".into()));
    assert_eq!(
        error_code(list(admin.access_token.clone(), "?cursor=bm90LW91cnM").await).await,
        (400, "invalid_cursor".into())
    );
    assert_eq!(error_code(list(s.access.clone(), "").await).await, (403, "forbidden".into()));
    let (_, other) = s.t.signed_in_as("kept-other@school.example", Role::OrgAdmin, "elsewhere").await;
    let theirs: Value = list(other.access_token.clone(), "").await.json().await.unwrap();
    assert_eq!(
        (theirs["organization_id"].as_str(), theirs["submissions"].as_array().map(Vec::len)),
        (Some("elsewhere"), Some(0))
    );
    assert_eq!(
        error_code(list(other.access_token.clone(), "?organization_id=demo").await).await,
        (403, "forbidden".into())
    );

    // Mapping one assignment takes its submission off the list.
    let quest = json!({"title": "Essay", "pillar": "art", "lms": {"platform": "spark", "course_id": "bio", "assignment_id": "essay"},
                       "tasks": [{"title": "Essay", "xp": 30}]});
    let r =
        s.t.http.post(s.t.url("/api/admin/quests")).bearer_auth(&admin.access_token).json(&quest).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.t.drain("events-dispatch").await.1, 0);
    let left: Value = list(admin.access_token.clone(), "").await.json().await.unwrap();
    assert_eq!(left["submissions"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["submissions"][0]["assignment_id"], "poem");

    // The daily check: nothing near expiry today; 24 days on, the poem expires within the week.
    let check = |ctx| hub::integrations::spark::pending::check_expiry(ctx, json!({}));
    let today = check(s.t.ctx.clone()).await.unwrap();
    assert_eq!((today["checked"].as_bool(), today["expiring"].as_u64()), (Some(true), Some(0)), "{today}");
    s.t.ctx.clock.advance(24 * 24 * 3600);
    let later = check(s.t.ctx.clone()).await.unwrap();
    assert_eq!(later["expiring"], 1, "{later}");
    assert_eq!(later["first_expiry"], left["submissions"][0]["expires_at"]);
}

#[tokio::test]
async fn a_backlog_of_pending_submissions_is_released_page_by_page_off_the_request() {
    let s = setup("whbacklog").await;
    let kids = 30; // more than one page of the release
    for i in 0..kids {
        let mut p = crate::common::profile("spark", &format!("kid-{i}"), None, Role::Student);
        p.org_id = Some("demo".into());
        hub::domain::auth::provisioning::provision_user(&s.t.ctx, &p).await.unwrap();
        let mut body = payload(&[], "backlog");
        body["spark_user_id"] = json!(format!("kid-{i}"));
        let body = body.to_string();
        assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 202, "kid {i} kept");
    }
    let mapping = LmsMapping { platform: "spark".into(), course_id: "bio".into(), assignment_id: "backlog".into() };
    let (first_page, more) = s.t.ctx.store().pending_submissions(&mapping, 25).await.unwrap();
    assert_eq!((first_page.len(), more), (25, true));

    let (_, admin) = s.t.signed_in_as("admin3@school.example", Role::OrgAdmin, "demo").await;
    let quest = json!({"title": "Backlog", "pillar": "stem", "lms": {"platform": "spark", "course_id": "bio", "assignment_id": "backlog"},
                       "tasks": [{"title": "Report", "xp": 10}]});
    let r =
        s.t.http.post(s.t.url("/api/admin/quests")).bearer_auth(&admin.access_token).json(&quest).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let quest_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let (_, failed) = s.t.drain("events-dispatch").await;
    assert_eq!(failed, 0);
    assert!(s.t.ctx.store().pending_submissions(&mapping, 25).await.unwrap().0.is_empty(), "every page released");
    for i in [0, kids - 1] {
        let user = s.t.ctx.store().user_id_by_identity("spark", &format!("kid-{i}")).await.unwrap().unwrap();
        let state = s.t.ctx.store().learning_state(&user, None).await.unwrap();
        assert!(state.contains_key(&quest_id), "kid {i}'s submission was recorded: {:?}", state.keys());
    }
}

#[tokio::test]
async fn bad_files_fail_their_job_and_leave_nothing_behind() {
    let s = setup("whfiles").await;
    let good = format!("{}/report.pdf", s.files);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![good.clone(), format!("{}/setup.exe", s.files)], "unsupported_file_type"),
        (vec![good.clone(), format!("{}/huge.pdf", s.files)], "file_too_large"),
        (vec![good.clone(), "http://169.254.169.254/latest/meta-data/".into()], "file_url_not_allowed"),
        (
            vec![good.clone(), format!("http://localhost:{}/report.pdf", s.files.rsplit(':').next().unwrap())],
            "file_url_not_allowed",
        ),
        (vec![good.clone(), format!("{}/to-metadata", s.files)], "file_url_not_allowed"),
        (vec!["ftp://127.0.0.1/report.pdf".into()], "file_url_not_allowed"),
    ];
    for (i, (files, expected)) in cases.into_iter().enumerate() {
        let refs: Vec<(&str, &str)> = files.iter().map(|f| (f.as_str(), "application/pdf")).collect();
        let mut body = payload(&refs, "lab");
        body["submission_text"] = json!(format!("attempt {i}"));
        let body = body.to_string();
        let r = post(&s, &body, Some(&sign(&s.secret, &body))).await;
        assert_eq!(r.status(), 202, "{files:?}");
        assert_eq!(run_worker(&s).await, (1, 0), "a refused file is final: not retried");
        let job = job(&s, &body).await;
        let hub::store::submission_jobs::JobStatus::Failed { error } = &job.status else {
            panic!("{files:?}: {:?}", job.status)
        };
        assert!(error.starts_with(expected), "{files:?}: {error}");
        assert!(!error.contains("://") && !error.contains(".pdf") && !error.contains("meta-data"), "no URL: {error}");
        // The same submission again answers its failure.
        let again = post(&s, &body, Some(&sign(&s.secret, &body))).await;
        assert_eq!(error_code(again).await, (422, "submission_failed".into()));
    }
    assert_eq!(stored_objects(&s).await, 0, "the good file of each failed submission was removed");
    let me = my_quests(&s).await;
    assert_eq!(me["quests"], json!([]), "no enrollment, completion or evidence");
    assert_eq!(me["xp"]["total"], 0);
}

#[tokio::test]
async fn a_failing_download_is_retried_later_then_fails_without_leaking_its_url() {
    let s = setup("whretry").await;
    // A presigned-looking URL whose download fails (Spark's storage answers 404).
    let secret_url = format!("{}/gone.pdf?X-Amz-Signature=deadbeefcafe", s.files);
    let body = payload(&[(&secret_url, "application/pdf")], "lab").to_string();
    assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 202);
    assert_eq!(run_worker(&s).await, (1, 1), "a download failure is retried");
    assert_eq!(job(&s, &body).await.status, hub::store::submission_jobs::JobStatus::Processing);
    assert_eq!(s.t.gateway.poll("spark-submission-worker", 0).await.unwrap(), (0, 0), "hidden for its backoff");
    // Its last attempt (as SQS hands it out the fifth time) ends it as failed.
    let payload: hub::integrations::spark::webhook::SubmissionPayload = serde_json::from_str(&body).unwrap();
    let key = hub::integrations::spark::webhook::idempotency_key(&payload);
    let mut message = aws_lambda_events::sqs::SqsMessage::default();
    message.body = Some(json!({"key": key}).to_string());
    message.attributes.insert("ApproximateReceiveCount".into(), "5".into());
    let worker = std::sync::Arc::new(s.t.context_for("spark-submission-worker", &[]));
    assert!(
        hub::integrations::spark::submissions::work(worker, message).await.is_err(),
        "left to the dead-letter queue"
    );
    let hub::store::submission_jobs::JobStatus::Failed { error } = job(&s, &body).await.status else { panic!() };
    assert!(error.starts_with("file_download_failed"), "{error}");
    assert!(!error.contains("deadbeef") && !error.contains("gone.pdf"), "the URL is a credential: {error}");
    assert_eq!(stored_objects(&s).await, 0);
}

#[tokio::test]
async fn a_hanging_file_host_is_paused_while_files_from_other_hosts_keep_flowing() {
    let s = setup("sparktarpit").await;
    let (hanging, calls) = devstack::bench::tarpit().await.unwrap();
    let worker = s.t.context_for("spark-submission-worker", &[]);
    let queue_job = |url: String, at: String| {
        let worker = &worker;
        async move {
            let mut p = payload(&[(&url, "application/pdf")], "lab");
            p["submitted_at"] = json!(at);
            let p: hub::integrations::spark::webhook::SubmissionPayload = serde_json::from_value(p).unwrap();
            let key = hub::integrations::spark::webhook::idempotency_key(&p);
            hub::integrations::spark::submission_jobs::queue(worker, &key, &p).await.unwrap();
            key
        }
    };
    // 200 submissions whose files sit on a host that never answers, queued before one on a healthy host.
    let base = std::time::SystemTime::now();
    let at = |i: u64| humantime::format_rfc3339_millis(base - std::time::Duration::from_millis(i)).to_string();
    let mut stuck = Vec::new();
    for i in 0..200 {
        stuck.push(queue_job(format!("{hanging}/report.pdf"), at(i + 1)).await);
    }
    let healthy = queue_job(format!("{}/report.pdf", s.files), at(0)).await;
    let status = |key: String| {
        let ctx = &s.t.ctx;
        async move { ctx.store().submission_job(&key).await.unwrap().unwrap().status }
    };

    // The worker at its template concurrency (5 instances, one job each).
    let done = std::sync::atomic::AtomicBool::new(false);
    let check = || async {
        let finished = !matches!(status(healthy.clone()).await, hub::store::submission_jobs::JobStatus::Processing);
        done.store(finished, std::sync::atomic::Ordering::SeqCst);
    };
    let watcher = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            check().await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let workers = s.t.work_until("spark-submission-worker", 5, std::time::Duration::from_secs(60), || {
        done.load(std::sync::atomic::Ordering::SeqCst)
    });
    tokio::join!(watcher, workers);
    assert!(
        matches!(status(healthy).await, hub::store::submission_jobs::JobStatus::Completed { .. }),
        "the healthy host's submission is recorded"
    );
    // The hanging host never held more than its share of the workers (3 downloads at once, and 2 more
    // as the first timeouts ended, before the third opened its breaker); its submissions wait on the
    // queue, none failed, none dead.
    let most = 3 + hub::runtime::breaker::FAILURES_TO_OPEN as usize - 1;
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) <= most, "{calls:?} calls to a hanging host");
    for key in stuck {
        assert_eq!(status(key).await, hub::store::submission_jobs::JobStatus::Processing);
    }
    s.t.assert_still_queued("SubmissionQueue", 200).await;
    assert_eq!(s.t.queued("SubmissionDeadLetterQueue").await, 0);
}

#[tokio::test]
async fn forged_floods_do_not_starve_signed_submissions() {
    let s = setup_with("whflood", &[("SparkWebhookRateLimit", "5")]).await;
    let attacker = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 7)))
        .build()
        .unwrap();
    let forged = payload(&[], "lab").to_string();
    let mut limited = 0;
    for _ in 0..40 {
        let r = attacker
            .post(s.t.url("/spark/webhook/submission"))
            .header("content-type", "application/json")
            .header("x-spark-signature", "0".repeat(64))
            .body(forged.clone())
            .send()
            .await
            .unwrap();
        match error_code(r).await {
            (401, code) if code == "invalid_signature" => {}
            (429, _) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(limited, 10, "30 forgeries a minute per address, then 429");
    // Spark's genuine submission from that same (shared egress) address: verified before the address's
    // limit is consulted, so it goes through (and counts against Spark's own limit only).
    let mut genuine = payload(&[], "lab");
    genuine["submission_text"] = json!("from the shared address");
    let genuine = genuine.to_string();
    let r = post_from(&s, &attacker, &genuine, Some(&sign(&s.secret, &genuine))).await;
    assert_eq!(r.status(), 200, "a signed submission is never refused for others' forgeries");
    // A captured genuine body replayed after its window is refused before it spends Spark's quota.
    let replayer = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 8)))
        .build()
        .unwrap();
    let mut stale = payload(&[], "lab");
    stale["submitted_at"] = json!(
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - std::time::Duration::from_secs(900))
            .to_string()
    );
    let stale = stale.to_string();
    for _ in 0..10 {
        let r = replayer
            .post(s.t.url("/spark/webhook/submission"))
            .header("content-type", "application/json")
            .header("x-spark-signature", sign(&s.secret, &stale))
            .body(stale.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (400, "stale_timestamp".into()));
    }
    // Spark's genuine submissions still go through: its own limit (5 here, one used above) counts
    // verified requests only.
    for i in 0..4 {
        let mut body = payload(&[], "lab");
        body["submission_text"] = json!(format!("draft {i}"));
        let body = body.to_string();
        assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 200, "genuine {i}");
    }
    let body = payload(&[], "lab").to_string();
    assert_eq!(error_code(post(&s, &body, Some(&sign(&s.secret, &body))).await).await.0, 429, "Spark's own limit");
}

#[tokio::test]
async fn malformed_submissions_get_clear_errors() {
    let s = setup("whbad").await;
    let signed = |body: &str| (body.to_string(), sign(&s.secret, body));
    let cases = [
        (signed("{not json"), (400, "invalid_json")),
        (signed(r#"{"spark_user_id":"spark-kid"}"#), (400, "invalid_json")),
        (
            signed(
                &json!({"spark_user_id": "spark-kid", "spark_assignment_id": "lab", "spark_course_id": "bio",
                        "submitted_at": now_iso()})
                .to_string(),
            ),
            (400, "invalid_payload"),
        ),
        (
            signed(
                &json!({"spark_user_id": "a#b", "spark_assignment_id": "lab", "spark_course_id": "bio",
                        "submission_text": "x", "submitted_at": now_iso()})
                .to_string(),
            ),
            (400, "invalid_payload"),
        ),
        (
            signed(
                &json!({"spark_user_id": "spark-kid", "spark_assignment_id": "lab", "spark_course_id": "bio",
                        "submission_text": "x", "submitted_at": "last tuesday"})
                .to_string(),
            ),
            (400, "invalid_timestamp"),
        ),
    ];
    for ((body, sig), (status, code)) in cases {
        assert_eq!(error_code(post(&s, &body, Some(&sig)).await).await, (status, code.to_string()), "{body}");
    }
    let body = payload(&[], "lab").to_string();
    let r =
        s.t.http
            .post(s.t.url("/spark/webhook/submission"))
            .header("content-type", "text/plain")
            .header("x-spark-signature", sign(&s.secret, &body))
            .body(body)
            .send()
            .await
            .unwrap();
    assert_eq!(error_code(r).await, (415, "unsupported_media_type".into()));
    let huge = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        error_code(post(&s, &huge, Some(&sign(&s.secret, &huge))).await).await,
        (413, "payload_too_large".into())
    );
    assert_eq!(my_quests(&s).await["quests"], json!([]));
}

/// Spark's API for grades: records each request; answers 500, then 200, then 422.
async fn spark_api() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<(String, String, Value)>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let header =
                            |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                        let (auth, key) = (header("authorization"), header("idempotency-key"));
                        let body: Value =
                            serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes()).unwrap();
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.push((auth, key, body));
                            l.len()
                        };
                        let status = [500, 200, 422][(n - 1).min(2)];
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(hyper::body::Bytes::from("{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn grades_are_passed_back_with_retries_and_permanent_refusals_are_not_retried() {
    let (api, seen) = spark_api().await;
    let api_url = format!("http://{api}");
    let s = setup_with("passback", &[("SparkApiUrl", &api_url), ("PassbackRetryBaseSeconds", "1")]).await;
    let (_, api_key) = s.t.key("SparkApiKeySecret").await;
    let mut graded = payload(&[], "lab");
    graded["grade"] = json!(93);
    let body = graded.to_string();
    assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 200);
    // A retried delivery of the same submission queues nothing more.
    assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 200);
    while s.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}

    // First attempt: Spark answers 500; the job comes back after the 1 s backoff and succeeds.
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 1));
    assert_eq!(s.t.gateway.poll("grade-passback", 0).await.unwrap(), (0, 0), "hidden during its backoff");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 0));
    {
        let requests = seen.lock().unwrap();
        assert_eq!(requests.len(), 2);
        let (auth, key, body) = &requests[0];
        assert_eq!(auth, &format!("Bearer {api_key}"));
        assert_eq!(key, &requests[1].1, "retries carry the same idempotency key");
        assert_eq!(body["grade"], 93);
        assert_eq!(body["user_id"], "spark-kid");
        assert_eq!((body["course_id"].as_str(), body["assignment_id"].as_str()), (Some("bio"), Some("lab")));
        assert!(body["completion_id"].as_str().unwrap().starts_with("cmp_"));
    }

    // A new grade that Spark refuses (422) is dropped, not retried.
    let mut regraded = payload(&[], "lab");
    regraded["grade"] = json!(95);
    regraded["submitted_at"] = json!(
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + std::time::Duration::from_secs(1)).to_string()
    );
    let body = regraded.to_string();
    assert_eq!(post(&s, &body, Some(&sign(&s.secret, &body))).await.status(), 200);
    while s.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 0));
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (0, 0));
    assert_eq!(seen.lock().unwrap().len(), 3);
}

/// A multipart body: the signed `metadata` field, then file parts.
fn multipart(metadata: &str, parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----spark-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{metadata}\r\n"
    )
    .into_bytes();
    for (name, bytes) in parts {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_multipart(s: &Setup, content_type: &str, body: Vec<u8>, signature: &str) -> reqwest::Response {
    s.t.http
        .post(s.t.url("/spark/webhook/submission"))
        .header("content-type", content_type)
        .header("x-spark-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn part_metadata(parts: &[(&str, &[u8])]) -> String {
    let mut p = payload(&[], "lab");
    p["submission_files"] = parts
        .iter()
        .map(|(name, bytes)| json!({"part": name, "sha256": hub::support::crypto::sha256_hex(bytes), "filename": format!("{name}.png")}))
        .collect();
    p.to_string()
}

#[tokio::test]
async fn multipart_submissions_carry_files_vouched_for_by_the_signed_metadata() {
    let s = setup("whmulti").await;
    let metadata = part_metadata(&[("photo", PNG)]);
    let (ct, body) = multipart(&metadata, &[("photo", PNG)]);
    let r = post_multipart(&s, &ct, body, &sign(&s.secret, &metadata)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let me = my_quests(&s).await;
    let blocks = me["quests"][0]["tasks"][0]["evidence"].as_array().unwrap().clone();
    assert_eq!(blocks[1]["type"], "image");
    assert_eq!(blocks[1]["file"]["content_type"], "image/png");
    assert_eq!(blocks[1]["file"]["size"], PNG.len());
    assert_eq!(stored_objects(&s).await, 1);

    // The metadata's signature is checked; a file swapped for another fails its listed hash; a part
    // the metadata does not list is refused; a body that is not multipart at all is refused.
    let metadata = part_metadata(&[("photo", PNG)]);
    let (ct, body) = multipart(&metadata, &[("photo", PNG)]);
    assert_eq!(
        error_code(post_multipart(&s, &ct, body, &sign("wrong", &metadata)).await).await,
        (401, "invalid_signature".into())
    );
    let (ct, body) = multipart(&metadata, &[("photo", PDF)]);
    assert_eq!(
        error_code(post_multipart(&s, &ct, body, &sign(&s.secret, &metadata)).await).await,
        (400, "file_hash_mismatch".into())
    );
    let (ct, body) = multipart(&metadata, &[("photo", PNG), ("extra", PDF)]);
    assert_eq!(
        error_code(post_multipart(&s, &ct, body, &sign(&s.secret, &metadata)).await).await,
        (400, "invalid_payload".into())
    );
    let r = post_multipart(&s, "multipart/form-data; boundary=nope", b"garbage".to_vec(), &sign(&s.secret, &metadata))
        .await;
    assert_eq!(error_code(r).await, (400, "invalid_multipart".into()));
    let r = post_multipart(&s, "multipart/form-data", b"garbage".to_vec(), &sign(&s.secret, &metadata)).await;
    assert_eq!(error_code(r).await, (400, "invalid_multipart".into()));
    // Over what one Lambda request can carry: refused before any work (files that large come by URL).
    let big = vec![b'x'; 7 * 1024 * 1024];
    let (ct, body) = multipart(&metadata, &[("photo", &big)]);
    assert_eq!(post_multipart(&s, &ct, body, &sign(&s.secret, &metadata)).await.status(), 413);
    assert_eq!(stored_objects(&s).await, 1, "none of the refused submissions stored a file");
}

#[tokio::test]
async fn a_grade_set_later_by_a_teacher_goes_back_to_spark() {
    let (api, seen) = spark_api().await;
    let api_url = format!("http://{api}");
    let s = setup_with("gradelater", &[("SparkApiUrl", &api_url), ("PassbackRetryBaseSeconds", "1")]).await;
    let body = payload(&[], "lab").to_string();
    let r: Value = post(&s, &body, Some(&sign(&s.secret, &body))).await.json().await.unwrap();
    let completion_id = r["completion_id"].as_str().unwrap().to_string();
    while s.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    assert_eq!(s.t.gateway.poll("grade-passback", 0).await.unwrap(), (0, 0), "no grade yet, nothing to pass back");

    let (_, teacher) = s.t.signed_in_as("teacher@school.example", Role::Teacher, "demo").await;
    let (_, stranger) = s.t.signed_in_as("teacher@other.example", Role::Teacher, "org-2").await;
    let put = |token: &str, id: &str, body: Value| {
        s.t.http.put(s.t.url(&format!("/api/completions/{id}/grade"))).bearer_auth(token).json(&body).send()
    };
    assert_eq!(
        error_code(put(&stranger.access_token, &completion_id, json!({"grade": 10})).await.unwrap()).await,
        (404, "completion_not_found".into())
    );
    assert_eq!(
        error_code(put(&s.access, &completion_id, json!({"grade": 100})).await.unwrap()).await.0,
        403,
        "students do not grade"
    );
    assert_eq!(
        error_code(put(&teacher.access_token, "cmp_nope", json!({"grade": 10})).await.unwrap()).await,
        (404, "completion_not_found".into())
    );
    assert_eq!(
        error_code(put(&teacher.access_token, &completion_id, json!({"grade": null})).await.unwrap()).await,
        (400, "invalid_grade".into())
    );
    let r = put(&teacher.access_token, &completion_id, json!({"grade": 88})).await.unwrap();
    assert_eq!(r.status(), 200);

    while s.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 1), "Spark answers 500 first");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(s.t.gateway.poll("grade-passback", 1).await.unwrap(), (1, 0));
    let requests = seen.lock().unwrap();
    assert_eq!(requests.last().unwrap().2["grade"], 88);
    assert_eq!(requests.last().unwrap().2["completion_id"], completion_id.as_str());
}

#[tokio::test]
async fn the_partner_cli_sends_signed_submissions() {
    let s = setup("whcli").await;
    let cli = crate::binaries::binary_path("spark-cli");
    let out = tokio::process::Command::new(cli)
        .args([
            "send-submission",
            "--user",
            "spark-kid",
            "--course",
            "bio",
            "--assignment",
            "lab",
            "--text",
            "From the CLI",
        ])
        .args(["--file", &format!("{}/report.pdf,application/pdf,report.pdf", s.files), "--base-url", &s.t.base])
        .env("SPARK_WEBHOOK_SECRET", &s.secret)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("202 "));
    assert_eq!(run_worker(&s).await, (1, 0));
    let me = my_quests(&s).await;
    assert_eq!(me["quests"][0]["tasks"][0]["evidence"][0]["text"], "From the CLI");
    assert_eq!(me["quests"][0]["tasks"][0]["evidence"][1]["file"]["content_type"], "application/pdf");
}

#[tokio::test]
async fn files_of_replaced_evidence_are_deleted() {
    let s = setup("whreplace").await;
    let first = payload(&[(&format!("{}/report.pdf", s.files), "application/pdf")], "lab").to_string();
    assert_eq!(post(&s, &first, Some(&sign(&s.secret, &first))).await.status(), 202);
    assert_eq!(run_worker(&s).await, (1, 0));
    assert_eq!(stored_objects(&s).await, 1);
    // A later submission for the same assignment replaces the evidence: the old file goes with it.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut second = payload(&[], "lab");
    second["submission_text"] = json!("Rewritten without the PDF.");
    let second = second.to_string();
    assert_eq!(post(&s, &second, Some(&sign(&s.secret, &second))).await.status(), 200);
    let me = my_quests(&s).await;
    let blocks = me["quests"][0]["tasks"][0]["evidence"].as_array().unwrap().clone();
    assert_eq!(blocks, vec![json!({"order": 1, "type": "text", "text": "Rewritten without the PDF."})]);
    assert_eq!(stored_objects(&s).await, 0, "the replaced file was deleted");
}
