//! Integrations: each connects the hub to one outside party (an LMS, Clever, partner apps, webhook
//! receivers, observers) and belongs to one organization. They stand on the core and may use each
//! other without a cycle; nothing below knows them.

pub mod clever;
pub mod lti;
pub mod oauth;
pub mod observers;
pub mod passback;
pub mod spark;
pub mod webhooks;
