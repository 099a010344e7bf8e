//! A platform registration: how one LMS (issuer + client id) reaches the tool, and the organization
//! its launches belong to (DESIGN.md §3a: every integration belongs to one organization).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub org_id: String,
    /// The platform's `iss` (Canvas cloud: one issuer for every school, hence the client id too).
    pub issuer: String,
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    /// The platform's OIDC authorization endpoint (login redirects go there).
    pub auth_url: String,
    /// The platform's OAuth token endpoint (service tokens by client assertion).
    pub token_url: String,
    pub jwks_url: String,
}
