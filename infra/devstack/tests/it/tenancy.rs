//! Tenant and identity boundaries (DESIGN.md §3a): data from an integration lands only in its
//! organization, and a provider login never takes over, moves or re-roles an account it should not.

use hub::domain::auth::Role;
use hub::domain::auth::provisioning::{Provisioned, provision_user};
use serde_json::{Value, json};

use crate::common::{TestStack, error_code, profile};

/// Spark's organization in the local stack (`SparkOrganizationId`).
const SPARK_ORG: &str = "demo";

fn spark_quest(assignment: &str, organization_id: Option<&str>) -> Value {
    let mut quest = json!({"title": "Lab", "pillar": "stem",
        "lms": {"platform": "spark", "course_id": "bio", "assignment_id": assignment},
        "tasks": [{"title": "Report", "xp": 10}]});
    if let Some(org) = organization_id {
        quest["organization_id"] = json!(org);
    }
    quest
}

#[tokio::test]
async fn only_sparks_own_organization_may_map_spark_assignments() {
    let t = TestStack::new("tenantmap").await;
    let create = |token: String, quest: Value| {
        let request = t.http.post(t.url("/api/admin/quests")).bearer_auth(token).json(&quest);
        async move { request.send().await.unwrap() }
    };
    // An org_admin of another organization claims a Spark assignment: refused, nothing mapped.
    let (_, other) = t.signed_in_as("boss@rival.example", Role::OrgAdmin, "rival").await;
    let r = create(other.access_token.clone(), spark_quest("lab-1", None)).await;
    assert_eq!(error_code(r).await, (403, "integration_tenant_mismatch".into()));
    let mapping = hub::domain::learning::LmsMapping {
        platform: "spark".into(),
        course_id: "bio".into(),
        assignment_id: "lab-1".into(),
    };
    assert!(t.ctx.store().quest_by_lms(&mapping).await.unwrap().is_none());
    // A platform admin cannot put one in another organization either.
    let (_, root) = t.signed_in_as("root@hub.example", Role::Admin, "platform").await;
    let r = create(root.access_token.clone(), spark_quest("lab-1", Some("rival"))).await;
    assert_eq!(error_code(r).await, (403, "integration_tenant_mismatch".into()));
    // An unknown platform is not an integration of ours.
    let mut unknown = spark_quest("lab-1", None);
    unknown["lms"]["platform"] = json!("moodle-ish");
    let r = create(other.access_token.clone(), unknown).await;
    assert_eq!(error_code(r).await, (400, "unknown_integration".into()));
    // Spark's own organization may (its org_admin, or a platform admin naming it).
    let (_, own) = t.signed_in_as("admin@spark-school.example", Role::OrgAdmin, SPARK_ORG).await;
    assert_eq!(create(own.access_token, spark_quest("lab-1", None)).await.status(), 201);
    assert_eq!(create(root.access_token, spark_quest("lab-2", Some(SPARK_ORG))).await.status(), 201);
    // Quests without an LMS mapping stay anyone's own business.
    let plain = json!({"title": "Reading", "pillar": "art", "tasks": [{"title": "Read", "xp": 5}]});
    assert_eq!(create(other.access_token, plain).await.status(), 201);
}

