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

pub use crate::store::users::{Role, User, email_key};

/// How a person is named to others: their given and family names, else `fallback`.
pub fn display_name(user: &User, fallback: &str) -> String {
    let name = [user.given_name.as_deref(), user.family_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() { fallback.to_string() } else { name }
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
