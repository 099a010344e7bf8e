//! Observers end to end through the dev gateway: invitations by email (read back from the local
//! SES), acceptance, the authorization matrix of every observer and student route, comments,
//! removal, and the events they announce.

use hub::domain::auth::{Role, User};
use hub::domain::learning::quests::{NewQuest, NewTask, create_quest};
use hub::domain::learning::submissions::{Submission, record};
use hub::domain::learning::{BlockType, EvidenceBlock, LmsMapping, Quest, StoredFile};
use serde_json::{Value, json};

use crate::common::{Email, TestStack, error_code};

/// A student of `demo` with one quest (two tasks, the first completed with a text and a file as
/// evidence), signed in.
pub struct Family {
    pub t: TestStack,
    pub student: User,
    pub student_token: String,
    pub quest: Quest,
    pub file_bytes: Vec<u8>,
    domain: String,
}

impl Family {
    pub async fn new(name: &str) -> Self {
        let t = TestStack::new(name).await;
        // One local SES serves every run: addresses are unique to this one.
        let domain = format!("{name}-{:08x}.example", rand::random::<u32>());
        let (student, pair) = t.signed_in_as(&format!("ada@{domain}"), Role::Student, "demo").await;
        let (admin, _) = t.signed_in_as(&format!("qa@{domain}"), Role::OrgAdmin, "demo").await;
        let principal = hub::domain::auth::guard::Principal {
            user_id: admin.id,
            email: admin.email,
            role: Role::OrgAdmin,
            org_id: Some("demo".into()),
            session_id: "s".into(),
        };
        let quest = create_quest(
            &t.ctx,
            &principal,
            NewQuest {
                title: "Volcanoes".into(),
                pillar: "stem".into(),
                organization_id: None,
                lms: Some(LmsMapping { platform: "spark".into(), course_id: "c1".into(), assignment_id: "a1".into() }),
                tasks: vec![
                    NewTask { title: "Build a model".into(), pillar: Some("stem".into()), xp: 50 },
                    NewTask { title: "Present it".into(), pillar: Some("communication".into()), xp: 30 },
                ],
            },
        )
        .await
        .unwrap();
        let file_bytes = b"%PDF-1.4 the volcano report".to_vec();
        let key = format!("evidence/{}/report.pdf", hub::support::crypto::random_token(12));
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&t.sdk).force_path_style(true).build());
        s3.put_object()
            .bucket(&t.ctx.config.evidence_bucket)
            .key(&key)
            .body(file_bytes.clone().into())
            .send()
            .await
            .unwrap();
        let evidence = vec![
            EvidenceBlock {
                order: 1,
                block_type: BlockType::Text,
                text: Some("My volcano erupts!".into()),
                file: None,
            },
            EvidenceBlock {
                order: 2,
                block_type: BlockType::Document,
                text: None,
                file: Some(StoredFile {
                    key,
                    filename: "report.pdf".into(),
                    content_type: "application/pdf".into(),
                    size: file_bytes.len() as u64,
                }),
            },
        ];
        let submission = Submission {
            source: "spark",
            key: "sub-1",
            user_id: &student.id,
            quest: &quest,
            task_id: None,
            evidence: &evidence,
            grade: None,
            lms_ref: None,
        };
        record(&t.ctx, &submission).await.unwrap();
        Self { t, student, student_token: pair.access_token, quest, file_bytes, domain }
    }

    pub fn address(&self, who: &str) -> String {
        format!("{who}@{}", self.domain)
    }

    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self.t.http.request(method, self.t.url(path));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        r.send().await.unwrap()
    }

    /// The student invites `email`; returns the invitation and the email it got.
    pub async fn invite(&self, email: &str, can_view_evidence: bool, can_comment: bool) -> (Value, Email) {
        let body = json!({"email": email, "relationship": "grandparent", "can_view_evidence": can_view_evidence,
            "can_comment": can_comment, "message": "Look at my <volcano> & more!"});
        let r =
            self.send(http::Method::POST, "/api/observers/invitations", Some(&self.student_token), Some(body)).await;
        assert_eq!(r.status(), 201);
        let invitation: Value = r.json().await.unwrap();
        let mail = self.t.deliver_emails_to(email).await.pop().expect("an invitation email");
        (invitation, mail)
    }

    /// Accepts with the emailed code, signed out; returns the observer's access token and id.
    pub async fn accept(&self, mail: &Email) -> (String, String) {
        let code = mail.code(&self.t.base, "/observers/accept");
        let r =
            self.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_string();
        let me = self.t.get_json("/api/auth/me", &token).await;
        (token, me["id"].as_str().unwrap().to_string())
    }
}

