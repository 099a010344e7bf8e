//! Identity: users, roles, external identities, internal tokens and sessions.
//!
//! **Proven and asserted addresses** (DESIGN.md §3a). An address is *proven* only by our own
//! single-use email link (or vouched for by an operator's tool); what a provider (Spark, an LMS, an
//! NRPS roster, Clever) says is *asserted*: a claim of that provider's organization, used only inside
//! it. A proven address holds the global email key (email sign-in and observer invitations use it); an
//! asserted one at most its organization's key (a provider login of that organization may link by
//! it), and none when it changes under Unicode folding (see [`matchable`]). No login changes an
//! account's role or organization: those come from the door that created the account.

pub mod email_sign_in;
pub mod guard;
pub mod login_binding;
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
    /// As given; uniqueness is on its [`email_key`]. Absent for identities that share no email
    /// (for example an LTI launch without personal data).
    pub email: Option<String>,
    /// Whether `email` was proven with our own emailed link; otherwise a provider asserted it, and it
    /// decides nothing outside the account's organization.
    #[serde(default)]
    pub email_proven: bool,
    /// Whether the account holds its address's key: the global one when proven, its organization's
    /// when asserted. An asserted address that folds to another form, or that another account of the
    /// organization holds, is kept for display only and never matched.
    #[serde(skip)]
    pub email_indexed: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub org_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    /// Whether `email` is this account's proven address (compared by [`email_key`]): what email
    /// sign-in and observer invitations require.
    pub fn has_proven(&self, email: &str) -> bool {
        self.email_proven && self.email.as_deref().map(email_key) == Some(email_key(email))
    }
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

/// Whether an asserted address may be matched at all: folding changes nothing in it but ASCII case,
/// which holds exactly for ASCII addresses. A full-width, compatibility or otherwise non-ASCII form
/// (`ｐａｒｅｎｔ@…`, a Kelvin sign) may fold onto another address's key, so a provider asserting it
/// is taken at its word for display only.
pub fn matchable(email: &str) -> bool {
    email.trim().is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_that_fold_to_themselves_are_matchable() {
        assert!(matchable("Ada.Lovelace@Example.com"));
        assert!(!matchable("\u{FF50}arent@example.com"), "full-width");
        assert!(!matchable("\u{212A}id@example.com"), "Kelvin sign");
        assert!(!matchable("stra\u{DF}e@example.com"), "sharp s folds to ss");
    }

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
