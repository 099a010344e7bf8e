//! The learning core: quests by admins of the right organization, and submissions that enroll,
//! complete, award XP once and show up in the student's view.

use std::sync::Arc;

use hub::domain::auth::Role;
use hub::domain::learning::quests::{NewQuest, NewTask, create_quest};
use hub::domain::learning::submissions::{Submission, record};
use hub::domain::learning::{BlockType, EvidenceBlock, LmsMapping, Quest};
use serde_json::{Value, json};

use crate::common::{TestStack, error_code};

fn text_block(text: &str) -> Vec<EvidenceBlock> {
    vec![EvidenceBlock { order: 1, block_type: BlockType::Text, text: Some(text.into()), file: None }]
}

/// Records a text-only Spark submission (no grade) for a user.
async fn submit_text(
    ctx: &hub::Context,
    user_id: &str,
    quest: &Quest,
    key: &str,
    text: &str,
) -> Result<hub::domain::learning::submissions::Recorded, hub::ApiError> {
    let evidence = text_block(text);
    record(
        ctx,
        &Submission {
            source: "spark",
            key,
            user_id,
            quest,
            task_id: None,
            evidence: &evidence,
            grade: None,
            lms_ref: None,
        },
    )
    .await
}

async fn quest(t: &TestStack, tasks: &[(&str, i64, &str)], assignment: &str) -> Quest {
    let (admin, _) = t.signed_in_as("qa@example.com", Role::OrgAdmin, "demo").await;
    let principal = hub::domain::auth::guard::Principal {
        user_id: admin.id,
        email: admin.email,
        role: Role::OrgAdmin,
        org_id: Some("demo".into()),
        session_id: "s".into(),
    };
    let new = NewQuest {
        title: format!("Quest {assignment}"),
        pillar: "stem".into(),
        organization_id: None,
        lms: Some(LmsMapping { platform: "spark".into(), course_id: "c1".into(), assignment_id: assignment.into() }),
        tasks: tasks
            .iter()
            .map(|(title, xp, pillar)| NewTask { title: title.to_string(), pillar: Some(pillar.to_string()), xp: *xp })
            .collect(),
    };
    create_quest(&t.ctx, &principal, new).await.unwrap()
}

#[tokio::test]
async fn admins_manage_quests_of_their_own_organization_only() {
    let t = TestStack::new("quests").await;
    let (_, org_admin) = t.signed_in_as("oa@example.com", Role::OrgAdmin, "demo").await;
    let (_, admin) = t.signed_in_as("pa@example.com", Role::Admin, "hq").await;
    let (_, student) = t.signed_in_as("st@example.com", Role::Student, "demo").await;
    let body = |org: Option<&str>, assignment: &str| {
        json!({"title": "Lab", "pillar": "stem", "organization_id": org,
               "lms": {"platform": "spark", "course_id": "c1", "assignment_id": assignment},
               "tasks": [{"title": "Report", "xp": 100}, {"title": "Reflection", "pillar": "art", "xp": 20}]})
    };
    let post = |token: &str, body: Value| t.http.post(t.url("/api/admin/quests")).bearer_auth(token).json(&body).send();

    let r = post(&org_admin.access_token, body(None, "a1")).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["organization_id"], "demo");
    assert_eq!(created["tasks"][1]["pillar"], "art");
    assert_eq!(created["tasks"][0]["order"], 1);

    assert_eq!(error_code(post(&org_admin.access_token, body(Some("org-2"), "a2")).await.unwrap()).await.0, 403);
    assert_eq!(error_code(post(&student.access_token, body(None, "a3")).await.unwrap()).await.0, 403);
    // Spark assignments belong to Spark's organization (`demo` locally), even for a platform admin.
    assert_eq!(
        error_code(post(&admin.access_token, body(Some("org-2"), "a4")).await.unwrap()).await,
        (403, "integration_tenant_mismatch".into())
    );
    assert_eq!(post(&admin.access_token, body(Some("demo"), "a4")).await.unwrap().status(), 201);
    // One quest per LMS assignment.
    assert_eq!(
        error_code(post(&admin.access_token, body(Some("demo"), "a1")).await.unwrap()).await,
        (409, "lms_mapping_taken".into())
    );
    // Bad bodies.
    let mut no_tasks = body(None, "a5");
    no_tasks["tasks"] = json!([]);
    assert_eq!(error_code(post(&org_admin.access_token, no_tasks).await.unwrap()).await, (400, "invalid_quest".into()));
    let mut bad_pillar = body(None, "a6");
    bad_pillar["pillar"] = json!("Not A Slug");
    assert_eq!(
        error_code(post(&org_admin.access_token, bad_pillar).await.unwrap()).await,
        (400, "invalid_quest".into())
    );
    let mut unknown = body(None, "a7");
    unknown["surprise"] = json!(1);
    assert_eq!(error_code(post(&org_admin.access_token, unknown).await.unwrap()).await, (400, "invalid_json".into()));
    let r = t.http.post(t.url("/api/admin/quests")).json(&body(None, "a8")).send().await.unwrap();
    assert_eq!(error_code(r).await.0, 401);

    // Listing: each admin sees only what they may.
    let list =
        |token: &str, query: &str| t.http.get(t.url(&format!("/api/admin/quests{query}"))).bearer_auth(token).send();
    let mine: Value = list(&org_admin.access_token, "").await.unwrap().json().await.unwrap();
    assert_eq!(mine["quests"].as_array().unwrap().len(), 2);
    assert_eq!(error_code(list(&org_admin.access_token, "?organization_id=org-2").await.unwrap()).await.0, 403);
    let other: Value = list(&admin.access_token, "?organization_id=org-2").await.unwrap().json().await.unwrap();
    assert_eq!(other["quests"].as_array().unwrap().len(), 0);
    assert_eq!(error_code(list(&student.access_token, "").await.unwrap()).await.0, 403);
}

