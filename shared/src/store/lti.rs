//! LTI items:
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | registration | `LTI#REGISTRATION#<ltr_id>` (a digest of issuer + client id) | `REGISTRATION` | doc, updated_at, gsi1pk `ORG#<org>#LTI_REGISTRATIONS` |
//! | login state | `LTI#STATE#<sha256 of state>` | `STATE` | registration_id, nonce, expires_at |
//! | course (context) | `LTI#CONTEXT#<ltc_id>` (a digest of registration + context id) | `CONTEXT` | doc |
//! | course member | `LTI#CONTEXT#<ltc_id>` | `MEMBER#<user_id>` | course_role (`instructor`, `learner`, `mentor`: as the latest launch into the course said), updated_at |
//! | resource link | `LTI#LINK#<ltl_id>` (a digest of registration + link id) | `LINK` | doc, quest_id, gsi1pk `LTI#<registration>#LINKS` |
//! | grade target | `USER#<user_id>` | `LTI_GRADE#<quest_id>` | doc (registration, line item, the platform's user id) |
//! | deep linking session | `LTI#DEEPLINK#<sha256 of token>` | `DEEPLINK` | doc, expires_at |

use super::{Item, ItemExt, Store, StoreError, WriteError, condition_held, n, s};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// `ltr_` and a digest of issuer + client id.
    pub id: String,
    pub organization_id: String,
    /// What admins call it ("Lincoln High Canvas").
    pub name: String,
    /// The platform's `iss`.
    pub issuer: String,
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    /// The platform's OIDC authorization endpoint (logins are sent there).
    pub auth_url: String,
    /// The platform's OAuth token endpoint (service tokens for grades and rosters).
    pub token_url: String,
    /// The platform's public keys.
    pub jwks_url: String,
    /// Whether this LMS's addresses are the school's records (its users cannot change them): only then
    /// may its launches and rosters match an account by address (provisioning's rules). Off by
    /// default: in many LMSs (Moodle, for one) a learner may type any address into their profile.
    #[serde(default)]
    pub emails_are_school_records: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An LMS course, as its latest launch described it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Course {
    /// `ltc_...`: the registration and the context id.
    pub id: String,
    pub registration_id: String,
    pub organization_id: String,
    /// The platform's context id.
    pub context_id: String,
    pub label: Option<String>,
    pub title: Option<String>,
    pub deployment_id: String,
    /// Names and Role Provisioning Services: the membership URL, when the platform offers it.
    pub memberships_url: Option<String>,
    pub updated_at: i64,
}

/// A resource link (one placement of the tool in a course), as its latest launch described it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceLinkRecord {
    /// `ltl_...`: the registration and the resource link id.
    pub id: String,
    pub registration_id: String,
    /// The registration's organization when the link was launched (a registration deleted and made
    /// again for another organization does not show it the old one's links).
    #[serde(default)]
    pub organization_id: String,
    pub resource_link_id: String,
    pub course_id: Option<String>,
    pub title: Option<String>,
    /// AGS: this link's line item, and whether the platform lets the tool post scores to it.
    pub lineitem_url: Option<String>,
    pub scores_allowed: bool,
    pub updated_at: i64,
}

/// Where one student's scores for one quest go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradeTarget {
    pub registration_id: String,
    pub lineitem_url: String,
    /// The platform's id of the student (`sub`), the score's `userId`.
    pub subject: String,
    pub link_id: String,
}

/// A deep linking request waiting for an instructor's choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepLinkingSession {
    pub registration_id: String,
    pub deployment_id: String,
    pub user_id: String,
    pub organization_id: String,
    pub return_url: String,
    pub accept_multiple: bool,
    /// Echoed to the platform.
    pub data: Option<String>,
    pub expires_at: i64,
}

/// What a person is in one course. It decides what they may do there (deep linking and roster sync
/// for instructors, scores to the gradebook for learners), never their account's role: a teaching
/// assistant is an Instructor in one course and a Learner in another with one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CourseRole {
    Instructor,
    Learner,
    Mentor,
}

impl CourseRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CourseRole::Instructor => "instructor",
            CourseRole::Learner => "learner",
            CourseRole::Mentor => "mentor",
        }
    }

    pub fn parse(s: &str) -> Option<CourseRole> {
        [CourseRole::Instructor, CourseRole::Learner, CourseRole::Mentor].into_iter().find(|r| r.as_str() == s)
    }
}

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
    format!("LTI#STATE#{}", crate::support::crypto::sha256_hex(state.as_bytes()))
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
        Ok(take(self, state_pk(state), "STATE").await?.map(|item| LaunchState {
            registration_id: item.str("registration_id").unwrap_or_default().to_string(),
            nonce: item.str("nonce").unwrap_or_default().to_string(),
            expires_at: item.num("expires_at").unwrap_or(0),
        }))
    }
}

/// Deletes an item if it exists and returns it: one conditional delete, so whatever it stood for
/// (a login's state, a deep linking session) is used once.
async fn take(store: &Store<'_>, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
    let result = store
        .client
        .delete_item()
        .table_name(store.table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .condition_expression("attribute_exists(pk)")
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
        Err(e) => {
            condition_held(Err::<(), _>(e))?;
            Ok(None)
        }
    }
}

fn course_pk(id: &str) -> String {
    format!("LTI#CONTEXT#{id}")
}

fn link_pk(id: &str) -> String {
    format!("LTI#LINK#{id}")
}

fn grade_target_sk(quest_id: &str) -> String {
    format!("LTI_GRADE#{quest_id}")
}

fn deep_linking_pk(token: &str) -> String {
    format!("LTI#DEEPLINK#{}", crate::support::crypto::sha256_hex(token.as_bytes()))
}

