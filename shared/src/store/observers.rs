//! Observers: invitations, observer → student links and comments.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | invitation | `INVITATION#<id>` | `INVITATION` | student_id, email, relationship, can_view_evidence, can_comment, message, status, code_hash, created_at, valid_until, expires_at (valid_until + 30 days), gsi1pk `USER#<student>#INVITATIONS`, gsi1sk `<created_at>#<id>` |
//! | invitation code | `INVITECODE#<sha256 of code>` | `INVITECODE` | invitation_id, expires_at |
//! | invitee | `INVITEE#<email key>` | `<invitation id>` | student_id, email, valid_until, expires_at (pending invitations of an address) |
//! | link (student side) | `USER#<student>` | `OBSERVER#<observer>` | relationship, can_view_evidence, can_comment, source, observer_email, observer_name, created_at |
//! | link (observer side) | `USER#<observer>` | `OBSERVES#<student>` | relationship, source, created_at |
//! | removed link | `USER#<student>` | `REMOVED_OBSERVER#<observer>` | (an LMS's Mentor launches do not link them again; a new invitation does) |
//! | comment | `COMMENTS#<student>` | `<comment id>` (time-ordered) | observer_id, author_name, relationship, quest_id, task_id, body, hidden, created_at |
//!
//! The student's side of a link is the authority: every observer read checks it with one strongly
//! consistent get, so removing it refuses the next request at once.

use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem};

use super::outbox::DomainEvent;
use super::users::email_key;
use super::{Item, ItemExt, Store, StoreError, WriteError, n, s, update};
use crate::support::crypto::sha256_hex;
use serde::{Deserialize, Serialize};

/// What a student lets one observer do beyond seeing progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Permissions {
    /// Evidence blocks (texts, links, files) are shown; otherwise only progress.
    pub can_view_evidence: bool,
    pub can_comment: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Expired,
    Cancelled,
}

/// An invitation as stored.
#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: String,
    pub student_id: String,
    /// The address it was sent to; only that address may accept it.
    pub email: String,
    pub relationship: String,
    pub permissions: Permissions,
    pub message: Option<String>,
    pub status: InvitationStatus,
    /// SHA-256 of the code of the latest email (none before the email is sent).
    pub code_hash: Option<String>,
    pub created_at: i64,
    pub valid_until: i64,
}

/// An observer → student link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub student_id: String,
    pub observer_id: String,
    pub relationship: String,
    pub permissions: Permissions,
    /// `invitation`, `lti`...
    pub source: String,
    pub observer_email: Option<String>,
    pub observer_name: Option<String>,
    pub created_at: i64,
}

/// A comment on a student's work, stored and returned as plain text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Comment {
    pub id: String,
    pub student_id: String,
    pub observer_id: String,
    /// The observer's name as it was when they commented (or their relationship).
    pub author_name: String,
    pub relationship: String,
    pub quest_id: Option<String>,
    pub task_id: Option<String>,
    /// Plain text: never interpreted as HTML by the hub; render it as text.
    pub body: String,
    /// Hidden by the student: observers no longer see it.
    pub hidden: bool,
    pub created_at: i64,
}

impl Invitation {
    /// The status as the student sees it: a pending invitation past its time has expired.
    pub fn status_at(&self, now: i64) -> InvitationStatus {
        match self.status {
            InvitationStatus::Pending if now >= self.valid_until => InvitationStatus::Expired,
            other => other,
        }
    }
}

/// A pending invitation as its address's index has it.
#[derive(Clone, Debug)]
pub struct Invitee {
    pub invitation_id: String,
    pub student_id: String,
    /// The address as the student typed it.
    pub email: String,
    pub valid_until: i64,
}

/// Invitation records stay listable this long after they lapse.
const INVITATION_RETENTION_SECS: i64 = 30 * 24 * 3600;

fn invitation_pk(id: &str) -> String {
    format!("INVITATION#{id}")
}
fn code_pk(code: &str) -> String {
    format!("INVITECODE#{}", sha256_hex(code.as_bytes()))
}
fn invitee_pk(email: &str) -> String {
    format!("INVITEE#{}", email_key(email))
}
fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}
fn observer_sk(observer_id: &str) -> String {
    format!("OBSERVER#{observer_id}")
}
/// Left by a student's removal of an observer: automatic links (an LMS's Mentor launches) do not come back.
fn removed_sk(observer_id: &str) -> String {
    format!("REMOVED_OBSERVER#{observer_id}")
}
fn observes_sk(student_id: &str) -> String {
    format!("OBSERVES#{student_id}")
}
fn comments_pk(student_id: &str) -> String {
    format!("COMMENTS#{student_id}")
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError(e.to_string()))
}

