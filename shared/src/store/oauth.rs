//! The OAuth authorization server's items.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | client | `OAUTH_CLIENT#<client_id>` | `CLIENT` | doc (JSON: name, organization, redirect URIs, scopes, grant types, public), secret_hash, previous_secret_hash + previous_until (rotation), gsi1pk `ORG#<org>#OAUTH_CLIENTS`, gsi1sk `<created_at>#<id>` |
//! | authorization code | `OAUTH_CODE#<sha256 of code>` | `CODE` | client_id, user_id, redirect_uri, redirect_uri_given, scope, challenge, grant_id, expires_at (code), used_at; kept a day past expiry so a reuse is recognised |
//! | grant | `OAUTH_GRANT#<grant_id>` | `GRANT` | client_id, user_id (absent for client credentials), scope, revoked, created_at, last_used_at, expires_at, gsi1pk `USER#<user>#OAUTH#<client>` (user grants) |
//! | refresh token | `OAUTH_REFRESH#<sha256 of token>` | `REFRESH` | grant_id, client_id, scope, used, expires_at |
//! | consent | `USER#<user_id>` | `OAUTH_CONSENT#<client_id>` | scope (JSON list; empty once withdrawn), granted_at, withdrawn_at (grants older than this are dead) |
//!
//! Codes and refresh tokens are consumed by one conditional update each: of two concurrent uses,
//! exactly one wins, and the loser's attempt is recognised as a reuse.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem};

use super::{Item, ItemExt, Store, StoreError, WriteError, condition_held, n, s, update};
use crate::support::crypto::sha256_hex;
use serde::{Deserialize, Serialize};

/// Refresh tokens live this long (as long as a session); a grant is kept a day longer.
pub const REFRESH_TOKEN_TTL: i64 = 30 * 24 * 3600;

/// A registered client, as its organization's admins see it (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub organization_id: String,
    /// Exact URIs the authorization code may be sent to.
    pub redirect_uris: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub grant_types: Vec<String>,
    /// A public client (a browser or mobile app) has no secret and must use PKCE (as every client must).
    pub public: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Client {
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

fn client_pk(id: &str) -> String {
    format!("OAUTH_CLIENT#{id}")
}
fn code_pk(code: &str) -> String {
    format!("OAUTH_CODE#{}", sha256_hex(code.as_bytes()))
}
fn grant_pk(id: &str) -> String {
    format!("OAUTH_GRANT#{id}")
}
fn refresh_pk(token: &str) -> String {
    format!("OAUTH_REFRESH#{}", sha256_hex(token.as_bytes()))
}
fn consent_sk(client_id: &str) -> String {
    format!("OAUTH_CONSENT#{client_id}")
}

/// A client with the hashes of its secrets.
#[derive(Clone, Debug)]
pub struct StoredClient {
    pub client: Client,
    pub secret_hash: Option<String>,
    /// The secret before the last rotation, accepted until `previous_until`.
    pub previous_secret_hash: Option<String>,
    pub previous_until: Option<i64>,
}

/// An authorization code as issued.
#[derive(Clone, Debug)]
pub struct CodeRecord {
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    /// The authorization request named `redirect_uri`: the token request must repeat it.
    pub redirect_uri_given: bool,
    pub scope: Vec<String>,
    pub challenge: String,
    pub grant_id: String,
    pub expires_at: i64,
}

/// A grant: one authorization of one client.
#[derive(Clone, Debug)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: Vec<String>,
    pub revoked: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A refresh token as stored.
#[derive(Clone, Debug)]
pub struct RefreshRecord {
    pub grant_id: String,
    pub client_id: String,
    pub scope: Vec<String>,
    pub used: bool,
    pub expires_at: i64,
}

/// What consuming a code found.
pub enum CodeUse {
    /// First use: the code as issued.
    Fresh(CodeRecord),
    /// Used before: the grant it started (to revoke).
    Reused {
        grant_id: String,
    },
    Unknown,
}

/// What rotating a refresh token found.
pub enum Rotation {
    Rotated,
    /// Used before (or its grant is revoked): the family must go.
    Reused,
}

fn scopes_attr(scope: &[String]) -> AttributeValue {
    s(serde_json::to_string(scope).expect("strings serialize"))
}
fn scopes_of(item: &Item) -> Vec<String> {
    item.str("scope").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default()
}
fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError(e.to_string()))
}

