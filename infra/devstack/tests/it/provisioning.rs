//! Find-or-create from external identities, with the database enforcing uniqueness, and the rules of
//! proven and asserted addresses (DESIGN.md §3a).

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use hub::domain::auth::Role;
use hub::domain::auth::provisioning::{Provisioned, provision_as_operator, provision_user};

use crate::common::{TestStack, profile};

#[tokio::test]
async fn identity_first_then_the_asserted_address_inside_the_organization_then_create() {
    let t = TestStack::new("prov").await;
    let store = t.ctx.store();
    let (created, how) =
        provision_user(&t.ctx, &profile("spark", "s-1", Some("Ann@Example.com"), Role::Student)).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert!(!created.email_proven, "a provider's address is asserted");

    // The same identity again: the same user.
    let (again, how) =
        provision_user(&t.ctx, &profile("spark", "s-1", Some("ann@example.com"), Role::Student)).await.unwrap();
    assert_eq!((again.id.as_str(), how), (created.id.as_str(), Provisioned::Existing));

    // Another provider of the same organization, same address (any case), same role: linked.
    let (linked, how) =
        provision_user(&t.ctx, &profile("clever", "c-9", Some("ANN@example.COM"), Role::Student)).await.unwrap();
    assert_eq!((linked.id.as_str(), how), (created.id.as_str(), Provisioned::Linked));
    let (via_clever, how) = provision_user(&t.ctx, &profile("clever", "c-9", None, Role::Student)).await.unwrap();
    assert_eq!((via_clever.id.as_str(), how), (created.id.as_str(), Provisioned::Existing));

    // The asserted address holds only its organization's key, never the global one.
    assert_eq!(store.user_id_by_org_email("org-1", "ann@example.com").await.unwrap().as_deref(), Some(&*created.id));
    assert_eq!(store.user_id_by_proven_email("ann@example.com").await.unwrap(), None);

    // The same address asserted in another organization: an account of that organization.
    let mut elsewhere = profile("lti:reg-b", "sub-b", Some("ann@example.com"), Role::Student);
    elsewhere.org_id = Some("org-2".into());
    let (other, how) = provision_user(&t.ctx, &elsewhere).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(other.id, created.id);
    assert_eq!(other.org_id.as_deref(), Some("org-2"));

    // No email at all (LTI without personal data): a user of its own.
    let (anon, how) = provision_user(&t.ctx, &profile("lti:reg-a", "sub-2", None, Role::Student)).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(anon.id, created.id);
    assert_eq!(anon.email, None);
}

#[tokio::test]
async fn names_and_asserted_addresses_follow_the_provider_roles_never_do() {
    let t = TestStack::new("provupdate").await;
    let store = t.ctx.store();
    let (user, _) =
        provision_user(&t.ctx, &profile("spark", "s-2", Some("old@example.com"), Role::Student)).await.unwrap();
    let mut changed = profile("spark", "s-2", Some("new@example.com"), Role::Teacher);
    changed.given_name = Some("Grace".into());
    let (updated, how) = provision_user(&t.ctx, &changed).await.unwrap();
    assert_eq!(how, Provisioned::Existing);
    assert_eq!(updated.id, user.id);
    assert_eq!(updated.email.as_deref(), Some("new@example.com"));
    assert_eq!(updated.role, Role::Student, "no login changes an account's role");
    assert_eq!(updated.given_name.as_deref(), Some("Grace"));
    assert_eq!(store.get_user(&user.id).await.unwrap().unwrap(), updated);
    // The organization's key moved: the new address finds the user, the old one is free again.
    assert_eq!(store.user_id_by_org_email("org-1", "NEW@example.com").await.unwrap().as_deref(), Some(&*user.id));
    assert_eq!(store.user_id_by_org_email("org-1", "old@example.com").await.unwrap(), None);

    // A provider may not make anyone an administrator of any kind.
    let (promoted, _) = provision_user(&t.ctx, &profile("spark", "s-2", None, Role::Admin)).await.unwrap();
    assert_eq!(promoted.role, Role::Student);
    // A new account's role is the one its door asserts (capped below platform admin).
    let (head, _) = provision_user(&t.ctx, &profile("spark", "s-4", None, Role::Admin)).await.unwrap();
    assert_eq!(head.role, Role::OrgAdmin);

    // Another account's address: shown, but the key stays with the account that holds it.
    let (owner, _) =
        provision_user(&t.ctx, &profile("spark", "s-3", Some("taken@example.com"), Role::Student)).await.unwrap();
    let mut grab = profile("spark", "s-2", Some("taken@example.com"), Role::Student);
    grab.family_name = Some("Hopper".into());
    let (kept, _) = provision_user(&t.ctx, &grab).await.unwrap();
    assert_eq!((kept.email.as_deref(), kept.email_indexed), (Some("taken@example.com"), false));
    assert_eq!(kept.family_name.as_deref(), Some("Hopper"));
    assert_eq!(store.user_id_by_org_email("org-1", "taken@example.com").await.unwrap().as_deref(), Some(&*owner.id));
}

