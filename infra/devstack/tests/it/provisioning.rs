//! Find-or-create-or-update from external identities, with the database enforcing uniqueness.

use std::sync::Arc;

use hub::auth::Role;
use hub::auth::provisioning::{Provisioned, provision_user};

use crate::common::{TestStack, profile};

#[tokio::test]
async fn identity_first_then_verified_email_then_create() {
    let t = TestStack::new("prov").await;
    let (created, how) =
        provision_user(&t.ctx, &profile("spark", "s-1", Some("Ann@Example.com"), Role::Student)).await.unwrap();
    assert_eq!(how, Provisioned::Created);

    // The same identity again: the same user.
    let (again, how) =
        provision_user(&t.ctx, &profile("spark", "s-1", Some("ann@example.com"), Role::Student)).await.unwrap();
    assert_eq!((again.id.as_str(), how), (created.id.as_str(), Provisioned::Existing));

    // Another provider, same verified email (any case): linked to the same account.
    let (linked, how) =
        provision_user(&t.ctx, &profile("clever", "c-9", Some("ANN@example.COM"), Role::Student)).await.unwrap();
    assert_eq!((linked.id.as_str(), how), (created.id.as_str(), Provisioned::Linked));
    let (via_clever, how) = provision_user(&t.ctx, &profile("clever", "c-9", None, Role::Student)).await.unwrap();
    assert_eq!((via_clever.id.as_str(), how), (created.id.as_str(), Provisioned::Existing));

    // An unverified email that belongs to someone else is not merged, and not duplicated.
    let mut unverified = profile("lti:https://lms.example", "sub-1", Some("ann@example.com"), Role::Student);
    unverified.email_verified = false;
    let err = provision_user(&t.ctx, &unverified).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code), (409, "email_in_use"));

    // No email at all (LTI without personal data): a user of its own.
    let (anon, how) =
        provision_user(&t.ctx, &profile("lti:https://lms.example", "sub-2", None, Role::Student)).await.unwrap();
    assert_eq!(how, Provisioned::Created);
    assert_ne!(anon.id, created.id);
    assert_eq!(anon.email, None);
}

#[tokio::test]
async fn changed_names_email_and_role_are_written_back() {
    let t = TestStack::new("provupdate").await;
    let (user, _) =
        provision_user(&t.ctx, &profile("spark", "s-2", Some("old@example.com"), Role::Student)).await.unwrap();
    let mut changed = profile("spark", "s-2", Some("new@example.com"), Role::Teacher);
    changed.given_name = Some("Grace".into());
    let (updated, how) = provision_user(&t.ctx, &changed).await.unwrap();
    assert_eq!(how, Provisioned::Existing);
    assert_eq!(updated.id, user.id);
    assert_eq!(updated.email.as_deref(), Some("new@example.com"));
    assert_eq!(updated.role, Role::Teacher);
    assert_eq!(updated.given_name.as_deref(), Some("Grace"));
    let stored = t.ctx.store().get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(stored, updated);
    // The email moved: the new address finds the user, the old one is free again.
    let store = t.ctx.store();
    assert_eq!(store.user_id_by_email("NEW@example.com").await.unwrap().as_deref(), Some(user.id.as_str()));
    assert_eq!(store.user_id_by_email("old@example.com").await.unwrap(), None);

    // A provider may not make anyone an administrator of any kind.
    let (promoted, _) = provision_user(&t.ctx, &profile("spark", "s-2", None, Role::Admin)).await.unwrap();
    assert_eq!(promoted.role, Role::Teacher);

    // Taking over another account's email is refused; the rest of the update applies.
    provision_user(&t.ctx, &profile("spark", "s-3", Some("taken@example.com"), Role::Student)).await.unwrap();
    let mut grab = profile("spark", "s-2", Some("taken@example.com"), Role::Student);
    grab.family_name = Some("Hopper".into());
    let (kept, _) = provision_user(&t.ctx, &grab).await.unwrap();
    assert_eq!(kept.email.as_deref(), Some("new@example.com"));
    assert_eq!(kept.family_name.as_deref(), Some("Hopper"));
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

    // Two different identities racing for one unverified email: one account, one refusal.
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let mut p = profile("lti:https://x", &format!("sub-{i}"), Some("shared@example.com"), Role::Student);
                p.email_verified = false;
                provision_user(&ctx, &p).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap().map(|(_, how)| how).map_err(|e| e.code));
    }
    assert!(outcomes.contains(&Ok(Provisioned::Created)), "{outcomes:?}");
    assert!(outcomes.contains(&Err("email_in_use")), "{outcomes:?}");
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
