//! The local stand-in for AWS, driven entirely by template.yaml:
//! [`template`] reads it, [`provision`] creates its resources in DynamoDB Local and moto server,
//! [`gateway`] serves its HTTP routes through the same handler code the Lambda binaries run, and
//! [`runtime_api`] emulates the Lambda Runtime API so the real binaries can be invoked (tests, cold-start
//! benchmark).

pub mod bench;
pub mod bench_clever;
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