#[tokio::test]
async fn a_login_links_only_into_an_unprivileged_account_of_its_organization_with_its_role() {
    let t = TestStack::new("provlink").await;
    let store = t.ctx.store();
    // A teacher made by Spark, and a parent (observer) made by Spark, in organization org-1.
    let (teacher, _) =
        provision_user(&t.ctx, &profile("spark", "t-1", Some("teach@school.example"), Role::Teacher)).await.unwrap();
    let (parent, _) =
        provision_user(&t.ctx, &profile("spark", "p-1", Some("mum@family.example"), Role::Observer)).await.unwrap();
    // An LMS learner asserting either address gets an account of their own; the others are untouched.
    for (victim, email) in [(&teacher, "teach@school.example"), (&parent, "mum@family.example")] {
        let learner = profile("lti:reg-1", &format!("learner-{}", victim.id), Some(email), Role::Student);
        let (own, how) = provision_user(&t.ctx, &learner).await.unwrap();
        assert_eq!(how, Provisioned::Created, "the same answer as for an unknown address");
        assert_ne!(own.id, victim.id);
        assert_eq!((own.role, own.email_indexed), (Role::Student, false));
        assert_eq!(&store.get_user(&victim.id).await.unwrap().unwrap(), victim, "untouched");
        assert!(!store.user_has_identity_of(&victim.id, "lti:reg-1").await.unwrap());
    }
    // The teacher's own LMS identity (Instructor) links.
    let (same, how) =
        provision_user(&t.ctx, &profile("lti:reg-1", "teacher-sub", Some("teach@school.example"), Role::Teacher))
            .await
            .unwrap();
    assert_eq!((same.id.as_str(), how), (teacher.id.as_str(), Provisioned::Linked));

    // Never into a privileged account, even of the same organization and role.
    let (head, _) =
        provision_user(&t.ctx, &profile("spark", "h-1", Some("head@school.example"), Role::OrgAdmin)).await.unwrap();
    let (own, how) =
        provision_user(&t.ctx, &profile("lti:reg-1", "h-sub", Some("head@school.example"), Role::OrgAdmin))
            .await
            .unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(own.id, head.id);

    // An account whose address is proven (made by an operator) is never reached by an assertion.
    let made = provision_as_operator(&t.ctx, &profile("console", "kim", Some("kim@school.example"), Role::Student))
        .await
        .unwrap();
    assert!(made.email_proven);
    let (own, how) = provision_user(&t.ctx, &profile("spark", "kim-spark", Some("kim@school.example"), Role::Student))
        .await
        .unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(own.id, made.id);
    assert_eq!(store.get_user(&made.id).await.unwrap().unwrap(), made, "untouched");

    // A provider whose users type their own address (an LMS not registered as keeping the school's
    // records) neither links by it nor holds its key: a learner typing a classmate's address in Moodle
    // gets an account of their own, and the classmate's later logins never land in it.
    let (classmate, _) =
        provision_user(&t.ctx, &profile("spark", "c-1", Some("cam@school.example"), Role::Student)).await.unwrap();
    let mut typed = profile("lti:moodle", "m-1", Some("cam@school.example"), Role::Student);
    typed.email_is_school_record = false;
    let (own, how) = provision_user(&t.ctx, &typed).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(own.id, classmate.id);
    let mut first = profile("lti:moodle", "m-2", Some("new@school.example"), Role::Student);
    first.email_is_school_record = false;
    let (squatter, _) = provision_user(&t.ctx, &first).await.unwrap();
    assert!(!squatter.email_indexed);
    assert_eq!(store.user_id_by_org_email("org-1", "new@school.example").await.unwrap(), None);
    let (real, how) =
        provision_user(&t.ctx, &profile("spark", "n-1", Some("new@school.example"), Role::Student)).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(real.id, squatter.id);

    // An identity that points at an account of another organization (linked before the rules).
    store.link_identity(&made, "spark-rival", "kim-old").await.unwrap();
    let mut rival = profile("spark-rival", "kim-r", Some("kim@school.example"), Role::Student);
    rival.org_id = Some("rival".into());
    let (theirs, how) = provision_user(&t.ctx, &rival).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(theirs.id, made.id);
    let mut old = profile("spark-rival", "kim-old", Some("kim@school.example"), Role::Student);
    old.org_id = Some("rival".into());
    let err = provision_user(&t.ctx, &old).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (403, "account_link_refused"));
}