impl Store<'_> {
    /// Creates a client (`seen` = `None`) or replaces it as it was read (`seen` = its `updated_at`):
    /// a concurrent change (a second rotation) loses instead of overwriting a secret shown once.
    pub async fn put_oauth_client(&self, c: &StoredClient, seen: Option<i64>) -> Result<(), WriteError> {
        let mut item = Item::from([
            ("pk".into(), s(client_pk(&c.client.client_id))),
            ("sk".into(), s("CLIENT")),
            ("doc".into(), s(serde_json::to_string(&c.client).expect("clients serialize"))),
            ("gsi1pk".into(), s(format!("ORG#{}#OAUTH_CLIENTS", c.client.organization_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", c.client.created_at, c.client.client_id))),
            ("updated_at".into(), n(c.client.updated_at)),
        ]);
        for (k, v) in [("secret_hash", &c.secret_hash), ("previous_secret_hash", &c.previous_secret_hash)] {
            if let Some(v) = v {
                item.insert(k.into(), s(v));
            }
        }
        if let Some(until) = c.previous_until {
            item.insert("previous_until".into(), n(until));
        }
        self.put_versioned(item, seen).await
    }

    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<StoredClient>, StoreError> {
        Ok(self.get(&client_pk(client_id), "CLIENT").await?.as_ref().and_then(stored_client))
    }

    pub async fn oauth_clients_of(&self, organization_id: &str) -> Result<Vec<Client>, StoreError> {
        self.organization_documents(organization_id, "OAUTH_CLIENTS", true, 100).await
    }

    /// Deletes a client: every token it holds stops working at its next use (each checks its client).
    pub async fn delete_oauth_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(client_pk(client_id)))
            .key("sk", s("CLIENT"))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        condition_held(result)
    }

    /// Stores a new code with the grant it will start (the grant exists from now on, so a reuse of
    /// the code can revoke whatever was issued from it).
    pub async fn put_authorization_code(&self, code: &str, c: &CodeRecord, now: i64) -> Result<(), WriteError> {
        let code_item = Item::from([
            ("pk".into(), s(code_pk(code))),
            ("sk".into(), s("CODE")),
            ("client_id".into(), s(&c.client_id)),
            ("user_id".into(), s(&c.user_id)),
            ("redirect_uri".into(), s(&c.redirect_uri)),
            ("redirect_uri_given".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(c.redirect_uri_given)),
            ("scope".into(), scopes_attr(&c.scope)),
            ("challenge".into(), s(&c.challenge)),
            ("grant_id".into(), s(&c.grant_id)),
            ("code_expires_at".into(), n(c.expires_at)),
            ("expires_at".into(), n(c.expires_at + 24 * 3600)),
        ]);
        let grant = Grant {
            id: c.grant_id.clone(),
            client_id: c.client_id.clone(),
            user_id: Some(c.user_id.clone()),
            scope: c.scope.clone(),
            revoked: false,
            created_at: now,
            last_used_at: None,
        };
        self.transact(vec![self.put_new_item(code_item), self.put_new_item(grant_item(&grant, now))]).await
    }

    /// Uses a code up (one conditional update): the first use gets the record, any later one learns
    /// which grant to revoke.
    pub async fn consume_authorization_code(&self, code: &str, now: i64) -> Result<CodeUse, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(code_pk(code)))
            .key("sk", s("CODE"))
            .update_expression("SET used_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(used_at)")
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(code_record(&item).map_or(CodeUse::Unknown, CodeUse::Fresh))
            }
            Err(e) => {
                condition_held(Err::<(), _>(e))?;
                let existing = self.get(&code_pk(code), "CODE").await?;
                Ok(match existing.as_ref().and_then(|i| i.str("grant_id")) {
                    Some(grant_id) => CodeUse::Reused { grant_id: grant_id.to_string() },
                    None => CodeUse::Unknown,
                })
            }
        }
    }

    /// Starts a grant of a client acting for itself (client credentials).
    pub async fn put_client_grant(&self, grant: &Grant, now: i64) -> Result<(), StoreError> {
        self.put(grant_item(grant, now)).await
    }

    pub async fn grant(&self, grant_id: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.get(&grant_pk(grant_id), "GRANT").await?.as_ref().and_then(grant_from_item))
    }

    /// Revokes a grant: every access and refresh token issued under it stops working.
    pub async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(grant_pk(grant_id)))
            .key("sk", s("GRANT"))
            .update_expression("SET revoked = :yes, revoked_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result).map(|_| ())
    }

    /// The grants a user gave one client (to revoke them all).
    pub async fn user_grants(&self, user_id: &str, client_id: &str) -> Result<Vec<Grant>, StoreError> {
        let items = self.index_items(&format!("USER#{user_id}#OAUTH#{client_id}"), true, Some(500)).await?;
        Ok(items.iter().filter_map(grant_from_item).collect())
    }

    /// Stores a new refresh token of a grant.
    pub async fn put_oauth_refresh_token(&self, token: &str, r: &RefreshRecord) -> Result<(), StoreError> {
        self.put(refresh_item(token, r)).await
    }

    pub async fn oauth_refresh_token(&self, token: &str) -> Result<Option<RefreshRecord>, StoreError> {
        Ok(self.get(&refresh_pk(token), "REFRESH").await?.as_ref().and_then(refresh_from_item))
    }

    /// Uses a refresh token up and stores its successor, if the grant still stands: all at once.
    pub async fn rotate_oauth_refresh_token(
        &self,
        old: &str,
        new: &str,
        next: &RefreshRecord,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let used = build(
            update(self.table, refresh_pk(old), "REFRESH")
                .update_expression("SET used = :yes, used_at = :now")
                .condition_expression("used = :no")
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":now", n(now))
                .build(),
        )?;
        // The grant must stand; it lives as long as its newest refresh token.
        let grant_stands = build(
            update(self.table, grant_pk(&next.grant_id), "GRANT")
                .update_expression("SET last_used_at = :now, expires_at = :exp")
                .condition_expression("revoked = :no")
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":exp", n(next.expires_at + 24 * 3600))
                .build(),
        )?;
        match self
            .transact(vec![
                TransactWriteItem::builder().update(used).build(),
                TransactWriteItem::builder().update(grant_stands).build(),
                self.put_new_item(refresh_item(new, next)),
            ])
            .await
        {
            Ok(()) => Ok(Rotation::Rotated),
            Err(WriteError::Conflict) => Ok(Rotation::Reused),
            Err(WriteError::Store(e)) => Err(e),
        }
    }

    /// Records that a grant was used (for the user's list of authorized apps).
    pub async fn touch_grant(&self, grant_id: &str, now: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(grant_pk(grant_id)))
            .key("sk", s("GRANT"))
            .update_expression("SET last_used_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        // A grant deleted meanwhile (its TTL) is not written back as a stub.
        condition_held(result).map(|_| ())
    }

    /// A user's consent to a client, if any (withdrawn ones have no scopes).
    pub async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError> {
        Ok(self.get(&format!("USER#{user_id}"), &consent_sk(client_id)).await?.map(|i| consent_of(&i)))
    }

    /// Records a consent's scopes (a withdrawal before it keeps its effect on older grants).
    pub async fn put_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(consent_sk(client_id)))
            .update_expression("SET #scope = :scope, granted_at = :now")
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_values(":scope", scopes_attr(scope))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Every consent a user has given and not withdrawn: (client id, scopes, granted at).
    pub async fn consents_of(&self, user_id: &str) -> Result<Vec<(String, Vec<String>, i64)>, StoreError> {
        let items = self.query_all(&format!("USER#{user_id}"), Some("OAUTH_CONSENT#")).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let c = consent_of(i);
                let client = i.str("sk")?.strip_prefix("OAUTH_CONSENT#")?.to_string();
                (!c.scope.is_empty()).then_some((client, c.scope, i.num("granted_at")?))
            })
            .collect())
    }

    /// Withdraws a consent: its scopes go, and every grant the user gave the client until now is dead
    /// (checked on each use, so no grant can be missed). `false`: there was none.
    pub async fn withdraw_consent(&self, user_id: &str, client_id: &str, now: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(consent_sk(client_id)))
            .update_expression("SET #scope = :none, withdrawn_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_values(":none", scopes_attr(&[]))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result)
    }

    /// Whether a grant still stands, in one read: not revoked, its client not deleted, and (a user's
    /// grant) not older than a withdrawal of the user's consent.
    pub async fn grant_stands(
        &self,
        grant_id: &str,
        client_id: &str,
        user_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut keys = vec![(grant_pk(grant_id), "GRANT".to_string()), (client_pk(client_id), "CLIENT".to_string())];
        if let Some(user) = user_id {
            keys.push((format!("USER#{user}"), consent_sk(client_id)));
        }
        let items = self.get_many(keys).await?;
        let find = |sk: &str| items.iter().find(|i| i.str("sk").is_some_and(|k| k == sk));
        let Some(grant) = find("GRANT").and_then(grant_from_item) else { return Ok(false) };
        let client = find("CLIENT").is_some();
        let consent = match user_id {
            None => true,
            Some(_) => find(&consent_sk(client_id))
                .map(consent_of)
                .is_some_and(|c| c.withdrawn_at.is_none_or(|w| grant.created_at > w)),
        };
        Ok(client && consent && !grant.revoked && grant.client_id == client_id && grant.user_id.as_deref() == user_id)
    }
}

