//! Badges: an organization's admins define them by requirements (XP in pillars, quests completed);
//! a student earns each once, in the same transaction as the submission that fulfils it.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::valid_slug;
use crate::domain::auth::guard::Principal;
pub use crate::store::badges::{Badge, Requirements};
use crate::{ApiError, Context, support::crypto};

/// Where a student stands: XP per pillar and quests completed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    pub xp_by_pillar: HashMap<String, i64>,
    pub quests_completed: i64,
}

impl Badge {
    pub fn fulfilled_by(&self, s: &Standing) -> bool {
        s.quests_completed >= self.requirements.quests_completed
            && self.requirements.min_xp.iter().all(|(p, min)| s.xp_by_pillar.get(p).copied().unwrap_or(0) >= *min)
    }
}

/// The badges a student earns by reaching `after`, leaving out those already earned.
pub fn newly_earned<'a>(badges: &'a [Badge], earned: &HashSet<String>, after: &Standing) -> Vec<&'a Badge> {
    badges.iter().filter(|b| !earned.contains(&b.id) && b.fulfilled_by(after)).collect()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBadge {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    pub organization_id: Option<String>,
    pub requirements: Requirements,
}

pub async fn create_badge(ctx: &Context, principal: &Principal, new: NewBadge) -> Result<Badge, ApiError> {
    let organization_id = principal.administered_organization(new.organization_id.as_deref())?;
    let bad = |m: &str| Err(ApiError::bad_request("invalid_badge", m));
    if new.name.trim().is_empty() || new.name.chars().count() > 100 || new.description.chars().count() > 1000 {
        return bad("name must be 1 to 100 characters, description at most 1000");
    }
    let r = &new.requirements;
    if r.min_xp.is_empty() && r.quests_completed <= 0 {
        return bad("a badge needs at least one requirement");
    }
    if r.quests_completed < 0 || r.min_xp.iter().any(|(p, v)| !valid_slug(p) || *v <= 0) || r.min_xp.len() > 20 {
        return bad("requirements need pillar identifiers with positive XP, and a non-negative quest count");
    }
    let badge = Badge {
        id: crypto::new_id(),
        organization_id,
        name: new.name.trim().into(),
        description: new.description,
        requirements: new.requirements,
        created_at: ctx.clock.now(),
    };
    ctx.store().create_badge(&badge).await?;
    tracing::info!(badge_id = badge.id, organization_id = badge.organization_id, "badge created");
    Ok(badge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn badge(id: &str, min_xp: &[(&str, i64)], quests: i64) -> Badge {
        Badge {
            id: id.into(),
            organization_id: "o".into(),
            name: id.into(),
            description: String::new(),
            requirements: Requirements {
                min_xp: min_xp.iter().map(|(p, v)| (p.to_string(), *v)).collect(),
                quests_completed: quests,
            },
            created_at: 0,
        }
    }

    #[test]
    fn a_badge_is_earned_once_when_every_requirement_holds() {
        let badges =
            [badge("stem-100", &[("stem", 100)], 0), badge("two-quests", &[], 2), badge("both", &[("stem", 50)], 1)];
        let standing = Standing { xp_by_pillar: HashMap::from([("stem".into(), 100)]), quests_completed: 1 };
        let ids: Vec<&str> = newly_earned(&badges, &HashSet::new(), &standing).iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["stem-100", "both"]);
        let earned = HashSet::from(["stem-100".to_string()]);
        let ids: Vec<&str> = newly_earned(&badges, &earned, &standing).iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["both"]);
    }
}
