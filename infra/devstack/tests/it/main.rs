//! Integration and end-to-end tests: the real AWS SDK against DynamoDB Local and moto server, real HTTP through the dev
//! gateway, real function binaries through a local Lambda Runtime API. `make test` starts the local
//! AWS stack and sets `AWS_ENDPOINT_URL`; each test provisions its own stack (own resource names).

mod auth_flows;
mod bad_input;
mod batches;
mod binaries;
mod browser;
mod clever_api;
mod clever_client;
mod clever_sync;
mod common;
mod consistency;
mod events;
mod gateway;
mod health;
mod identity;
mod learning;
mod lti_advantage;
mod lti_flow;
mod lti_keys;
mod lti_launch;
mod lti_registrations;
mod oauth;
mod oauth_conformance;
mod observers;
mod outbound;
mod pages;
mod provisioning;
mod rate_limit;
mod spark_sso;
mod spark_webhook;
mod tenancy;
mod throttling;
mod webhooks;
