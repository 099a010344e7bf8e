//! Users and their uniqueness items (email, external identity).
//!
//! An account's address holds at most one key (DESIGN.md §3a): `EMAIL#<key>` when it is proven (email
//! sign-in and invitations find it there), `ORG_EMAIL#<org>#<key>` when its organization's provider
//! asserted it (provider logins of that organization link by it), none when it is kept for display.

use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::outbox::DomainEvent;
use super::{Item, ItemExt, Store, StoreError, WriteError, n, s};
use serde::{Deserialize, Serialize};

/// What a user may do. Ordered by reach only for display; checks name the roles they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Student,
    Observer,
    Teacher,
    OrgAdmin,
    Admin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    /// As given; uniqueness is on its [`email_key`]. Absent for identities that share no email
    /// (for example an LTI launch without personal data).
    pub email: Option<String>,
    /// Whether `email` was proven with our own emailed link; otherwise a provider asserted it, and it
    /// decides nothing outside the account's organization.
    #[serde(default)]
    pub email_proven: bool,
    /// Whether the account holds its address's key: the global one when proven, its organization's
    /// when asserted. An asserted address that folds to another form, or that another account of the
    /// organization holds, is kept for display only and never matched.
    #[serde(skip)]
    pub email_indexed: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub org_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Observer => "observer",
            Role::Teacher => "teacher",
            Role::OrgAdmin => "org_admin",
            Role::Admin => "admin",
        }
    }

    /// Roles that administer something: never granted, removed or linked into by a provider login.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Admin | Role::OrgAdmin)
    }

    pub fn parse(s: &str) -> Option<Role> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

impl User {
    /// Whether `email` is this account's proven address (compared by [`email_key`]): what email
    /// sign-in and observer invitations require.
    pub fn has_proven(&self, email: &str) -> bool {
        self.email_proven && self.email.as_deref().map(email_key) == Some(email_key(email))
    }
}

/// The key under which an email is unique: trimmed, then Unicode `NFKC_Casefold`-like (compatibility
/// decomposition, full case folding, compatibility composition), so `ADA@EXAMPLE.COM`, `ada@example.com`
/// and `ada@exa\u{212A}ple.com` (a Kelvin sign) are one address.
pub fn email_key(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let decomposed: String = email.trim().nfkd().collect();
    let key: String = caseless::default_case_fold_str(&decomposed).nfkc().collect();
    // Compatibility forms may decompose to spaces (U+00A8 is a space and a diaeresis): trim again.
    key.trim().to_string()
}

/// The provider of accounts made by the email door (`auth::email_sign_in::PROVIDER`): before
/// addresses were told apart, only these had proven theirs.
const EMAIL_DOOR: &str = "email";

fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}
fn proven_email_pk(email: &str) -> String {
    format!("EMAIL#{}", email_key(email))
}
fn org_email_pk(org_id: &str, email: &str) -> String {
    format!("ORG_EMAIL#{org_id}#{}", email_key(email))
}
fn identity_pk(provider: &str, external_id: &str) -> String {
    format!("IDENTITY#{provider}#{external_id}")
}
/// Under the user: which providers the account has an identity of (at most one each).
fn provider_sk(provider: &str) -> String {
    format!("IDENTITY#{provider}")
}

/// The key an account's address holds, if any.
fn held_key(u: &User) -> Option<String> {
    let email = u.email.as_deref().filter(|_| u.email_indexed)?;
    match (u.email_proven, &u.org_id) {
        (true, _) => Some(proven_email_pk(email)),
        (false, Some(org)) => Some(org_email_pk(org, email)),
        (false, None) => None,
    }
}