/// A user's consent to a client.
#[derive(Clone, Debug, Default)]
pub struct Consent {
    pub scope: Vec<String>,
    pub withdrawn_at: Option<i64>,
}

fn consent_of(i: &Item) -> Consent {
    Consent { scope: scopes_of(i), withdrawn_at: i.num("withdrawn_at") }
}

fn grant_item(g: &Grant, now: i64) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(grant_pk(&g.id))),
        ("sk".into(), s("GRANT")),
        ("client_id".into(), s(&g.client_id)),
        ("scope".into(), scopes_attr(&g.scope)),
        ("revoked".into(), AttributeValue::Bool(g.revoked)),
        ("created_at".into(), n(g.created_at)),
        ("expires_at".into(), n(now + REFRESH_TOKEN_TTL + 24 * 3600)),
    ]);
    if let Some(user) = &g.user_id {
        item.insert("user_id".into(), s(user));
        item.insert("gsi1pk".into(), s(format!("USER#{user}#OAUTH#{}", g.client_id)));
        item.insert("gsi1sk".into(), s(format!("{:012}#{}", g.created_at, g.id)));
    }
    item
}

fn grant_from_item(i: &Item) -> Option<Grant> {
    Some(Grant {
        id: i.str("pk")?.strip_prefix("OAUTH_GRANT#")?.to_string(),
        client_id: i.str("client_id")?.to_string(),
        user_id: i.str("user_id").map(str::to_string),
        scope: scopes_of(i),
        revoked: i.flag("revoked").unwrap_or(true),
        created_at: i.num("created_at").unwrap_or(0),
        last_used_at: i.num("last_used_at"),
    })
}

