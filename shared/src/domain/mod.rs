//! The core every integration feeds: identity (accounts, sessions, provisioning), learning (quests,
//! submissions, XP, badges, evidence) and the tenancy of integrations. It announces what an
//! integration must know as domain events and knows no integration.

pub mod auth;
pub mod learning;
pub mod tenancy;
