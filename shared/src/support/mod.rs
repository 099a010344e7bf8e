//! Leaf helpers with no knowledge of the hub's data: configuration, cryptography, HTTP requests and
//! answers, HTML pages, the SSRF-guarded outbound client, secrets, logging, errors, JSON integers and text rules.

pub mod config;
pub mod crypto;
pub mod error;
pub mod html;
pub mod http;
pub mod logging;
pub mod numbers;
pub mod outbound;
pub mod secrets;
pub mod text;