#[tokio::test]
async fn a_mapping_left_in_another_organization_receives_no_submission() {
    let t = TestStack::new("tenantlegacy").await;
    // A mapping written before the rule existed, straight into the store.
    let quest = hub::domain::learning::Quest {
        id: "legacy-quest".into(),
        organization_id: "rival".into(),
        title: "Legacy".into(),
        pillar: "stem".into(),
        lms: Some(hub::domain::learning::LmsMapping {
            platform: "spark".into(),
            course_id: "bio".into(),
            assignment_id: "old".into(),
        }),
        tasks: vec![hub::domain::learning::QuestTask {
            id: "t1".into(),
            title: "Old".into(),
            pillar: "stem".into(),
            xp: 10,
            order: 1,
        }],
        created_at: 1,
    };
    t.ctx.store().create_quest(&quest, None).await.unwrap();
    let mut p = profile("spark", "kid-1", Some("kid1@school.example"), Role::Student);
    p.org_id = Some(SPARK_ORG.into());
    let (student, _) = provision_user(&t.ctx, &p).await.unwrap();
    let (_, secret) = t.key("SparkWebhookSecret").await;
    let body = json!({"spark_user_id": "kid-1", "spark_course_id": "bio", "spark_assignment_id": "old",
        "submission_text": "hello", "submitted_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()})
    .to_string();
    let signature = hex::encode(hub::support::crypto::hmac_sha256(secret.as_bytes(), body.as_bytes()));
    let r = t
        .http
        .post(t.url("/spark/webhook/submission"))
        .header("content-type", "application/json")
        .header("x-spark-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "kept as pending, not recorded in the other organization's quest");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "pending");
    let state = t.ctx.store().learning_state(&student.id, None).await.unwrap();
    assert!(state.is_empty(), "no enrollment in the rival quest: {:?}", state.keys());
}

#[tokio::test]
async fn a_provider_login_never_opens_a_privileged_or_foreign_account() {
    let t = TestStack::new("tenantlink").await;
    let store = t.ctx.store();
    let spark = |id: &str, email: &str| {
        let mut p = profile("spark", id, Some(email), Role::Student);
        p.org_id = Some(SPARK_ORG.into());
        p
    };
    // A platform admin, an org_admin of Spark's own organization, a student of another organization.
    let (admin, _) = t.signed_in_as("root@hub.example", Role::Admin, "platform").await;
    let (org_admin, _) = t.signed_in_as("head@spark-school.example", Role::OrgAdmin, SPARK_ORG).await;
    let (foreign, _) = t.signed_in_as("kid@rival.example", Role::Student, "rival").await;
    for (victim, email) in
        [(&admin, "ROOT@hub.example"), (&org_admin, "head@spark-school.example"), (&foreign, "kid@rival.example")]
    {
        let id = format!("attacker-{}", victim.id);
        let (own, how) = provision_user(&t.ctx, &spark(&id, email)).await.unwrap();
        assert_eq!(how, Provisioned::Created, "{email}: an account of its own, as for an unknown address");
        assert_ne!(own.id, victim.id);
        assert_eq!((own.role, own.org_id.as_deref()), (Role::Student, Some(SPARK_ORG)));
        let after = store.get_user(&victim.id).await.unwrap().unwrap();
        assert_eq!(&after, victim, "the account is untouched");
    }
    // The same through Spark SSO: a code for an account of its own; the admin is untouched.
    let (_, secret) = t.key("SparkSsoSecret").await;
    let now = crate::common::now();
    let claims =
        json!({"sub": "spark-root", "email": "root@hub.example", "role": "student", "iat": now, "exp": now + 300});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let browser = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut url = url::Url::parse(&t.url("/spark/sso")).unwrap();
    url.query_pairs_mut().append_pair("token", &token);
    let r = browser.get(url).send().await.unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("?code="), "{location}");
    let own = store.user_id_by_identity("spark", "spark-root").await.unwrap().unwrap();
    assert_ne!(own, admin.id);
    assert_eq!(store.get_user(&admin.id).await.unwrap().unwrap(), admin);
}

#[tokio::test]
async fn identities_linked_before_the_rules_never_open_an_admin_or_move_an_account() {
    let t = TestStack::new("tenantfold").await;
    let store = t.ctx.store();
    let mut spark2 = profile("spark", "s-2", Some("loose@school.example"), Role::Student);
    spark2.org_id = Some(SPARK_ORG.into());
    let (joined, _) = provision_user(&t.ctx, &spark2).await.unwrap();
    assert_eq!(joined.org_id.as_deref(), Some(SPARK_ORG));
    // An identity asserted for another organization is refused, the account unmoved.
    let mut elsewhere = profile("spark", "s-2", Some("loose@school.example"), Role::Student);
    elsewhere.org_id = Some("rival".into());
    let err = provision_user(&t.ctx, &elsewhere).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (403, "account_link_refused"));
    assert_eq!(store.get_user(&joined.id).await.unwrap().unwrap(), joined);

    // An org_admin that an administrator made keeps its role (the identity was linked before).
    let (head, _) = t.signed_in_as("head@spark-school.example", Role::OrgAdmin, SPARK_ORG).await;
    store.link_identity(&head, "spark", "s-head").await.unwrap();
    let mut as_student = profile("spark", "s-head", Some("head@spark-school.example"), Role::Student);
    as_student.org_id = Some(SPARK_ORG.into());
    let (still, _) = provision_user(&t.ctx, &as_student).await.unwrap();
    assert_eq!((still.id.as_str(), still.role), (head.id.as_str(), Role::OrgAdmin));

    // A Spark identity linked to a platform admin before these rules no longer signs in.
    let (root, _) = t.signed_in_as("root@hub.example", Role::Admin, "platform").await;
    store.link_identity(&root, "spark", "s-root").await.unwrap();
    let mut as_root = profile("spark", "s-root", Some("root@hub.example"), Role::Student);
    as_root.org_id = Some(SPARK_ORG.into());
    let err = provision_user(&t.ctx, &as_root).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (403, "account_link_refused"));
    assert_eq!(store.get_user(&root.id).await.unwrap().unwrap(), root);
}

#[tokio::test]
async fn grades_go_back_to_spark_only_from_sparks_organization() {
    let t = TestStack::new("tenantgrade").await;
    let dispatch = t.context_for("events-dispatch", &[]);
    let grade = |org: &str| {
        hub::runtime::events::DomainEvent::new(
            hub::integrations::passback::GRADE_UPDATED,
            Some(org.into()),
            json!({"completion_id": format!("cmp_{org}"), "grade": 90,
                   "lms": {"platform": "spark", "user_id": "kid", "course_id": "bio", "assignment_id": "lab"}}),
            crate::common::now(),
        )
    };
    // A completion of a quest in another organization (a mapping from before the rule): not queued.
    hub::integrations::passback::enqueue(&dispatch, &grade("rival")).await.unwrap();
    assert_eq!(t.gateway.poll("grade-passback", 0).await.unwrap().0, 0);
    // Spark's own organization: queued.
    hub::integrations::passback::enqueue(&dispatch, &grade(SPARK_ORG)).await.unwrap();
    assert_eq!(t.gateway.poll("grade-passback", 1).await.unwrap().0, 1);
}
