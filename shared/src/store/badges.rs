//! Badge definitions (per organization) and the badges each user has earned.

use std::collections::HashMap;

use super::{Item, ItemExt, Store, StoreError, n, s};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Requirements {
    /// At least this much XP in each named pillar (at most 20 pillars, each a positive amount).
    #[serde(default, deserialize_with = "crate::support::numbers::integer_values")]
    pub min_xp: BTreeMap<String, i64>,
    /// At least this many quests completed.
    #[serde(default, deserialize_with = "crate::support::numbers::integer")]
    #[schema(minimum = 0)]
    pub quests_completed: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Badge {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub requirements: Requirements,
    pub created_at: i64,
}

impl Store<'_> {
    pub async fn create_badge(&self, badge: &Badge) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(self.table)
            .set_item(Some(Item::from([
                ("pk".into(), s(format!("BADGE#{}", badge.id))),
                ("sk".into(), s("BADGE")),
                ("doc".into(), s(serde_json::to_string(badge).expect("badges serialize"))),
                ("gsi1pk".into(), s(format!("ORG#{}#BADGES", badge.organization_id))),
                ("gsi1sk".into(), s(format!("{:012}#{}", badge.created_at, badge.id))),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// An organization's badges, oldest first.
    pub async fn badges_of_organization(&self, organization_id: &str) -> Result<Vec<Badge>, StoreError> {
        self.organization_documents(organization_id, "BADGES", false, 500).await
    }

    /// The badges a user has earned: badge id to the time it was earned.
    pub async fn earned_badges(&self, user_id: &str) -> Result<HashMap<String, i64>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :badge)")
            .expression_attribute_values(":pk", s(format!("USER#{user_id}")))
            .expression_attribute_values(":badge", s("BADGE#"))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| Some((i.str("sk")?.strip_prefix("BADGE#")?.to_string(), i.num("earned_at")?)))
            .collect())
    }

    /// The item that records a badge as earned (written once, in a submission's transaction).
    pub(crate) fn earned_badge_put(
        &self,
        user_id: &str,
        badge: &Badge,
        now: i64,
    ) -> aws_sdk_dynamodb::types::TransactWriteItem {
        self.put_new_item(Item::from([
            ("pk".into(), s(format!("USER#{user_id}"))),
            ("sk".into(), s(format!("BADGE#{}", badge.id))),
            ("name".into(), s(&badge.name)),
            ("earned_at".into(), n(now)),
        ]))
    }
}