fn code_record(i: &Item) -> Option<CodeRecord> {
    Some(CodeRecord {
        client_id: i.str("client_id")?.to_string(),
        user_id: i.str("user_id")?.to_string(),
        redirect_uri: i.str("redirect_uri")?.to_string(),
        // Codes of before the attribute (60 s at most) keep their old, implied reading.
        redirect_uri_given: i.flag("redirect_uri_given").unwrap_or(false),
        scope: scopes_of(i),
        challenge: i.str("challenge")?.to_string(),
        grant_id: i.str("grant_id")?.to_string(),
        expires_at: i.num("code_expires_at")?,
    })
}

fn refresh_item(token: &str, r: &RefreshRecord) -> Item {
    Item::from([
        ("pk".into(), s(refresh_pk(token))),
        ("sk".into(), s("REFRESH")),
        ("grant_id".into(), s(&r.grant_id)),
        ("client_id".into(), s(&r.client_id)),
        ("scope".into(), scopes_attr(&r.scope)),
        ("used".into(), AttributeValue::Bool(r.used)),
        ("expires_at".into(), n(r.expires_at)),
    ])
}

fn refresh_from_item(i: &Item) -> Option<RefreshRecord> {
    Some(RefreshRecord {
        grant_id: i.str("grant_id")?.to_string(),
        client_id: i.str("client_id")?.to_string(),
        scope: scopes_of(i),
        used: i.flag("used").unwrap_or(true),
        expires_at: i.num("expires_at")?,
    })
}

fn stored_client(i: &Item) -> Option<StoredClient> {
    Some(StoredClient {
        client: serde_json::from_str(i.str("doc")?).ok()?,
        secret_hash: i.str("secret_hash").map(str::to_string),
        previous_secret_hash: i.str("previous_secret_hash").map(str::to_string),
        previous_until: i.num("previous_until"),
    })
}
