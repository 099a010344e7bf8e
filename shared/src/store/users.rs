//! Users and their uniqueness items (email, external identity).

use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::{Item, ItemExt, Store, StoreError, WriteError, n, s};
use crate::auth::{Role, User, email_key};
use crate::events::DomainEvent;

fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}
fn email_pk(email: &str) -> String {
    format!("EMAIL#{}", email_key(email))
}
fn identity_pk(provider: &str, external_id: &str) -> String {
    format!("IDENTITY#{provider}#{external_id}")
}
/// Under the user: which providers the account has an identity of (at most one each).
fn provider_sk(provider: &str) -> String {
    format!("IDENTITY#{provider}")
}

impl Store<'_> {
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self.get(&user_pk(id), "PROFILE").await?.as_ref().and_then(user_from_item))
    }

    /// The user an external identity belongs to.
    pub async fn user_id_by_identity(&self, provider: &str, external_id: &str) -> Result<Option<String>, StoreError> {
        let item = self.get(&identity_pk(provider, external_id), "IDENTITY").await?;
        Ok(item.and_then(|i| i.str("user_id").map(str::to_string)))
    }

    /// The user owning an email (case-insensitive).
    pub async fn user_id_by_email(&self, email: &str) -> Result<Option<String>, StoreError> {
        let item = self.get(&email_pk(email), "EMAIL").await?;
        Ok(item.and_then(|i| i.str("user_id").map(str::to_string)))
    }

    /// Creates a user with its email, first identity and `user.registered` event: all or none.
    pub async fn create_user(
        &self,
        user: &User,
        provider: &str,
        external_id: &str,
        event: &DomainEvent,
    ) -> Result<(), WriteError> {
        let mut items = vec![
            self.outbox_put(event),
            self.put_new_item(user_item(user)),
            self.put_new_item(identity_item(&user.id, provider, external_id)),
            self.put_new_item(provider_item(&user.id, provider, external_id)),
        ];
        if let Some(email) = &user.email {
            items.push(self.put_new_item(email_item(&user.id, email)));
        }
        self.transact(items).await
    }

    /// Whether the user has an identity of `provider` (of any external id).
    pub async fn user_has_identity_of(&self, user_id: &str, provider: &str) -> Result<bool, StoreError> {
        Ok(self.get(&user_pk(user_id), &provider_sk(provider)).await?.is_some())
    }

    /// Links another external identity to an existing user, as it was read (`Conflict` when it
    /// changed since, when the identity is taken, or when the user has one of this provider already).
    pub async fn link_identity(&self, user: &User, provider: &str, external_id: &str) -> Result<(), WriteError> {
        let unchanged = TransactWriteItem::builder()
            .condition_check(
                aws_sdk_dynamodb::types::ConditionCheck::builder()
                    .table_name(self.table)
                    .key("pk", s(user_pk(&user.id)))
                    .key("sk", s("PROFILE"))
                    .condition_expression("updated_at = :seen")
                    .expression_attribute_values(":seen", n(user.updated_at))
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?,
            )
            .build();
        self.transact(vec![
            unchanged,
            self.put_new_item(identity_item(&user.id, provider, external_id)),
            self.put_new_item(provider_item(&user.id, provider, external_id)),
        ])
        .await
    }

    /// Writes a changed profile. An email change moves the uniqueness item in the same transaction;
    /// `Conflict` means the new email belongs to someone else (or the user changed meanwhile).
    pub async fn update_user(&self, old: &User, new: &User) -> Result<(), WriteError> {
        let guard_unchanged = Put::builder()
            .table_name(self.table)
            .set_item(Some(user_item(new)))
            .condition_expression("updated_at = :seen")
            .expression_attribute_values(":seen", n(old.updated_at))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        let mut items = vec![TransactWriteItem::builder().put(guard_unchanged).build()];
        let old_key = old.email.as_deref().map(email_key);
        let new_key = new.email.as_deref().map(email_key);
        if old_key != new_key {
            if let Some(old_email) = &old.email {
                let delete = Delete::builder()
                    .table_name(self.table)
                    .key("pk", s(email_pk(old_email)))
                    .key("sk", s("EMAIL"))
                    .condition_expression("user_id = :uid")
                    .expression_attribute_values(":uid", s(&old.id))
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?;
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            if let Some(new_email) = &new.email {
                items.push(self.put_new_item(email_item(&new.id, new_email)));
            }
        }
        self.transact(items).await
    }
}

fn user_item(u: &User) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(user_pk(&u.id))),
        ("sk".into(), s("PROFILE")),
        ("id".into(), s(&u.id)),
        ("role".into(), s(u.role.as_str())),
        ("created_at".into(), n(u.created_at)),
        ("updated_at".into(), n(u.updated_at)),
    ]);
    for (key, value) in
        [("email", &u.email), ("given_name", &u.given_name), ("family_name", &u.family_name), ("org_id", &u.org_id)]
    {
        if let Some(v) = value {
            item.insert(key.into(), s(v));
        }
    }
    item
}

fn user_from_item(item: &Item) -> Option<User> {
    let text = |k: &str| item.str(k).map(str::to_string);
    Some(User {
        id: text("id")?,
        email: text("email"),
        given_name: text("given_name"),
        family_name: text("family_name"),
        role: Role::parse(item.str("role")?)?,
        org_id: text("org_id"),
        created_at: item.num("created_at")?,
        updated_at: item.num("updated_at")?,
    })
}

fn email_item(user_id: &str, email: &str) -> Item {
    Item::from([("pk".into(), s(email_pk(email))), ("sk".into(), s("EMAIL")), ("user_id".into(), s(user_id))])
}

fn provider_item(user_id: &str, provider: &str, external_id: &str) -> Item {
    Item::from([
        ("pk".into(), s(user_pk(user_id))),
        ("sk".into(), s(provider_sk(provider))),
        ("external_id".into(), s(external_id)),
    ])
}

fn identity_item(user_id: &str, provider: &str, external_id: &str) -> Item {
    Item::from([
        ("pk".into(), s(identity_pk(provider, external_id))),
        ("sk".into(), s("IDENTITY")),
        ("user_id".into(), s(user_id)),
        ("provider".into(), s(provider)),
        ("external_id".into(), s(external_id)),
    ])
}