impl Store<'_> {
    /// A user by id. An account written before addresses were proven or asserted is migrated on
    /// this first read ([`Store::migrate_legacy_email`]).
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        for _ in 0..3 {
            let Some(item) = self.get(&user_pk(id), "PROFILE").await? else { return Ok(None) };
            let Some(user) = user_from_item(&item) else { return Ok(None) };
            if item.flag("email_proven").is_some() || user.email.is_none() {
                return Ok(Some(user));
            }
            if let Some(migrated) = self.migrate_legacy_email(user).await? {
                return Ok(Some(migrated));
            }
        }
        Err(StoreError(format!("user {id} kept changing during its email migration")))
    }

    /// Accounts written before DESIGN.md §3a held the global email key for whatever address they had.
    /// An account the email door made proved its address and keeps the key; any other loses it, and
    /// its address becomes asserted and unmatched (nobody can tell whether its provider vouched for
    /// it; a later address that one does claims the organization's key). `None`: the account changed
    /// meanwhile; read it again.
    async fn migrate_legacy_email(&self, user: User) -> Result<Option<User>, StoreError> {
        let proven = self.user_has_identity_of(&user.id, EMAIL_DOOR).await?;
        let migrated =
            User { email_proven: proven, email_indexed: proven, updated_at: user.updated_at + 1, ..user.clone() };
        let put = Put::builder()
            .table_name(self.table)
            .set_item(Some(user_item(&migrated)))
            .condition_expression("updated_at = :seen AND attribute_not_exists(email_proven)")
            .expression_attribute_values(":seen", n(user.updated_at))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        let email = user.email.as_deref().unwrap_or_default();
        if !proven && self.user_id_by_proven_email(email).await?.as_deref() == Some(user.id.as_str()) {
            items.push(self.delete_key_of(&proven_email_pk(email), &user.id)?);
        }
        match self.transact(items).await {
            Ok(()) => {
                tracing::info!(user_id = user.id, proven, "account's address migrated to proven/asserted");
                Ok(Some(migrated))
            }
            Err(WriteError::Conflict) => Ok(None),
            Err(WriteError::Store(e)) => Err(e),
        }
    }

    fn delete_key_of(&self, key_pk: &str, user_id: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(self.table)
            .key("pk", s(key_pk))
            .key("sk", s("EMAIL"))
            .condition_expression("user_id = :uid")
            .expression_attribute_values(":uid", s(user_id))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// The user an external identity belongs to.
    pub async fn user_id_by_identity(&self, provider: &str, external_id: &str) -> Result<Option<String>, StoreError> {
        let item = self.get(&identity_pk(provider, external_id), "IDENTITY").await?;
        Ok(item.and_then(|i| i.str("user_id").map(str::to_string)))
    }

    /// The account whose proven address this is (compared by [`email_key`]).
    pub async fn user_id_by_proven_email(&self, email: &str) -> Result<Option<String>, StoreError> {
        self.key_holder(&proven_email_pk(email)).await
    }

    /// The account of `org_id` whose asserted address this is (and that holds it).
    pub async fn user_id_by_org_email(&self, org_id: &str, email: &str) -> Result<Option<String>, StoreError> {
        self.key_holder(&org_email_pk(org_id, email)).await
    }

    async fn key_holder(&self, key_pk: &str) -> Result<Option<String>, StoreError> {
        let item = self.get(key_pk, "EMAIL").await?;
        Ok(item.and_then(|i| i.str("user_id").map(str::to_string)))
    }

    /// Creates a user with its address's key (if it holds one), first identity and `user.registered`
    /// event: all or none. `Conflict`: the identity or the key is taken.
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
        if let Some(key) = held_key(user) {
            items.push(self.put_new_item(key_item(&key, &user.id)));
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

    /// Writes a changed profile. A change of the address's key moves it in the same transaction;
    /// `Conflict` means the new key belongs to someone else (or the user changed meanwhile).
    pub async fn update_user(&self, old: &User, new: &User) -> Result<(), WriteError> {
        let guard_unchanged = Put::builder()
            .table_name(self.table)
            .set_item(Some(user_item(new)))
            .condition_expression("updated_at = :seen")
            .expression_attribute_values(":seen", n(old.updated_at))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        let mut items = vec![TransactWriteItem::builder().put(guard_unchanged).build()];
        let (old_key, new_key) = (held_key(old), held_key(new));
        if old_key != new_key {
            if let Some(old_key) = &old_key {
                items.push(self.delete_key_of(old_key, &old.id)?);
            }
            if let Some(new_key) = new_key {
                items.push(self.put_new_item(key_item(&new_key, &new.id)));
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
        ("email_proven".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(u.email_proven)),
        ("email_indexed".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(u.email_indexed)),
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
        email_proven: item.flag("email_proven").unwrap_or(false),
        email_indexed: item.flag("email_indexed").unwrap_or(false),
        given_name: text("given_name"),
        family_name: text("family_name"),
        role: Role::parse(item.str("role")?)?,
        org_id: text("org_id"),
        created_at: item.num("created_at")?,
        updated_at: item.num("updated_at")?,
    })
}

fn key_item(key_pk: &str, user_id: &str) -> Item {
    Item::from([("pk".into(), s(key_pk)), ("sk".into(), s("EMAIL")), ("user_id".into(), s(user_id))])
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
