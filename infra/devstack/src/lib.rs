//! The local stand-in for AWS, driven entirely by template.yaml:
//! [`template`] reads it, [`provision`] creates its resources in DynamoDB Local and moto server,
//! [`gateway`] serves its HTTP routes through the same handler code the Lambda binaries run, and
//! [`runtime_api`] emulates the Lambda Runtime API so the real binaries can be invoked (tests, cold-start
//! benchmark).

pub mod bench;
pub mod bench_clever;
pub mod bench_fairness;
pub mod bench_lti;
pub mod contract;
pub mod gateway;
pub mod provision;
pub mod runtime_api;
pub mod template;

/// The repository root (template.yaml, events/, functions/).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The `name=value` of the first cookie a response sets whose name starts with `prefix` (what a
/// browser would send back), e.g. the `__Host-hub_login_…` binding of a one-time login code.
pub fn set_cookie(headers: &http::HeaderMap, prefix: &str) -> Option<String> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(prefix))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
}