#[tokio::test]
async fn an_address_holds_the_organizations_key_only_while_its_provider_vouches_for_it() {
    let t = TestStack::new("provvouch").await;
    let store = t.ctx.store();
    // An LMS registered as keeping the school's records: its address holds the key.
    let (user, _) =
        provision_user(&t.ctx, &profile("lti:reg-1", "s-1", Some("ida@school.example"), Role::Student)).await.unwrap();
    assert!(user.email_indexed);
    // Its registration no longer vouches (a platform admin turned the setting off): the key goes.
    let mut unvouched = profile("lti:reg-1", "s-1", Some("ida@school.example"), Role::Student);
    unvouched.email_is_school_record = false;
    let (after, _) = provision_user(&t.ctx, &unvouched).await.unwrap();
    assert_eq!((after.id.as_str(), after.email_indexed), (user.id.as_str(), false));
    assert_eq!(store.user_id_by_org_email("org-1", "ida@school.example").await.unwrap(), None);
    // Turned on again, the same address, written while it did not vouch, is not claimed after the fact.
    let (again, _) =
        provision_user(&t.ctx, &profile("lti:reg-1", "s-1", Some("ida@school.example"), Role::Student)).await.unwrap();
    assert!(!again.email_indexed);
    // A new address it vouches for is.
    let (moved, _) =
        provision_user(&t.ctx, &profile("lti:reg-1", "s-1", Some("ida.new@school.example"), Role::Student))
            .await
            .unwrap();
    assert!(moved.email_indexed);
    assert_eq!(
        store.user_id_by_org_email("org-1", "ida.new@school.example").await.unwrap().as_deref(),
        Some(&*user.id)
    );
}

#[tokio::test]
async fn addresses_that_change_under_folding_are_kept_for_display_and_never_matched() {
    let t = TestStack::new("provfold").await;
    let store = t.ctx.store();
    let (kid, _) =
        provision_user(&t.ctx, &profile("spark", "s-1", Some("kid@school.example"), Role::Student)).await.unwrap();
    // A Kelvin sign (U+212A) and full-width letters fold onto kid@school.example.
    for (i, look_alike) in ["\u{212A}ID@school.example", "\u{FF4B}id@school.example"].into_iter().enumerate() {
        let (own, how) =
            provision_user(&t.ctx, &profile("lti:reg-1", &format!("sub-{i}"), Some(look_alike), Role::Student))
                .await
                .unwrap();
        assert_eq!(how, Provisioned::Created);
        assert_ne!(own.id, kid.id);
        assert_eq!((own.email.as_deref(), own.email_indexed), (Some(look_alike), false));
    }
    assert_eq!(store.user_id_by_org_email("org-1", "kid@school.example").await.unwrap().as_deref(), Some(&*kid.id));
}

