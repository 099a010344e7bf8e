//! Sessions (refresh-token families) and their single-use refresh tokens.

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::{Item, ItemExt, Store, StoreError, WriteError, condition_held, failed_conditions, n, s, update};

/// Why a refresh token could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The token was exchanged before: someone replays it.
    #[error("refresh token already used")]
    Reused,
    /// Unknown to the store (never issued here, or expired and removed).
    #[error("refresh token unknown")]
    Unknown,
    /// Its session was revoked (logout, reuse detection) or has expired.
    #[error("session ended")]
    SessionEnded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn session_pk(id: &str) -> String {
    format!("SESSION#{id}")
}
fn refresh_pk(jti: &str) -> String {
    format!("REFRESH#{jti}")
}

impl Store<'_> {
    /// Opens a session with its first refresh token.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        jti: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let session = Item::from([
            ("pk".into(), s(session_pk(session_id))),
            ("sk".into(), s("SESSION")),
            ("user_id".into(), s(user_id)),
            ("revoked".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(false)),
            ("created_at".into(), n(now)),
            ("expires_at".into(), n(expires_at)),
        ]);
        let items =
            vec![self.put_new_item(session), self.put_new_item(refresh_item(jti, session_id, user_id, expires_at))];
        self.transact(items).await.map_err(|e| match e {
            WriteError::Store(e) => e,
            WriteError::Conflict => StoreError("session id collision".into()),
        })
    }

    /// Consumes `old_jti` and stores `new_jti` in its place, in one transaction: of two concurrent
    /// exchanges of the same token exactly one succeeds.
    pub async fn rotate_refresh_token(
        &self,
        session_id: &str,
        user_id: &str,
        old_jti: &str,
        new_jti: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), RotateError> {
        let consume = update(self.table, refresh_pk(old_jti), "REFRESH")
            .update_expression("SET used = :true, used_at = :now")
            .condition_expression("used = :false AND session_id = :sid")
            .expression_attribute_values(":true", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .expression_attribute_values(":false", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":sid", s(session_id))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        let extend = update(self.table, session_pk(session_id), "SESSION")
            .update_expression("SET expires_at = :exp, refreshed_at = :now")
            .condition_expression("revoked = :false AND expires_at > :now")
            .expression_attribute_values(":false", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(expires_at))
            .build()
            .map_err(|e| StoreError(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(consume).build(),
            TransactWriteItem::builder().update(extend).build(),
            self.put_new_item(refresh_item(new_jti, session_id, user_id, expires_at)),
        ];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match failed_conditions(&e) {
                Some(failed) if failed.first() == Some(&true) => {
                    let old = self.get(&refresh_pk(old_jti), "REFRESH").await?;
                    match old {
                        Some(item) if item.flag("used") == Some(true) => Err(RotateError::Reused),
                        _ => Err(RotateError::Unknown),
                    }
                }
                Some(_) => Err(RotateError::SessionEnded),
                None => Err(StoreError::from_sdk(e).into()),
            },
        }
    }

    /// Ends a session: its refresh tokens stop working. Idempotent.
    pub async fn revoke_session(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(session_pk(session_id)))
            .key("sk", s("SESSION"))
            .update_expression("SET revoked = :true, revoked_at = if_not_exists(revoked_at, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":true", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        condition_held(result).map(drop)
    }

    /// Whether a session is still open at `now`.
    pub async fn session_active(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let item = self.get(&session_pk(session_id), "SESSION").await?;
        Ok(item.is_some_and(|i| i.flag("revoked") == Some(false) && i.num("expires_at").is_some_and(|e| e > now)))
    }
}

fn refresh_item(jti: &str, session_id: &str, user_id: &str, expires_at: i64) -> Item {
    Item::from([
        ("pk".into(), s(refresh_pk(jti))),
        ("sk".into(), s("REFRESH")),
        ("session_id".into(), s(session_id)),
        ("user_id".into(), s(user_id)),
        ("used".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(false)),
        ("expires_at".into(), n(expires_at)),
    ])
}