#[tokio::test]
async fn a_submission_enrolls_completes_once_replaces_evidence_and_shows_up_for_the_student() {
    let t = TestStack::new("submit").await;
    let q = quest(&t, &[("Report", 100, "stem"), ("Reflection", 50, "art")], "s1").await;
    let (student, tokens) = t.signed_in_as("kid@example.com", Role::Student, "demo").await;
    let submit = |key: &'static str, text: &'static str| {
        let (ctx, q, user) = (t.ctx.clone(), q.clone(), student.id.clone());
        async move { submit_text(&ctx, &user, &q, key, text).await.unwrap() }
    };
    let first = submit("k1", "first draft").await;
    assert!(!first.duplicate);
    let retry = submit("k1", "first draft").await;
    assert_eq!((retry.completion_id.as_str(), retry.duplicate), (first.completion_id.as_str(), true));
    let resubmission = submit("k2", "final version").await;
    assert_eq!((resubmission.completion_id.as_str(), resubmission.duplicate), (first.completion_id.as_str(), false));

    let me: Value = t.get_json("/api/me/quests", &tokens.access_token).await;
    assert_eq!(me["xp"], json!({"total": 100, "by_pillar": {"stem": 100}, "quests_completed": 0}), "XP awarded once");
    let mine = &me["quests"][0];
    assert_eq!(mine["quest_id"], q.id.as_str());
    assert_eq!(mine["status"], "active", "one of two tasks done");
    assert_eq!(mine["tasks"][0]["status"], "completed");
    assert_eq!(mine["tasks"][0]["completion_id"], first.completion_id.as_str());
    assert_eq!(
        mine["tasks"][0]["evidence"],
        json!([{"order": 1, "type": "text", "text": "final version"}]),
        "replaced"
    );
    assert_eq!(mine["tasks"][1]["status"], "pending");

    // Events: submitted twice, completed once, and the quest is not complete.
    while t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    let kinds: Vec<String> = t.ctx.store().activity("demo", 50).await.unwrap().into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "task.submitted").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "task.completed").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "quest.completed").count(), 0, "{kinds:?}");
    // Another student sees nothing of this.
    let (_, other) = t.signed_in_as("other@example.com", Role::Student, "demo").await;
    let theirs: Value = t.get_json("/api/me/quests", &other.access_token).await;
    assert_eq!(theirs, json!({"xp": {"total": 0, "by_pillar": {}, "quests_completed": 0}, "badges": [], "quests": []}));
}

