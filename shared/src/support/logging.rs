//! Structured JSON logs: one line per event, with the request span's fields (function, request id)
//! and whatever domain ids the code records. Secrets are `secrecy` types, which do not print.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Logs to stdout, where Lambda collects them. Later calls (tests) are no-ops.
pub fn init() {
    init_with(std::io::stdout);
}

/// Logs to stderr, for command-line tools whose stdout is their output (the local stack's CLI).
pub fn init_stderr() {
    init_with(std::io::stderr);
}

fn init_with<W: for<'a> MakeWriter<'a> + Send + Sync + 'static>(writer: W) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
        .try_init();
}
