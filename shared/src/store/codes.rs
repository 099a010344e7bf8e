//! Single-use things: one-time authorization codes, used-token markers, LMS sessions.
//!
//! Codes are stored under the SHA-256 of their value (a leaked table dump yields no usable code) and
//! consumed by one conditional delete, so of two concurrent exchanges exactly one gets the code.

use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem};

use super::{Item, ItemExt, Store, StoreError, WriteError, condition_held, n, s};
use crate::support::crypto::sha256_hex;

/// What a one-time code stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeGrant {
    pub user_id: String,
    /// Which flow issued it (`spark_sso`, ...); a code is only accepted by its own flow.
    pub purpose: String,
    pub expires_at: i64,
    /// The address an email sign-in link was sent to (it must still be the account's).
    pub email: Option<String>,
    /// Where a browser goes once signed in (a path of ours).
    pub next: Option<String>,
    /// SHA-256 of a secret of the browser that started the flow (`auth::login_binding`).
    pub browser: Option<String>,
}

fn binding_pk(browser: &str) -> String {
    format!("BINDING#{browser}")
}

fn code_pk(code: &str) -> String {
    format!("CODE#{}", sha256_hex(code.as_bytes()))
}

impl Store<'_> {
    /// Whether a single-use token was used before (the write in [`Store::record_sso`] still decides).
    pub async fn token_used(&self, token_fingerprint: &str) -> Result<bool, StoreError> {
        Ok(self.get(&format!("USED#{token_fingerprint}"), "USED").await?.is_some())
    }

    /// Records a successful SSO: marks the incoming token used (until it expires), opens the LMS
    /// session and stores the one-time code (and its browser binding), all or nothing. `Conflict`: the
    /// token was used before.
    pub async fn record_sso(
        &self,
        token_fingerprint: &str,
        token_expires_at: i64,
        code: &str,
        grant: &CodeGrant,
        lms_session: Item,
    ) -> Result<(), WriteError> {
        let used = Item::from([
            ("pk".into(), s(format!("USED#{token_fingerprint}"))),
            ("sk".into(), s("USED")),
            ("expires_at".into(), n(token_expires_at + 3600)),
        ]);
        let mut items = vec![self.put_new_item(used), self.put_new_item(lms_session)];
        items.extend(self.login_code_items(code, grant));
        self.transact(items).await
    }

    /// Stores a new one-time code.
    pub async fn put_code(&self, code: &str, grant: &CodeGrant) -> Result<(), StoreError> {
        self.put_if_new(code_item(code, grant)).await.map(|_| ())
    }

    /// Stores a new one-time login code handed to a frontend, with the record that its browser
    /// binding was issued here, all or nothing.
    pub async fn put_login_code(&self, code: &str, grant: &CodeGrant) -> Result<(), WriteError> {
        self.transact(self.login_code_items(code, grant)).await
    }

    /// A login code's item, and the record that its browser binding was issued here (so that a
    /// token request carrying a binding the hub never issued is counted by its address, not by that
    /// binding).
    fn login_code_items(&self, code: &str, grant: &CodeGrant) -> Vec<TransactWriteItem> {
        let mut items = vec![self.put_new_item(code_item(code, grant))];
        if let Some(browser) = &grant.browser {
            // One browser may hold several codes (two launches in a row): the latest sets the expiry.
            items.push(self.put_item(Item::from([
                ("pk".into(), s(binding_pk(browser))),
                ("sk".into(), s("BINDING")),
                ("expires_at".into(), n(grant.expires_at + 3600)),
            ])));
        }
        items
    }

    /// Whether the hub issued this browser binding (its digest) and it has not expired.
    pub async fn binding_issued(&self, browser: &str, now: i64) -> Result<bool, StoreError> {
        let item = self.get(&binding_pk(browser), "BINDING").await?;
        Ok(item.and_then(|i| i.num("expires_at")).is_some_and(|at| at > now))
    }

    /// Reads a code of one flow without using it (to show what a link is for before it is used).
    pub async fn peek_code(&self, code: &str, purpose: &str) -> Result<Option<CodeGrant>, StoreError> {
        let item = self.get(&code_pk(code), "CODE").await?;
        Ok(item.filter(|i| i.str("purpose") == Some(purpose)).as_ref().and_then(grant_from_item))
    }

    /// Takes a code of one flow (`purpose`) out of the store; with `browser`, only when it was bound
    /// to that browser's digest. `None`: unknown, of another flow or browser (which keep it), or
    /// already used. The caller checks expiry (TTL deletion is lazy).
    pub async fn consume_code(
        &self,
        code: &str,
        purpose: &str,
        browser: Option<&str>,
    ) -> Result<Option<CodeGrant>, StoreError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(code_pk(code)))
            .key("sk", s("CODE"))
            .expression_attribute_values(":purpose", s(purpose))
            .return_values(ReturnValue::AllOld);
        delete = match browser {
            Some(digest) => delete
                .condition_expression("purpose = :purpose AND browser = :browser")
                .expression_attribute_values(":browser", s(digest)),
            None => delete.condition_expression("purpose = :purpose"),
        };
        let result = delete.send().await;
        let old = match result {
            Ok(out) => out.attributes,
            Err(e) => {
                condition_held(Err::<(), _>(e))?;
                return Ok(None);
            }
        };
        Ok(old.as_ref().and_then(grant_from_item))
    }
}

fn grant_from_item(item: &Item) -> Option<CodeGrant> {
    Some(CodeGrant {
        user_id: item.str("user_id")?.to_string(),
        purpose: item.str("purpose")?.to_string(),
        expires_at: item.num("expires_at")?,
        email: item.str("email").map(str::to_string),
        next: item.str("next").map(str::to_string),
        browser: item.str("browser").map(str::to_string),
    })
}

fn code_item(code: &str, grant: &CodeGrant) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(code_pk(code))),
        ("sk".into(), s("CODE")),
        ("user_id".into(), s(&grant.user_id)),
        ("purpose".into(), s(&grant.purpose)),
        ("expires_at".into(), n(grant.expires_at)),
    ]);
    for (k, v) in [("email", &grant.email), ("next", &grant.next), ("browser", &grant.browser)] {
        if let Some(v) = v {
            item.insert(k.into(), s(v));
        }
    }
    item
}
