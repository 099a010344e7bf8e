//! Identity: users, roles, external identities, internal tokens and sessions.

pub mod email_sign_in;
pub mod guard;
pub mod provisioning;
pub mod sessions;
pub mod tokens;

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

    #[test]
    fn email_keys_fold_compatibility_forms_and_case() {
        // U+212A KELVIN SIGN is a K; full-width letters are letters; ß folds to ss.
        assert_eq!(email_key("\u{212A}id@example.com"), email_key("kid@example.com"));
        assert_eq!(email_key("\u{FF41}da@example.com"), "ada@example.com");
        assert_eq!(email_key("STRAẞE@example.com"), email_key("strasse@example.com"));
        assert_ne!(email_key("ada@example.com"), email_key("bda@example.com"));
    }

    proptest::proptest! {
        /// A key is its own key: storing and looking up agree for every string.
        #[test]
        fn email_keys_are_stable(email in "\\PC{0,40}") {
            let key = email_key(&email);
            proptest::prop_assert_eq!(email_key(&key), key);
        }
    }
}
