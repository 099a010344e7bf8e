//! Identity: users, roles, external identities, internal tokens and sessions.

pub mod guard;
pub mod provisioning;
pub mod sessions;
pub mod tokens;

use serde::{Deserialize, Serialize};

/// What a user may do. Ordered by reach only for display; checks name the roles they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Student,
    Observer,
    Teacher,
    OrgAdmin,
    Admin,
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

    pub fn parse(s: &str) -> Option<Role> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// As given; uniqueness is on the lower-cased form. Absent for identities that share no email
    /// (for example an LTI launch without personal data).
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub org_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The key under which an email is unique: trimmed and lower-cased.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_wire_names() {
        for role in [Role::Student, Role::Observer, Role::Teacher, Role::OrgAdmin, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("superuser"), None);
    }

    #[test]
    fn email_keys_ignore_case_and_surrounding_space() {
        assert_eq!(email_key("  Ada@Example.COM "), "ada@example.com");
    }
}