impl Store<'_> {
    /// Records a course as its latest launch described it.
    pub async fn put_lti_course(&self, course: &Course) -> Result<(), StoreError> {
        self.put(Item::from([
            ("pk".into(), s(course_pk(&course.id))),
            ("sk".into(), s("CONTEXT")),
            ("doc".into(), s(serde_json::to_string(course).expect("courses serialize"))),
        ]))
        .await
    }

    /// Records a user's role in a course, as their latest launch into it said.
    pub async fn put_lti_course_role(
        &self,
        course_id: &str,
        user_id: &str,
        role: CourseRole,
        now: i64,
    ) -> Result<(), StoreError> {
        self.put(Item::from([
            ("pk".into(), s(course_pk(course_id))),
            ("sk".into(), s(format!("MEMBER#{user_id}"))),
            ("course_role".into(), s(role.as_str())),
            ("updated_at".into(), n(now)),
        ]))
        .await
    }

    /// A user's role in a course, if they ever launched into it.
    pub async fn lti_course_role(&self, course_id: &str, user_id: &str) -> Result<Option<CourseRole>, StoreError> {
        let item = self.get(&course_pk(course_id), &format!("MEMBER#{user_id}")).await?;
        Ok(item.and_then(|i| CourseRole::parse(i.str("course_role")?)))
    }

    pub async fn lti_course(&self, id: &str) -> Result<Option<Course>, StoreError> {
        Ok(self.get(&course_pk(id), "CONTEXT").await?.and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }

    /// Records a resource link as its latest launch described it. Its quest is kept once set (by an
    /// admin or an earlier launch); `quest_id` only fills an empty one. Answers the link's quest.
    pub async fn put_lti_link(
        &self,
        link: &ResourceLinkRecord,
        quest_id: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(link_pk(&link.id)))
            .key("sk", s("LINK"))
            .expression_attribute_values(":doc", s(serde_json::to_string(link).expect("links serialize")))
            .expression_attribute_values(":g", s(format!("LTI#{}#LINKS", link.registration_id)))
            .expression_attribute_values(":gs", s(format!("{:012}#{}", link.updated_at, link.id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        let mut expression = "SET doc = :doc, gsi1pk = :g, gsi1sk = if_not_exists(gsi1sk, :gs)".to_string();
        if let Some(quest_id) = quest_id {
            expression.push_str(", quest_id = if_not_exists(quest_id, :q)");
            update = update.expression_attribute_values(":q", s(quest_id));
        }
        let out = update.update_expression(expression).send().await.map_err(StoreError::from_sdk)?;
        Ok(out.attributes.as_ref().and_then(|i| i.str("quest_id")).map(str::to_string))
    }

    /// Points a known resource link at a quest (an admin's choice). `false` when the link is unknown.
    pub async fn assign_lti_link(&self, link_id: &str, quest_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(link_pk(link_id)))
            .key("sk", s("LINK"))
            .update_expression("SET quest_id = :q")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":q", s(quest_id))
            .send()
            .await;
        condition_held(result)
    }

    /// A registration's resource links (those launched at least once), oldest first, with their quests.
    pub async fn lti_links_of(
        &self,
        registration_id: &str,
    ) -> Result<Vec<(ResourceLinkRecord, Option<String>)>, StoreError> {
        let items = self.index_items(&format!("LTI#{registration_id}#LINKS"), false, Some(500)).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let link = serde_json::from_str(i.str("doc")?).ok()?;
                Some((link, i.str("quest_id").map(str::to_string)))
            })
            .collect())
    }

    pub async fn lti_link(&self, link_id: &str) -> Result<Option<(ResourceLinkRecord, Option<String>)>, StoreError> {
        Ok(self.get(&link_pk(link_id), "LINK").await?.and_then(|i| {
            let link = serde_json::from_str(i.str("doc")?).ok()?;
            Some((link, i.str("quest_id").map(str::to_string)))
        }))
    }

    /// Where a student's scores for a quest go (their latest launch of it).
    pub async fn put_lti_grade_target(
        &self,
        user_id: &str,
        quest_id: &str,
        target: &GradeTarget,
    ) -> Result<(), StoreError> {
        self.put(Item::from([
            ("pk".into(), s(format!("USER#{user_id}"))),
            ("sk".into(), s(grade_target_sk(quest_id))),
            ("doc".into(), s(serde_json::to_string(target).expect("targets serialize"))),
        ]))
        .await
    }

    pub async fn lti_grade_target(&self, user_id: &str, quest_id: &str) -> Result<Option<GradeTarget>, StoreError> {
        Ok(self
            .get(&format!("USER#{user_id}"), &grade_target_sk(quest_id))
            .await?
            .and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }

    /// Records a deep linking request until an instructor chooses (or `expires_at`).
    pub async fn put_lti_deep_linking(&self, token: &str, session: &DeepLinkingSession) -> Result<(), StoreError> {
        self.put(Item::from([
            ("pk".into(), s(deep_linking_pk(token))),
            ("sk".into(), s("DEEPLINK")),
            ("doc".into(), s(serde_json::to_string(session).expect("sessions serialize"))),
            ("expires_at".into(), n(session.expires_at)),
        ]))
        .await
    }

    /// A deep linking session, left in place.
    pub async fn lti_deep_linking(&self, token: &str) -> Result<Option<DeepLinkingSession>, StoreError> {
        Ok(self.get(&deep_linking_pk(token), "DEEPLINK").await?.and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }

    /// Takes a deep linking session (one answer per request). `None` when unknown or used.
    pub async fn take_lti_deep_linking(&self, token: &str) -> Result<Option<DeepLinkingSession>, StoreError> {
        Ok(take(self, deep_linking_pk(token), "DEEPLINK").await?.and_then(|i| serde_json::from_str(i.str("doc")?).ok()))
    }
}