#[tokio::test]
async fn an_invited_grandparent_follows_the_student_within_what_the_student_allows() {
    let f = Family::new("obs-flow").await;
    let gran = f.address("gran");
    let (invitation, mail) = f.invite(&gran, false, true).await;
    assert_eq!(invitation["status"], "pending");
    assert!(invitation.get("code").is_none(), "the code only travels by email");

    // The email: both parts, the student's note escaped in HTML, a link to our accept page.
    assert_eq!(mail.to, std::slice::from_ref(&gran));
    assert_eq!(mail.from, "no-reply@hub.local");
    assert!(mail.subject.contains("Ada Lovelace invites you"), "{}", mail.subject);
    assert!(mail.text.contains("Look at my <volcano> & more!") && !mail.text.contains("<p>"));
    assert!(mail.html.contains("Look at my &lt;volcano&gt; &amp; more!"));
    let code = mail.code(&f.t.base, "/observers/accept");

    // Opening the page uses nothing up.
    let page = f.t.http.get(mail.link(&f.t.base, "/observers/accept")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Look at my &lt;volcano&gt;"));

    let (observer, observer_id) = f.accept(&mail).await;
    let me = f.t.get_json("/api/auth/me", &observer).await;
    assert_eq!(
        (me["role"].as_str(), me["email"].as_str(), me["org_id"].as_str()),
        (Some("observer"), Some(gran.as_str()), None)
    );
    let again =
        f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
    assert_eq!(error_code(again).await, (410, "invitation_used".into()));

    // The observer's side: the student, the portfolio without evidence.
    let students = f.t.get_json("/api/observers/students", &observer).await;
    assert_eq!(students[0]["student_id"], f.student.id.as_str());
    assert_eq!(
        (students[0]["can_view_evidence"].as_bool(), students[0]["can_comment"].as_bool()),
        (Some(false), Some(true))
    );
    let portfolio_path = format!("/api/observers/students/{}/portfolio", f.student.id);
    let portfolio = f.t.get_json(&portfolio_path, &observer).await;
    assert_eq!(portfolio["xp"]["total"], 50);
    assert_eq!(portfolio["xp"]["by_pillar"]["stem"], 50);
    let quest = &portfolio["quests"][0];
    assert_eq!((quest["title"].as_str(), quest["status"].as_str()), (Some("Volcanoes"), Some("active")));
    assert_eq!(quest["tasks"][0]["status"], "completed");
    assert!(quest["tasks"][0]["completed_at"].is_i64());
    assert_eq!(quest["tasks"][1]["status"], "pending");
    assert!(quest["tasks"][0].get("evidence").is_none(), "no evidence without can_view_evidence: {quest}");

    // The student's side: the observer is listed; evidence is allowed, then visible at once, with
    // the file behind a working presigned link.
    let observers = f.t.get_json("/api/observers", &f.student_token).await;
    assert_eq!(
        (observers[0]["observer_id"].as_str(), observers[0]["relationship"].as_str()),
        (Some(observer_id.as_str()), Some("grandparent"))
    );
    let path = format!("/api/observers/{observer_id}");
    let r = f
        .send(
            http::Method::PUT,
            &path,
            Some(&f.student_token),
            Some(json!({"can_view_evidence": true, "can_comment": true})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let portfolio = f.t.get_json(&portfolio_path, &observer).await;
    let evidence = &portfolio["quests"][0]["tasks"][0]["evidence"];
    assert_eq!(evidence[0]["text"], "My volcano erupts!");
    let file = &evidence[1]["file"];
    assert_eq!(file["filename"], "report.pdf");
    let download = f.t.http.get(file["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), f.file_bytes.as_slice());

    // Comments: text stays text, the student sees and hides, observers stop seeing it.
    let body = json!({"student_id": f.student.id, "quest_id": f.quest.id, "task_id": f.quest.tasks[0].id,
        "body": "<img src=x onerror=alert(1)> Bravo!"});
    let r = f.send(http::Method::POST, "/api/observers/comments", Some(&observer), Some(body)).await;
    assert_eq!(r.status(), 201);
    let comment: Value = r.json().await.unwrap();
    assert_eq!(comment["body"], "<img src=x onerror=alert(1)> Bravo!");
    let mine = f.t.get_json("/api/me/comments", &f.student_token).await;
    assert_eq!(mine["comments"][0]["id"], comment["id"]);
    assert_eq!(mine["comments"][0]["author_name"], "grandparent", "an observer without a name is their relationship");
    let comments_path = format!("/api/observers/students/{}/comments", f.student.id);
    assert_eq!(f.t.get_json(&comments_path, &observer).await["comments"].as_array().unwrap().len(), 1);
    let hide = format!("/api/me/comments/{}", comment["id"].as_str().unwrap());
    let r = f.send(http::Method::PUT, &hide, Some(&f.student_token), Some(json!({"hidden": true}))).await;
    assert_eq!(r.json::<Value>().await.unwrap()["hidden"], true);
    assert!(f.t.get_json(&comments_path, &observer).await["comments"].as_array().unwrap().is_empty());
    assert_eq!(f.t.get_json("/api/me/comments", &f.student_token).await["comments"][0]["hidden"], true);

    // Events: observer.linked and observer.comment.posted reached the events queue.
    while f.t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    let activity = f.t.ctx.store().activity("demo", 50).await.unwrap();
    let types: Vec<&str> = activity.iter().map(|(_, event_type)| event_type.as_str()).collect();
    assert!(types.contains(&"observer.linked") && types.contains(&"observer.comment.posted"), "{types:?}");

    // Removal refuses the very next request, and the student's list is empty.
    let r = f.send(http::Method::DELETE, &path, Some(&f.student_token), None).await;
    assert_eq!(r.status(), 200);
    let after = f.send(http::Method::GET, &portfolio_path, Some(&observer), None).await;
    assert_eq!(error_code(after).await, (404, "student_not_found".into()));
    let after = f.send(http::Method::GET, &comments_path, Some(&observer), None).await;
    assert_eq!(error_code(after).await, (404, "student_not_found".into()));
    assert!(f.t.get_json("/api/observers/students", &observer).await.as_array().unwrap().is_empty());
    assert!(f.t.get_json("/api/observers", &f.student_token).await.as_array().unwrap().is_empty());
    let again = f.send(http::Method::DELETE, &path, Some(&f.student_token), None).await;
    assert_eq!(error_code(again).await, (404, "observer_not_found".into()));
}

#[tokio::test]
async fn observers_reach_only_what_they_are_linked_to_and_allowed() {
    let f = Family::new("obs-matrix").await;
    let (_, mail) = f.invite(&f.address("coach"), false, false).await;
    let (observer, observer_id) = f.accept(&mail).await;
    let (other_student, other_pair) = f.t.signed_in_as(&f.address("bob"), Role::Student, "demo").await;

    // Another student's portfolio and comments: not found, as for an unknown id.
    for path in [
        format!("/api/observers/students/{}/portfolio", other_student.id),
        format!("/api/observers/students/{}/comments", other_student.id),
        "/api/observers/students/no-such-student/portfolio".to_string(),
    ] {
        let r = f.send(http::Method::GET, &path, Some(&observer), None).await;
        assert_eq!(error_code(r).await, (404, "student_not_found".into()), "{path}");
    }
    // Commenting needs can_comment (and a link); nothing is written either way.
    let comment = |student: &str| json!({"student_id": student, "body": "Well done"});
    let r = f.send(http::Method::POST, "/api/observers/comments", Some(&observer), Some(comment(&f.student.id))).await;
    assert_eq!(error_code(r).await, (403, "comment_not_allowed".into()));
    let r =
        f.send(http::Method::POST, "/api/observers/comments", Some(&observer), Some(comment(&other_student.id))).await;
    assert_eq!(error_code(r).await, (404, "student_not_found".into()));
    assert!(f.t.get_json("/api/me/comments", &f.student_token).await["comments"].as_array().unwrap().is_empty());

    // Bad comments, once allowed: empty, too long, control characters, unknown quest or task.
    let path = format!("/api/observers/{observer_id}");
    f.send(
        http::Method::PUT,
        &path,
        Some(&f.student_token),
        Some(json!({"can_view_evidence": false, "can_comment": true})),
    )
    .await;
    for (body, expected) in [
        (json!({"student_id": f.student.id, "body": "   "}), (400, "invalid_comment")),
        (json!({"student_id": f.student.id, "body": "x".repeat(2001)}), (400, "invalid_comment")),
        (json!({"student_id": f.student.id, "body": "a\u{0007}b"}), (400, "invalid_comment")),
        (json!({"student_id": f.student.id, "quest_id": "nope", "body": "hi"}), (404, "quest_not_found")),
        (
            json!({"student_id": f.student.id, "quest_id": f.quest.id, "task_id": "nope", "body": "hi"}),
            (404, "task_not_found"),
        ),
        (json!({"student_id": f.student.id, "task_id": f.quest.tasks[0].id, "body": "hi"}), (400, "invalid_comment")),
    ] {
        let r = f.send(http::Method::POST, "/api/observers/comments", Some(&observer), Some(body)).await;
        assert_eq!(error_code(r).await, (expected.0, expected.1.to_string()));
    }
    let ok = json!({"student_id": f.student.id, "body": "é".repeat(2000)});
    assert_eq!(f.send(http::Method::POST, "/api/observers/comments", Some(&observer), Some(ok)).await.status(), 201);

    // An observer calling student and admin routes.
    for (method, path, body) in [
        (
            http::Method::POST,
            "/api/observers/invitations",
            Some(json!({"email": "x@y.example", "relationship": "parent"})),
        ),
        (http::Method::GET, "/api/observers/invitations", None),
        (http::Method::GET, "/api/observers", None),
        (
            http::Method::POST,
            "/api/admin/quests",
            Some(json!({"title": "t", "pillar": "stem", "tasks": [{"title": "a", "xp": 1}]})),
        ),
        (http::Method::GET, "/api/webhooks/subscriptions", None),
    ] {
        let r = f.send(method.clone(), path, Some(&observer), body).await;
        assert_eq!(r.status(), 403, "{method} {path}");
    }
    // Another student cannot see, change or remove this student's observers, nor hide their comments.
    assert!(f.t.get_json("/api/observers", &other_pair.access_token).await.as_array().unwrap().is_empty());
    let r = f
        .send(
            http::Method::PUT,
            &path,
            Some(&other_pair.access_token),
            Some(json!({"can_view_evidence": true, "can_comment": true})),
        )
        .await;
    assert_eq!(error_code(r).await, (404, "observer_not_found".into()));
    let r = f.send(http::Method::DELETE, &path, Some(&other_pair.access_token), None).await;
    assert_eq!(error_code(r).await, (404, "observer_not_found".into()));
    let comment_id =
        f.t.get_json("/api/me/comments", &f.student_token).await["comments"][0]["id"].as_str().unwrap().to_string();
    let r = f
        .send(
            http::Method::PUT,
            &format!("/api/me/comments/{comment_id}"),
            Some(&other_pair.access_token),
            Some(json!({"hidden": true})),
        )
        .await;
    assert_eq!(error_code(r).await, (404, "comment_not_found".into()));
    assert_eq!(f.t.get_json("/api/me/comments", &f.student_token).await["comments"][0]["hidden"], false);
    // The observer's permissions are still what the student set.
    let students = f.t.get_json("/api/observers/students", &observer).await;
    assert_eq!(
        (students[0]["can_view_evidence"].as_bool(), students[0]["can_comment"].as_bool()),
        (Some(false), Some(true))
    );
    // No token at all.
    let r = f.send(http::Method::GET, "/api/observers/students", None, None).await;
    assert_eq!(error_code(r).await, (401, "missing_token".into()));
}

#[tokio::test]
async fn invitations_are_single_use_bound_to_their_address_and_expire() {
    let f = Family::new("obs-invites").await;

    // Refused before anything is written or sent.
    for (body, expected) in [
        (json!({"email": "not-an-address", "relationship": "parent"}), (400, "invalid_email")),
        (json!({"email": f.address("p"), "relationship": "uncle"}), (400, "invalid_relationship")),
        (
            json!({"email": f.address("p"), "relationship": "parent", "message": "x".repeat(501)}),
            (400, "invalid_message"),
        ),
        (json!({"email": f.address("ADA"), "relationship": "parent"}), (400, "cannot_invite_self")),
        (json!({"email": f.address("p"), "relationship": "parent", "admin": true}), (400, "invalid_json")),
    ] {
        let r = f.send(http::Method::POST, "/api/observers/invitations", Some(&f.student_token), Some(body)).await;
        assert_eq!(error_code(r).await, (expected.0, expected.1.to_string()));
    }
    assert!(f.t.get_json("/api/observers/invitations", &f.student_token).await.as_array().unwrap().is_empty());
    assert!(f.t.deliver_emails_to(&f.address("p")).await.is_empty());

    // Bound to its address: a signed-in account of another address is refused, nothing changes.
    let mentor = f.address("mentor");
    let (invitation, mail) = f.invite(&mentor, true, true).await;
    let code = mail.code(&f.t.base, "/observers/accept");
    let dup = f
        .send(
            http::Method::POST,
            "/api/observers/invitations",
            Some(&f.student_token),
            Some(json!({"email": mentor.to_uppercase(), "relationship": "mentor"})),
        )
        .await;
    assert_eq!(error_code(dup).await, (409, "invitation_pending".into()));
    let (_, stranger) = f.t.signed_in_as(&f.address("stranger"), Role::Teacher, "demo").await;
    let r = f
        .send(
            http::Method::POST,
            "/api/observers/invitations/accept",
            Some(&stranger.access_token),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(error_code(r).await, (403, "invitation_email_mismatch".into()));
    let r = f
        .send(http::Method::POST, "/api/observers/invitations/accept", Some("not.a.token"), Some(json!({"code": code})))
        .await;
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));
    assert!(f.t.get_json("/api/observers", &f.student_token).await.as_array().unwrap().is_empty());
    assert_eq!(f.t.get_json("/api/observers/invitations", &f.student_token).await[0]["status"], "pending");

    // The invited address has an account: signed out, the link does not open it (invitations live 7
    // days and get forwarded); its owner signs in first.
    let (teacher, teacher_pair) = f.t.signed_in_as(&mentor, Role::Teacher, "demo").await;
    let r = f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
    assert_eq!(error_code(r).await, (401, "sign_in_required".into()));
    assert!(f.t.get_json("/api/observers", &f.student_token).await.as_array().unwrap().is_empty());
    // Signed in as the invited address (the existing teacher account): linked, role unchanged.
    let r = f
        .send(
            http::Method::POST,
            "/api/observers/invitations/accept",
            Some(&teacher_pair.access_token),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(f.t.get_json("/api/auth/me", &teacher_pair.access_token).await["role"], "teacher");
    assert_eq!(f.t.get_json("/api/observers", &f.student_token).await[0]["observer_id"], teacher.id.as_str());
    let again =
        f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
    assert_eq!(error_code(again).await, (410, "invitation_used".into()));
    let r = f
        .send(
            http::Method::POST,
            "/api/observers/invitations",
            Some(&f.student_token),
            Some(json!({"email": mentor, "relationship": "mentor"})),
        )
        .await;
    assert_eq!(error_code(r).await, (409, "already_observer".into()));
    let listed = f.t.get_json("/api/observers/invitations", &f.student_token).await;
    assert_eq!((listed[0]["id"].as_str(), listed[0]["status"].as_str()), (invitation["id"].as_str(), Some("accepted")));

    // Cancelled: the link stops working; cancelling twice is a conflict.
    let (cancelled, mail) = f.invite(&f.address("aunt"), false, false).await;
    let path = format!("/api/observers/invitations/{}", cancelled["id"].as_str().unwrap());
    let (_, other) = f.t.signed_in_as(&f.address("bob"), Role::Student, "demo").await;
    let r = f.send(http::Method::DELETE, &path, Some(&other.access_token), None).await;
    assert_eq!(error_code(r).await, (404, "invitation_not_found".into()), "another student's invitation");
    let r = f.send(http::Method::DELETE, &path, Some(&f.student_token), None).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let r = f.send(http::Method::DELETE, &path, Some(&f.student_token), None).await;
    assert_eq!(error_code(r).await, (409, "invitation_closed".into()));
    let code = mail.code(&f.t.base, "/observers/accept");
    let r = f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
    assert_eq!(error_code(r).await, (410, "invitation_cancelled".into()));
    let page = f.t.http.get(mail.link(&f.t.base, "/observers/accept")).send().await.unwrap();
    assert_eq!(page.status(), 410);

    // Expired after 7 days, as every fresh instance sees it.
    let (_, mail) = f.invite(&f.address("uncle"), false, false).await;
    let code = mail.code(&f.t.base, "/observers/accept");
    let later = std::sync::Arc::new(f.t.context_for("observers-invitation-accept", &[]));
    later.clock.advance(7 * 24 * 3600 + 1);
    let err = hub::integrations::observers::invitations::accept(&later, &code, None).await.err().unwrap();
    assert_eq!((err.status.as_u16(), err.code), (410, "invitation_expired"));

    // Unknown codes are not found, and count against the source address.
    let r = f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": "guess"}))).await;
    assert_eq!(error_code(r).await, (404, "invitation_not_found".into()));
}

#[tokio::test]
async fn of_two_concurrent_acceptances_exactly_one_wins() {
    let f = Family::new("obs-race").await;
    let (_, mail) = f.invite(&f.address("dad"), true, true).await;
    let code = mail.code(&f.t.base, "/observers/accept");
    let attempts = (0..4)
        .map(|_| f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))));
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    // The others lost either the account (created by the winner: 401 sign_in_required) or the
    // invitation itself (410 invitation_used).
    assert!(statuses.iter().all(|s| [200, 401, 410].contains(s)), "{statuses:?}");
    assert_eq!(f.t.get_json("/api/observers", &f.student_token).await.as_array().unwrap().len(), 1);
    let listed = f.t.get_json("/api/observers/invitations", &f.student_token).await;
    assert_eq!(listed[0]["status"], "accepted");
}

#[tokio::test]
async fn email_sign_in_answers_alike_for_every_address_and_links_work_once() {
    let f = Family::new("obs-email").await;
    let start =
        |email: String| f.send(http::Method::POST, "/api/auth/email/start", None, Some(json!({"email": email})));
    let known = start(f.address("ada")).await;
    assert_eq!(known.status(), 202);
    let known: Value = known.json().await.unwrap();
    let unknown = start(f.address("nobody")).await;
    assert_eq!(unknown.status(), 202);
    assert_eq!(unknown.json::<Value>().await.unwrap(), known, "no account enumeration");
    assert!(f.t.deliver_emails_to(&f.address("nobody")).await.is_empty());
    let mail = f.t.emails_to(&f.address("ada")).await.pop().expect("a sign-in email");
    assert_eq!(mail.subject, "Your sign-in link");
    assert!(mail.text.contains("15 minutes") && mail.html.contains("<a href="));
    let code = mail.code(&f.t.base, "/auth/sign-in/confirm");

    // The link's page does not use the code; the verify does, once.
    let page = f.t.http.get(mail.link(&f.t.base, "/auth/sign-in/confirm")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let verify = |code: String| f.send(http::Method::POST, "/api/auth/email/verify", None, Some(json!({"code": code})));
    let r = verify(code.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("__Host-hub_access=")));
    let tokens: Value = r.json().await.unwrap();
    let me = f.t.get_json("/api/auth/me", tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me["id"], f.student.id.as_str());
    assert_eq!(error_code(verify(code).await).await, (400, "invalid_code".into()));

    // Two concurrent uses of one link: exactly one session.
    start(f.address("ada")).await;
    let code = f.t.deliver_emails_to(&f.address("ada")).await.pop().unwrap().code(&f.t.base, "/auth/sign-in/confirm");
    let both = futures_util::future::join_all((0..3).map(|_| verify(code.clone()))).await;
    assert_eq!(both.iter().filter(|r| r.status() == 200).count(), 1);

    // A code of another flow is not a sign-in code, and is not used up by trying; nor is an oversized one.
    let other = hub::store::codes::CodeGrant {
        user_id: f.student.id.clone(),
        purpose: "spark_sso".into(),
        expires_at: crate::common::now() + 60,
        email: None,
        next: None,
        browser: None,
    };
    f.t.ctx.store().put_code("a-code-of-another-flow", &other).await.unwrap();
    assert_eq!(error_code(verify("a-code-of-another-flow".into()).await).await, (400, "invalid_code".into()));
    assert!(f.t.ctx.store().consume_code("a-code-of-another-flow", "spark_sso", None).await.unwrap().is_some());
    assert_eq!(error_code(verify("x".repeat(129)).await).await, (400, "invalid_code".into()));

    // Expired after 15 minutes.
    start(f.address("ada")).await;
    let code = f.t.deliver_emails_to(&f.address("ada")).await.pop().unwrap().code(&f.t.base, "/auth/sign-in/confirm");
    let later = f.t.context_for("auth-email-verify", &[]);
    later.clock.advance(15 * 60 + 1);
    let err = hub::domain::auth::email_sign_in::verify(&later, &code, "203.0.113.9", None).await.err().unwrap();
    assert_eq!(err.code, "invalid_code");

    // Malformed requests, and look-alikes that would fold onto someone's address.
    assert_eq!(error_code(start("not an address".into()).await).await, (400, "invalid_email".into()));
    let lookalike = f.address("ada").replacen('a', "\u{FF41}", 1);
    assert_eq!(hub::domain::auth::email_key(&lookalike), hub::domain::auth::email_key(&f.address("ada")));
    assert_eq!(error_code(start(lookalike).await).await, (400, "invalid_email".into()));
    let r = f
        .send(
            http::Method::POST,
            "/api/auth/email/start",
            None,
            Some(json!({"email": f.address("ada"), "next": "https://evil.example"})),
        )
        .await;
    assert_eq!(error_code(r).await, (400, "invalid_next".into()));
}

#[tokio::test]
async fn sign_in_links_are_limited_per_address() {
    let f = Family::new("obs-limit").await;
    let target = f.address("ada");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = f.send(http::Method::POST, "/api/auth/email/start", None, Some(json!({"email": target}))).await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    // Case and compatibility forms are the same address.
    let r =
        f.send(http::Method::POST, "/api/auth/email/start", None, Some(json!({"email": target.to_uppercase()}))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(f.t.deliver_emails_to(&target).await.len(), 5);
}

#[tokio::test]
async fn an_invited_address_without_an_account_signs_in_and_sees_its_invitations() {
    let f = Family::new("obs-pending").await;
    let uncle = f.address("uncle");
    let (invitation, _) = f.invite(&uncle, false, true).await;
    let r = f.send(http::Method::POST, "/api/auth/email/start", None, Some(json!({"email": uncle}))).await;
    assert_eq!(r.status(), 202);
    let mail =
        f.t.deliver_emails_to(&uncle)
            .await
            .into_iter()
            .find(|m| m.subject == "Your sign-in link")
            .expect("a sign-in link");
    let code = mail.code(&f.t.base, "/auth/sign-in/confirm");
    let r = f.send(http::Method::POST, "/api/auth/email/verify", None, Some(json!({"code": code}))).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    assert_eq!(f.t.get_json("/api/auth/me", &token).await["role"], "observer");
    let pending = f.t.get_json("/api/observers/pending", &token).await;
    assert_eq!(pending[0]["invitation_id"], invitation["id"]);
    assert_eq!(pending[0]["student_name"], "Ada Lovelace");
    // Not linked until accepted, which the signed-in account now does with the invitation's link.
    let portfolio = format!("/api/observers/students/{}/portfolio", f.student.id);
    assert_eq!(f.send(http::Method::GET, &portfolio, Some(&token), None).await.status(), 404);
    let invitation_mail = f.t.emails_to(&uncle).await.into_iter().find(|m| m.subject.contains("invites you")).unwrap();
    let code = invitation_mail.code(&f.t.base, "/observers/accept");
    let r = f.send(http::Method::POST, "/api/observers/invitations/accept", None, Some(json!({"code": code}))).await;
    assert_eq!(error_code(r).await, (401, "sign_in_required".into()), "signed out, the account is not opened");
    let r = f
        .send(http::Method::POST, "/api/observers/invitations/accept", Some(&token), Some(json!({"code": code})))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(f.send(http::Method::GET, &portfolio, Some(&token), None).await.status(), 200);
    assert!(f.t.get_json("/api/observers/pending", &token).await.as_array().unwrap().is_empty());
}
