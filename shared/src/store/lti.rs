//! LTI platform registrations (one item each, keyed by the id derived from issuer + client id, listed
//! per organization on `gsi1`).

use super::{Item, ItemExt, Store, StoreError, WriteError, condition_held, n, s};
use crate::lti::registration::Registration;

fn registration_pk(id: &str) -> String {
    format!("LTI#REGISTRATION#{id}")
}

impl Store<'_> {
    /// Stores a registration: a new one (`seen` none: refused when the platform is registered), or
    /// a change of the version read at `seen` (refused when it changed or was deleted meanwhile).
    pub async fn put_lti_registration(&self, r: &Registration, seen: Option<i64>) -> Result<(), WriteError> {
        let item = Item::from([
            ("pk".into(), s(registration_pk(&r.id))),
            ("sk".into(), s("REGISTRATION")),
            ("doc".into(), s(serde_json::to_string(r).expect("registrations serialize"))),
            ("gsi1pk".into(), s(format!("ORG#{}#LTI_REGISTRATIONS", r.organization_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", r.created_at, r.id))),
            ("updated_at".into(), n(r.updated_at)),
        ]);
        self.put_versioned(item, seen).await
    }

    pub async fn lti_registration(&self, id: &str) -> Result<Option<Registration>, StoreError> {
        Ok(self.get(&registration_pk(id), "REGISTRATION").await?.and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }

    pub async fn lti_registrations_of(&self, organization_id: &str) -> Result<Vec<Registration>, StoreError> {
        self.organization_documents(organization_id, "LTI_REGISTRATIONS", true, 100).await
    }

    pub async fn delete_lti_registration(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(registration_pk(id)))
            .key("sk", s("REGISTRATION"))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        condition_held(result)
    }
}

/// What a login left for its launch: the registration it started from and the nonce it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchState {
    pub registration_id: String,
    pub nonce: String,
    pub expires_at: i64,
}

fn state_pk(state: &str) -> String {
    format!("LTI#STATE#{}", crate::crypto::sha256_hex(state.as_bytes()))
}

impl Store<'_> {
    /// Records a login's state (stored hashed) until `expires_at`.
    pub async fn put_lti_state(&self, state: &str, s_: &LaunchState) -> Result<(), StoreError> {
        let item = Item::from([
            ("pk".into(), s(state_pk(state))),
            ("sk".into(), s("STATE")),
            ("registration_id".into(), s(&s_.registration_id)),
            ("nonce".into(), s(&s_.nonce)),
            ("expires_at".into(), n(s_.expires_at)),
        ]);
        self.put(item).await
    }

    /// Takes a login's state: one conditional delete, so a state (and the nonce it carries) launches
    /// once. `None` when unknown or already used.
    pub async fn take_lti_state(&self, state: &str) -> Result<Option<LaunchState>, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table)
            .key("pk", s(state_pk(state)))
            .key("sk", s("STATE"))
            .condition_expression("attribute_exists(pk)")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Some(LaunchState {
                    registration_id: item.str("registration_id").unwrap_or_default().to_string(),
                    nonce: item.str("nonce").unwrap_or_default().to_string(),
                    expires_at: item.num("expires_at").unwrap_or(0),
                }))
            }
            Err(e) => {
                condition_held(Err::<(), _>(e))?;
                Ok(None)
            }
        }
    }
}