#[tokio::test]
async fn accounts_of_before_the_rules_lose_the_global_key_on_first_use_unless_email_made_them() {
    let t = TestStack::new("provmigrate").await;
    let ddb = aws_sdk_dynamodb::Client::new(&t.sdk);
    let table = &t.ctx.config.table_name;
    let s = |v: &str| AttributeValue::S(v.into());
    // Items as the previous version wrote them: a profile without the proof attributes, the global key.
    let legacy = |id: &str, email: &str, role: &str| {
        let ddb = ddb.clone();
        let (id, email, role) = (id.to_string(), email.to_string(), role.to_string());
        async move {
            ddb.put_item()
                .table_name(table)
                .item("pk", s(&format!("USER#{id}")))
                .item("sk", s("PROFILE"))
                .item("id", s(&id))
                .item("email", s(&email))
                .item("role", s(&role))
                .item("org_id", s("org-1"))
                .item("created_at", AttributeValue::N("1".into()))
                .item("updated_at", AttributeValue::N("1".into()))
                .send()
                .await
                .unwrap();
            ddb.put_item()
                .table_name(table)
                .item("pk", s(&format!("EMAIL#{email}")))
                .item("sk", s("EMAIL"))
                .item("user_id", s(&id))
                .send()
                .await
                .unwrap();
        }
    };
    // One local SES serves every run: addresses unique to this one.
    let domain = format!("migrate-{:08x}.example", rand::random::<u32>());
    let (squat, gran) = (format!("squat@{domain}"), format!("gran@{domain}"));
    legacy("old-lms", &squat, "student").await;
    legacy("old-parent", &gran, "observer").await;
    ddb.put_item()
        .table_name(table)
        .item("pk", s("USER#old-parent"))
        .item("sk", s("IDENTITY#email"))
        .item("external_id", s("old-parent"))
        .send()
        .await
        .unwrap();
    let store = t.ctx.store();

    // Before any use the old key is there; the first read migrates the account.
    assert_eq!(store.user_id_by_proven_email(&squat).await.unwrap().as_deref(), Some("old-lms"));
    let migrated = store.get_user("old-lms").await.unwrap().unwrap();
    assert_eq!((migrated.email_proven, migrated.email_indexed), (false, false));
    assert_eq!(migrated.email.as_deref(), Some(squat.as_str()), "kept for display");
    assert_eq!(store.user_id_by_proven_email(&squat).await.unwrap(), None, "the key is gone");
    assert_eq!(store.get_user("old-lms").await.unwrap().unwrap(), migrated, "once");

    // An account the email door made had proven its address: it keeps the key.
    let parent = store.get_user("old-parent").await.unwrap().unwrap();
    assert!(parent.email_proven && parent.email_indexed);
    assert_eq!(store.user_id_by_proven_email(&gran).await.unwrap().as_deref(), Some("old-parent"));

    // The sign-in link is no longer sent to the address an LMS asserted; it is to the proven one.
    for email in [&squat, &gran] {
        let r = t
            .http
            .post(t.url("/api/auth/email/start"))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert!(t.deliver_emails_to(&squat).await.is_empty());
    assert_eq!(t.deliver_emails_to(&gran).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_logins_create_exactly_one_user() {
    let t = TestStack::new("provrace").await;
    let ctx = t.ctx.clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                provision_user(&ctx, &profile("spark", "race-1", Some("race@example.com"), Role::Student)).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for task in tasks {
        let (user, how) = task.await.unwrap().unwrap();
        created += usize::from(how == Provisioned::Created);
        ids.push(user.id);
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "every login resolved to the same user");

    // Two identities of one provider racing for one address: two accounts (one per identity), and
    // exactly one of them holds the organization's key.
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let p = profile("lti:reg-x", &format!("sub-{i}"), Some("shared@example.com"), Role::Student);
                provision_user(&ctx, &p).await
            })
        })
        .collect();
    let mut users = Vec::new();
    for r in racers {
        users.push(r.await.unwrap().unwrap().0);
    }
    assert_ne!(users[0].id, users[1].id);
    assert_eq!(users.iter().filter(|u| u.email_indexed).count(), 1, "{users:?}");
    let holder = t.ctx.store().user_id_by_org_email("org-1", "shared@example.com").await.unwrap().unwrap();
    assert!(users.iter().any(|u| u.id == holder && u.email_indexed));
}

#[tokio::test]
async fn the_operator_door_reopens_any_account_it_made_and_exists_only_on_the_local_stack() {
    let t = TestStack::new("provoperator").await;
    let root = profile("dev", "root@hub.example", Some("root@hub.example"), Role::Admin);
    let first = provision_as_operator(&t.ctx, &root).await.unwrap();
    assert_eq!((first.role, first.email_proven), (Role::Admin, true));
    // Again (the tour's next session): the same account, though providers may never open an admin's.
    let again = provision_as_operator(&t.ctx, &root).await.unwrap();
    assert_eq!(again, first);
    let err = provision_user(&t.ctx, &root).await.unwrap_err();
    assert_eq!(err.code, "account_link_refused", "a provider's identity pointing at an admin stays refused");
    // A deployed stack has no operator door.
    let deployed = t.context_with("STAGE", "prod");
    let err = provision_as_operator(&deployed, &profile("dev", "x@hub.example", None, Role::Admin)).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (403, "operator_door_closed"));
    assert_eq!(t.ctx.store().user_id_by_identity("dev", "x@hub.example").await.unwrap(), None);
}

#[tokio::test]
async fn invalid_identities_are_refused() {
    let t = TestStack::new("provinvalid").await;
    for (provider, id, email) in
        [("", "x", None), ("spark", "", None), ("spark", "x", Some("not-an-email")), ("a#b", "x", None)]
    {
        let err = provision_user(&t.ctx, &profile(provider, id, email, Role::Student)).await.unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "invalid_identity"));
    }
}