impl Store<'_> {
    /// Writes a new invitation (without a code yet: the email worker issues one when it sends) and
    /// its invitee item, together.
    pub async fn create_invitation(&self, inv: &Invitation) -> Result<(), WriteError> {
        let mut item = Item::from([
            ("pk".into(), s(invitation_pk(&inv.id))),
            ("sk".into(), s("INVITATION")),
            ("student_id".into(), s(&inv.student_id)),
            ("email".into(), s(&inv.email)),
            ("relationship".into(), s(&inv.relationship)),
            (
                "can_view_evidence".into(),
                aws_sdk_dynamodb::types::AttributeValue::Bool(inv.permissions.can_view_evidence),
            ),
            ("can_comment".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(inv.permissions.can_comment)),
            ("status".into(), s("pending")),
            ("created_at".into(), n(inv.created_at)),
            ("valid_until".into(), n(inv.valid_until)),
            ("expires_at".into(), n(inv.valid_until + INVITATION_RETENTION_SECS)),
            ("gsi1pk".into(), s(format!("USER#{}#INVITATIONS", inv.student_id))),
            ("gsi1sk".into(), s(format!("{:012}#{}", inv.created_at, inv.id))),
        ]);
        if let Some(m) = &inv.message {
            item.insert("message".into(), s(m));
        }
        let invitee = Item::from([
            ("pk".into(), s(invitee_pk(&inv.email))),
            ("sk".into(), s(&inv.id)),
            ("student_id".into(), s(&inv.student_id)),
            ("email".into(), s(&inv.email)),
            ("valid_until".into(), n(inv.valid_until)),
            ("expires_at".into(), n(inv.valid_until)),
        ]);
        self.transact(vec![self.put_new_item(item), self.put_new_item(invitee)]).await
    }

    pub async fn get_invitation(&self, id: &str) -> Result<Option<Invitation>, StoreError> {
        Ok(self.get(&invitation_pk(id), "INVITATION").await?.as_ref().and_then(invitation_from_item))
    }

    /// The invitation a code opens; `None` when the code is unknown or was replaced by a newer one
    /// (each email carries a fresh code). A used or cancelled invitation is returned as such.
    pub async fn invitation_by_code(&self, code: &str) -> Result<Option<Invitation>, StoreError> {
        let Some(pointer) = self.get(&code_pk(code), "INVITECODE").await? else { return Ok(None) };
        let Some(id) = pointer.str("invitation_id") else { return Ok(None) };
        let Some(inv) = self.get_invitation(id).await? else { return Ok(None) };
        let current = inv.code_hash.as_deref().is_some_and(|h| {
            crate::support::crypto::constant_time_eq(h.as_bytes(), sha256_hex(code.as_bytes()).as_bytes())
        });
        Ok(current.then_some(inv))
    }

    /// Gives a pending invitation a new code (the previous one stops working), for the email that
    /// carries it. `Conflict`: the invitation is no longer pending.
    pub async fn issue_invitation_code(&self, inv: &Invitation, code: &str) -> Result<(), WriteError> {
        let hash = sha256_hex(code.as_bytes());
        // Conditional on the code being the one read: of two sends racing, one email carries the code.
        let mut set = update(self.table, invitation_pk(&inv.id), "INVITATION")
            .update_expression("SET code_hash = :h")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":h", s(&hash))
            .expression_attribute_values(":pending", s("pending"));
        set = match &inv.code_hash {
            Some(old) => set
                .condition_expression("#st = :pending AND code_hash = :old")
                .expression_attribute_values(":old", s(old)),
            None => set.condition_expression("#st = :pending AND attribute_not_exists(code_hash)"),
        };
        let set = build(set.build())?;
        let mut items = vec![
            TransactWriteItem::builder().update(set).build(),
            self.put_new_item(Item::from([
                ("pk".into(), s(code_pk(code))),
                ("sk".into(), s("INVITECODE")),
                ("invitation_id".into(), s(&inv.id)),
                ("expires_at".into(), n(inv.valid_until + 3600)),
            ])),
        ];
        if let Some(old) = &inv.code_hash {
            let delete = build(
                Delete::builder()
                    .table_name(self.table)
                    .key("pk", s(format!("INVITECODE#{old}")))
                    .key("sk", s("INVITECODE"))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        self.transact(items).await
    }

    /// A student's invitations, newest first.
    pub async fn invitations_of(&self, student_id: &str, limit: i32) -> Result<Vec<Invitation>, StoreError> {
        let items = self.index_items(&format!("USER#{student_id}#INVITATIONS"), true, Some(limit)).await?;
        Ok(items.iter().filter_map(invitation_from_item).collect())
    }

    /// The invitations still pending for an address (at most 100, newest first by id order).
    pub async fn invitations_for_email(&self, email: &str) -> Result<Vec<Invitee>, StoreError> {
        let (items, _) = self.query_page(&invitee_pk(email), "inv_", None, 100).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                Some(Invitee {
                    invitation_id: i.str("sk")?.to_string(),
                    student_id: i.str("student_id")?.to_string(),
                    email: i.str("email").unwrap_or(email).to_string(),
                    valid_until: i.num("valid_until")?,
                })
            })
            .collect())
    }

    /// Cancels a pending invitation (its invitee item goes with it). `Conflict`: not pending.
    pub async fn cancel_invitation(&self, inv: &Invitation, now: i64) -> Result<(), WriteError> {
        self.transact(vec![self.invitation_closing(inv, "cancelled", now)?, self.invitee_delete(inv)?]).await
    }

    /// Accepts an invitation with its current code, all at once: the invitation closes (of two
    /// concurrent acceptances exactly one wins; the code stays recorded, so a second use is told the
    /// invitation was used), the link is written (a re-invitation of a current observer replaces its
    /// permissions) and `observer.linked` enters the outbox.
    pub async fn accept_invitation(
        &self,
        inv: &Invitation,
        code: &str,
        link: &Link,
        event: &DomainEvent,
        now: i64,
    ) -> Result<(), WriteError> {
        let accepted = build(
            update(self.table, invitation_pk(&inv.id), "INVITATION")
                .update_expression("SET #st = :st, closed_at = :now, accepted_by = :by")
                .condition_expression("#st = :pending AND code_hash = :code")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":st", s("accepted"))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":by", s(&link.observer_id))
                .expression_attribute_values(":pending", s("pending"))
                .expression_attribute_values(":code", s(sha256_hex(code.as_bytes())))
                .build(),
        )?;
        // The student invited them again: an earlier removal no longer stands.
        let forget_removal = build(
            Delete::builder()
                .table_name(self.table)
                .key("pk", s(user_pk(&link.student_id)))
                .key("sk", s(removed_sk(&link.observer_id)))
                .build(),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().update(accepted).build(),
            self.invitee_delete(inv)?,
            self.outbox_put(event),
            TransactWriteItem::builder().delete(forget_removal).build(),
        ];
        items.extend(self.link_puts(link)?);
        self.transact(items).await
    }

    /// Writes a new observer link (both sides), e.g. from an LMS mentor launch; `Conflict` when the
    /// student already has a link to this observer (whose permissions the student may have changed), or
    /// removed one.
    pub async fn put_new_link(&self, link: &Link, event: &DomainEvent) -> Result<(), WriteError> {
        let mut items = self.link_puts(link)?;
        if let Some(TransactWriteItem { put: Some(put), .. }) = items.first_mut() {
            put.condition_expression = Some("attribute_not_exists(pk)".into());
        }
        let never_removed = build(
            ConditionCheck::builder()
                .table_name(self.table)
                .key("pk", s(user_pk(&link.student_id)))
                .key("sk", s(removed_sk(&link.observer_id)))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        items.push(TransactWriteItem::builder().condition_check(never_removed).build());
        items.push(self.outbox_put(event));
        self.transact(items).await
    }

    /// The link of an observer to a student, from the student's side (the authority).
    pub async fn link(&self, student_id: &str, observer_id: &str) -> Result<Option<Link>, StoreError> {
        let item = self.get(&user_pk(student_id), &observer_sk(observer_id)).await?;
        Ok(item.as_ref().and_then(|i| link_from_item(student_id, i)))
    }

    /// A student's observers.
    pub async fn observers_of(&self, student_id: &str) -> Result<Vec<Link>, StoreError> {
        let items = self.query_all(&user_pk(student_id), Some("OBSERVER#")).await?;
        Ok(items.iter().filter_map(|i| link_from_item(student_id, i)).collect())
    }

    /// The students an observer follows, by the observer's side of the links.
    pub async fn students_of(&self, observer_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let items = self.query_all(&user_pk(observer_id), Some("OBSERVES#")).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                Some((i.str("sk")?.strip_prefix("OBSERVES#")?.to_string(), i.str("relationship")?.to_string()))
            })
            .collect())
    }

    /// Changes a link's permissions. `Conflict`: there is no such link.
    pub async fn update_permissions(
        &self,
        student_id: &str,
        observer_id: &str,
        p: Permissions,
    ) -> Result<(), WriteError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(user_pk(student_id)))
            .key("sk", s(observer_sk(observer_id)))
            .update_expression("SET can_view_evidence = :e, can_comment = :c")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":e", aws_sdk_dynamodb::types::AttributeValue::Bool(p.can_view_evidence))
            .expression_attribute_values(":c", aws_sdk_dynamodb::types::AttributeValue::Bool(p.can_comment))
            .send()
            .await;
        match super::condition_held(result)? {
            true => Ok(()),
            false => Err(WriteError::Conflict),
        }
    }

    /// Removes a link, both sides at once, and remembers the removal. `Conflict`: there is no such link.
    pub async fn remove_link(&self, student_id: &str, observer_id: &str) -> Result<(), WriteError> {
        let student_side = build(
            Delete::builder()
                .table_name(self.table)
                .key("pk", s(user_pk(student_id)))
                .key("sk", s(observer_sk(observer_id)))
                .condition_expression("attribute_exists(pk)")
                .build(),
        )?;
        let observer_side = build(
            Delete::builder()
                .table_name(self.table)
                .key("pk", s(user_pk(observer_id)))
                .key("sk", s(observes_sk(student_id)))
                .build(),
        )?;
        let removed = build(
            Put::builder()
                .table_name(self.table)
                .item("pk", s(user_pk(student_id)))
                .item("sk", s(removed_sk(observer_id)))
                .build(),
        )?;
        self.transact(vec![
            TransactWriteItem::builder().delete(student_side).build(),
            TransactWriteItem::builder().delete(observer_side).build(),
            TransactWriteItem::builder().put(removed).build(),
        ])
        .await
    }

    /// Posts a comment with its `observer.comment.posted` event, on condition that the link still
    /// allows commenting (a removal or a permission change wins over a concurrent post).
    pub async fn post_comment(&self, comment: &Comment, event: &DomainEvent) -> Result<(), WriteError> {
        let allowed = build(
            ConditionCheck::builder()
                .table_name(self.table)
                .key("pk", s(user_pk(&comment.student_id)))
                .key("sk", s(observer_sk(&comment.observer_id)))
                .condition_expression("can_comment = :yes")
                .expression_attribute_values(":yes", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
                .build(),
        )?;
        let mut item = Item::from([
            ("pk".into(), s(comments_pk(&comment.student_id))),
            ("sk".into(), s(&comment.id)),
            ("observer_id".into(), s(&comment.observer_id)),
            ("author_name".into(), s(&comment.author_name)),
            ("relationship".into(), s(&comment.relationship)),
            ("body".into(), s(&comment.body)),
            ("hidden".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(false)),
            ("created_at".into(), n(comment.created_at)),
        ]);
        for (k, v) in [("quest_id", &comment.quest_id), ("task_id", &comment.task_id)] {
            if let Some(v) = v {
                item.insert(k.into(), s(v));
            }
        }
        self.transact(vec![
            TransactWriteItem::builder().condition_check(allowed).build(),
            self.put_new_item(item),
            self.outbox_put(event),
        ])
        .await
    }

    /// One page of the comments on a student's work, newest first.
    pub async fn comments_on(
        &self,
        student_id: &str,
        after: Option<&str>,
        limit: i32,
    ) -> Result<(Vec<Comment>, Option<String>), StoreError> {
        let (items, next) = self.query_page(&comments_pk(student_id), "cm_", after, limit).await?;
        Ok((items.iter().filter_map(|i| comment_from_item(student_id, i)).collect(), next))
    }

    /// Hides or shows a comment on the student's work. `false`: no such comment.
    pub async fn set_comment_hidden(
        &self,
        student_id: &str,
        comment_id: &str,
        hidden: bool,
    ) -> Result<Option<Comment>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table)
            .key("pk", s(comments_pk(student_id)))
            .key("sk", s(comment_id))
            .update_expression("SET #hidden = :h")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#hidden", "hidden")
            .expression_attribute_values(":h", aws_sdk_dynamodb::types::AttributeValue::Bool(hidden))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.attributes.as_ref().and_then(|i| comment_from_item(student_id, i))),
            Err(e) => {
                super::condition_held(Err::<(), _>(e))?;
                Ok(None)
            }
        }
    }

    /// Everything under a user's partition (profile, XP, badges, quests, tasks, evidence, links):
    /// what a portfolio is built from, in as few reads as the data's size allows.
    pub async fn user_partition(&self, user_id: &str) -> Result<Vec<Item>, StoreError> {
        self.query_all(&user_pk(user_id), None).await
    }

    fn invitation_closing(&self, inv: &Invitation, status: &str, now: i64) -> Result<TransactWriteItem, StoreError> {
        let closing = build(
            update(self.table, invitation_pk(&inv.id), "INVITATION")
                .update_expression("SET #st = :st, closed_at = :now")
                .condition_expression("#st = :pending")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":st", s(status))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":pending", s("pending"))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(closing).build())
    }

    fn invitee_delete(&self, inv: &Invitation) -> Result<TransactWriteItem, StoreError> {
        let d = build(
            Delete::builder().table_name(self.table).key("pk", s(invitee_pk(&inv.email))).key("sk", s(&inv.id)).build(),
        )?;
        Ok(TransactWriteItem::builder().delete(d).build())
    }

    fn link_puts(&self, link: &Link) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut student_side = Item::from([
            ("pk".into(), s(user_pk(&link.student_id))),
            ("sk".into(), s(observer_sk(&link.observer_id))),
            ("relationship".into(), s(&link.relationship)),
            (
                "can_view_evidence".into(),
                aws_sdk_dynamodb::types::AttributeValue::Bool(link.permissions.can_view_evidence),
            ),
            ("can_comment".into(), aws_sdk_dynamodb::types::AttributeValue::Bool(link.permissions.can_comment)),
            ("source".into(), s(&link.source)),
            ("created_at".into(), n(link.created_at)),
        ]);
        for (k, v) in [("observer_email", &link.observer_email), ("observer_name", &link.observer_name)] {
            if let Some(v) = v {
                student_side.insert(k.into(), s(v));
            }
        }
        let observer_side = Item::from([
            ("pk".into(), s(user_pk(&link.observer_id))),
            ("sk".into(), s(observes_sk(&link.student_id))),
            ("relationship".into(), s(&link.relationship)),
            ("source".into(), s(&link.source)),
            ("created_at".into(), n(link.created_at)),
        ]);
        let put = |item| build(Put::builder().table_name(self.table).set_item(Some(item)).build());
        Ok(vec![
            TransactWriteItem::builder().put(put(student_side)?).build(),
            TransactWriteItem::builder().put(put(observer_side)?).build(),
        ])
    }
}