#[tokio::test]
async fn a_quest_completes_once_and_a_new_submission_reactivates_it_without_a_second_announcement() {
    let t = TestStack::new("questdone").await;
    let q = quest(&t, &[("Only task", 40, "stem")], "s2").await;
    let (student, _) = t.signed_in_as("ann@example.com", Role::Student, "demo").await;
    for key in ["a", "b"] {
        submit_text(&t.ctx, &student.id, &q, key, key).await.unwrap();
    }
    let state = t.ctx.store().learning_state(&student.id, Some(&q.id)).await.unwrap().remove(&q.id).unwrap();
    assert_eq!(state.enrollment.as_ref().unwrap().status, "completed");
    while t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    let kinds: Vec<String> = t.ctx.store().activity("demo", 50).await.unwrap().into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "quest.completed").count(), 1, "{kinds:?}");
    assert_eq!(t.ctx.store().xp(&student.id).await.unwrap().total, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_award_xp_once() {
    let t = TestStack::new("submitrace").await;
    let q = Arc::new(quest(&t, &[("Report", 100, "stem")], "s3").await);
    let (student, _) = t.signed_in_as("race@example.com", Role::Student, "demo").await;
    // Eight deliveries of the same submission, and four different submissions, all at once.
    let keys: Vec<String> = (0..8).map(|_| "same".to_string()).chain((0..4).map(|i| format!("other-{i}"))).collect();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let (ctx, q, user) = (t.ctx.clone(), q.clone(), student.id.clone());
            tokio::spawn(async move { submit_text(&ctx, &user, &q, &key, &key).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    let ids: std::collections::BTreeSet<&str> = outcomes.iter().map(|o| o.completion_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one completion for the task: {outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| !o.duplicate).count(),
        5,
        "the same submission is recorded once, the others each once"
    );
    assert_eq!(t.ctx.store().xp(&student.id).await.unwrap().total, 100);
}

#[tokio::test]
async fn badges_are_earned_once_when_their_requirements_are_met() {
    let t = TestStack::new("badges").await;
    let (_, admin) = t.signed_in_as("ba@example.com", Role::OrgAdmin, "demo").await;
    let (_, student_tokens) = t.signed_in_as("bs@example.com", Role::Student, "demo").await;
    let create =
        |token: &str, body: Value| t.http.post(t.url("/api/admin/badges")).bearer_auth(token).json(&body).send();
    let r = create(&admin.access_token, json!({"name": "Scientist", "requirements": {"min_xp": {"stem": 100}}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let scientist: Value = r.json().await.unwrap();
    assert_eq!(
        create(&admin.access_token, json!({"name": "Finisher", "requirements": {"quests_completed": 1}}))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        create(&admin.access_token, json!({"name": "Far", "requirements": {"min_xp": {"art": 500}}}))
            .await
            .unwrap()
            .status(),
        201
    );
    // Bad definitions and the wrong caller.
    let r = create(&admin.access_token, json!({"name": "Nothing", "requirements": {}})).await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_badge".into()));
    let r = create(&student_tokens.access_token, json!({"name": "Mine", "requirements": {"quests_completed": 1}}))
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 403);

    let q = quest(&t, &[("Report", 100, "stem")], "b1").await;
    let student = hub::domain::auth::tokens::verify_access(&t.ctx, &student_tokens.access_token).await.unwrap().sub;
    for key in ["first", "again"] {
        submit_text(&t.ctx, &student, &q, key, key).await.unwrap();
    }
    let me: Value = t.get_json("/api/me/quests", &student_tokens.access_token).await;
    assert_eq!(me["xp"]["quests_completed"], 1);
    let mut earned: Vec<&str> = me["badges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["earned_at"].is_i64())
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    earned.sort();
    assert_eq!(earned, ["Finisher", "Scientist"], "{me}");
    assert!(me["badges"].as_array().unwrap().iter().any(|b| b["id"] == scientist["id"]));
    while t.gateway.poll("events-dispatch", 1).await.unwrap().0 > 0 {}
    let kinds: Vec<String> = t.ctx.store().activity("demo", 50).await.unwrap().into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "badge.earned").count(), 2, "each badge announced once: {kinds:?}");
}

#[tokio::test]
async fn nobody_grades_their_own_work() {
    let t = TestStack::new("owngrade").await;
    let quest = quest(&t, &[("Report", 10, "stem")], "own").await;
    // A teacher's account with work of its own (a course where they were a learner, say).
    let (teacher, session) = t.signed_in_as("ta@example.com", Role::Teacher, "demo").await;
    let recorded = submit_text(&t.ctx, &teacher.id, &quest, "own-1", "my report").await.unwrap();
    let grade = |token: String| {
        let url = t.url(&format!("/api/completions/{}/grade", recorded.completion_id));
        let http = t.http.clone();
        async move { http.put(url).bearer_auth(token).json(&json!({"grade": 100})).send().await.unwrap() }
    };
    assert_eq!(error_code(grade(session.access_token).await).await, (403, "cannot_grade_own_work".into()));
    let (_, colleague) = t.signed_in_as("colleague@example.com", Role::Teacher, "demo").await;
    assert_eq!(grade(colleague.access_token).await.status(), 200);
}