fn invitation_from_item(i: &Item) -> Option<Invitation> {
    let text = |k: &str| i.str(k).map(str::to_string);
    Some(Invitation {
        id: i.str("pk")?.strip_prefix("INVITATION#")?.to_string(),
        student_id: text("student_id")?,
        email: text("email")?,
        relationship: text("relationship")?,
        permissions: Permissions {
            can_view_evidence: i.flag("can_view_evidence").unwrap_or(false),
            can_comment: i.flag("can_comment").unwrap_or(false),
        },
        message: text("message"),
        status: match i.str("status")? {
            "accepted" => InvitationStatus::Accepted,
            "cancelled" => InvitationStatus::Cancelled,
            _ => InvitationStatus::Pending,
        },
        code_hash: text("code_hash"),
        created_at: i.num("created_at")?,
        valid_until: i.num("valid_until")?,
    })
}

pub(crate) fn link_from_item(student_id: &str, i: &Item) -> Option<Link> {
    Some(Link {
        student_id: student_id.to_string(),
        observer_id: i.str("sk")?.strip_prefix("OBSERVER#")?.to_string(),
        relationship: i.str("relationship")?.to_string(),
        permissions: Permissions {
            can_view_evidence: i.flag("can_view_evidence").unwrap_or(false),
            can_comment: i.flag("can_comment").unwrap_or(false),
        },
        source: i.str("source").unwrap_or("invitation").to_string(),
        observer_email: i.str("observer_email").map(str::to_string),
        observer_name: i.str("observer_name").map(str::to_string),
        created_at: i.num("created_at").unwrap_or(0),
    })
}

fn comment_from_item(student_id: &str, i: &Item) -> Option<Comment> {
    Some(Comment {
        id: i.str("sk")?.to_string(),
        student_id: student_id.to_string(),
        observer_id: i.str("observer_id")?.to_string(),
        author_name: i.str("author_name").unwrap_or_default().to_string(),
        relationship: i.str("relationship").unwrap_or_default().to_string(),
        quest_id: i.str("quest_id").map(str::to_string),
        task_id: i.str("task_id").map(str::to_string),
        body: i.str("body")?.to_string(),
        hidden: i.flag("hidden").unwrap_or(false),
        created_at: i.num("created_at")?,
    })
}
