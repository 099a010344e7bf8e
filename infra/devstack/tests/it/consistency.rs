//! template.yaml, the function binaries, the `hub` catalogue, the sample events and the dev
//! gateway's routes must agree; this test fails on any drift.

use std::collections::BTreeSet;

use devstack::template::Template;
use serde_json::Value;

fn names_in(dir: &str, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(devstack::repo_root().join(dir))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == ext).then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn template_binaries_catalogue_and_events_agree() {
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    let functions = template.functions().unwrap();
    let in_template: BTreeSet<String> = functions.iter().map(|f| f.binary.clone()).collect();
    let binaries = names_in("functions/src/bin", "rs");
    let catalogue: BTreeSet<String> = hub::functions::ALL.iter().map(|f| f.name.to_string()).collect();
    let events = names_in("events", "json");
    assert_eq!(in_template, binaries, "template.yaml functions vs functions/src/bin");
    assert_eq!(in_template, catalogue, "template.yaml functions vs hub::functions::ALL");
    assert_eq!(in_template, events, "template.yaml functions vs events/*.json");
    assert_eq!(functions.len(), in_template.len(), "two template functions share a binary");

    for f in &functions {
        // Each main runs the catalogue entry of its own name.
        let main =
            std::fs::read_to_string(devstack::repo_root().join(format!("functions/src/bin/{}.rs", f.binary))).unwrap();
        let constant = f.binary.to_uppercase().replace('-', "_");
        assert!(
            main.contains(&format!("hub::functions::{constant})")),
            "{}.rs does not run hub::functions::{constant}",
            f.binary
        );

        // Each sample event is of the function's trigger, for one of its routes.
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(devstack::repo_root().join(format!("events/{}.json", f.binary))).unwrap(),
        )
        .unwrap();
        if !f.routes.is_empty() {
            assert_eq!(event["version"], "2.0", "{}: not an HTTP API v2 event", f.binary);
            let key = event["routeKey"].as_str().unwrap();
            assert!(
                f.routes.iter().any(|r| r.key() == key),
                "{}: sample routeKey {key} is not a template route",
                f.binary
            );
            assert_eq!(event["requestContext"]["http"]["method"], key.split(' ').next().unwrap());
            let pattern: Vec<&str> = key.split(' ').nth(1).unwrap().split('/').collect();
            let raw: Vec<&str> = event["rawPath"].as_str().unwrap().split('/').collect();
            let matches =
                pattern.len() == raw.len() && pattern.iter().zip(&raw).all(|(p, r)| p.starts_with('{') || p == r);
            assert!(matches, "{}: rawPath {} is not a path of {key}", f.binary, event["rawPath"]);
        }
        if !f.queues.is_empty() {
            assert_eq!(event["Records"][0]["eventSource"], "aws:sqs", "{}: not an SQS event", f.binary);
        }
        if !f.schedules.is_empty() {
            assert_eq!(event["detail-type"], "Scheduled Event", "{}: not an EventBridge schedule event", f.binary);
        }
        if !f.rotations.is_empty() {
            assert!(event["Step"].is_string() && event["SecretId"].is_string(), "{}: not a rotation event", f.binary);
        }
        let triggers = usize::from(!f.routes.is_empty())
            + usize::from(!f.queues.is_empty())
            + usize::from(!f.schedules.is_empty())
            + usize::from(!f.rotations.is_empty());
        assert_eq!(triggers, 1, "{}: one kind of trigger per function", f.binary);
    }
}

/// The queues a function's SAM policies of one kind (`SQSPollerPolicy`...) name.
fn policy_queues(function: &serde_norway::Value, policy: &str) -> Vec<String> {
    function["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| devstack::template::ref_target(&p[policy]["QueueName"]))
        .collect()
}

/// The workers whose calls go through `hub::runtime::breaker::admit_job`.
const PACED_WORKERS: [&str; 3] = ["grade-passback", "webhook-deliver", "spark-submission-worker"];

/// API Gateway gives up on an HTTP function after 30 s: each must answer within 29. A queue hides a
/// message longer than its consumer may run, so a running job is never handed to a second worker.
#[test]
fn http_functions_fit_the_gateway_and_queues_outlast_their_consumers() {
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    let resources = template.resources();
    let binaries: Vec<String> = template.functions().unwrap().into_iter().map(|f| f.binary).collect();
    for paced in PACED_WORKERS {
        assert!(binaries.iter().any(|b| b == paced), "no worker {paced} in the template");
    }
    for f in template.functions().unwrap() {
        let timeout = template.timeout(&f);
        if !f.routes.is_empty() {
            assert!(timeout <= 29, "{}: HTTP function with a {timeout} s timeout", f.binary);
        }
        for (queue, _) in &f.queues {
            // Workers hide messages for their backoff: the event source's own role does not allow it.
            let (_, _, function) = resources.iter().find(|(id, _, _)| *id == f.logical_id).expect("the function");
            let pollers = policy_queues(function, "SQSPollerPolicy");
            assert!(
                pollers.contains(queue),
                "{}: no SQSPollerPolicy on {queue} (its messages cannot be hidden for a backoff): {pollers:?}",
                f.binary
            );
            // Workers whose jobs go through a destination's breaker and share put waiting jobs back on
            // their own queue, and take one job per instance (an instance is held by its slowest job).
            if PACED_WORKERS.contains(&f.binary.as_str()) {
                let senders = policy_queues(function, "SQSSendMessagePolicy");
                assert!(senders.contains(queue), "{}: may not put waiting jobs back on {queue}", f.binary);
                assert_eq!(f.queues.iter().map(|(_, batch)| *batch).collect::<Vec<_>>(), [1], "{}: batches", f.binary);
            }
            let (_, _, properties) = resources.iter().find(|(id, _, _)| id == queue).expect("the queue");
            let visibility = properties["VisibilityTimeout"].as_i64().unwrap_or(30);
            assert!(
                visibility > timeout,
                "{}: {queue} hides messages {visibility} s, the function runs {timeout} s",
                f.binary
            );
        }
    }
}

#[tokio::test]
async fn the_gateway_serves_exactly_the_template_routes() {
    let t = crate::common::TestStack::new("routes").await;
    let gateway = devstack::gateway::Gateway::new(&t.template, &t.stack, &t.sdk).unwrap();
    let served: BTreeSet<(String, String)> =
        gateway.routes().into_iter().map(|(r, f)| (r.key(), f.to_string())).collect();
    let declared: BTreeSet<(String, String)> = t
        .template
        .functions()
        .unwrap()
        .into_iter()
        .flat_map(|f| f.routes.iter().map(|r| (r.key(), f.binary.clone())).collect::<Vec<_>>())
        .collect();
    assert_eq!(served, declared);
    // Routes are unique across functions.
    let keys: Vec<String> = declared.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys.len(), keys.iter().collect::<BTreeSet<_>>().len());
}

/// Every route of template.yaml is in the OpenAPI document and nothing else is; docs/openapi.json is
/// the document the code derives (`make openapi` regenerates it).
#[test]
fn the_openapi_document_describes_exactly_the_template_routes_and_is_committed() {
    let text = hub::api::openapi::document_json();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| format!("{} {path}", m.to_uppercase())))
        .collect();
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    let routes: BTreeSet<String> =
        template.functions().unwrap().iter().flat_map(|f| f.routes.iter().map(|r| r.key())).collect();
    assert_eq!(documented, routes, "template.yaml and the OpenAPI document disagree");
    // Operation ids are unique (client generators name methods after them).
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str()))
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "{ids:?}");
    let committed = std::fs::read_to_string(devstack::repo_root().join("docs/openapi.json")).unwrap_or_default();
    assert!(committed == text, "docs/openapi.json is stale: run `make openapi`");
}

/// Every Clever metric the template's alarms, metric filters and dashboard name is one the code emits
/// (`hub::integrations::clever::metrics::NAMES`), and every emitted metric is on the dashboard: a renamed metric would
/// leave an alarm that can never fire.
#[test]
fn clever_alarms_and_dashboard_name_only_metrics_the_code_emits() {
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    let emitted: BTreeSet<&str> = hub::integrations::clever::metrics::NAMES.iter().copied().collect();
    let mut alarmed = BTreeSet::new();
    let mut dashboard_body = None;
    for (id, _, props) in template.resources() {
        if id == "CleverSyncDashboard" {
            // A !Sub: the JSON text, its ${...} placeholders left as they are.
            dashboard_body = match &props["DashboardBody"] {
                serde_norway::Value::Tagged(sub) => sub.value.as_str().map(str::to_string),
                other => other.as_str().map(str::to_string),
            };
        }
        if props["Namespace"].as_str() == Some(hub::integrations::clever::metrics::NAMESPACE) {
            alarmed.insert(props["MetricName"].as_str().unwrap().to_string());
        }
        for t in props["MetricTransformations"].as_sequence().into_iter().flatten() {
            if t["MetricNamespace"].as_str() == Some(hub::integrations::clever::metrics::NAMESPACE) {
                alarmed.insert(t["MetricName"].as_str().unwrap().to_string());
            }
        }
    }
    for name in &alarmed {
        assert!(emitted.contains(name.as_str()), "template.yaml alarms on {name}, which nothing emits");
    }
    for needed in ["ConsecutiveFailures", "ConsecutivePartials", "UnmappedFields", "HealthUnhealthy", "SyncStale"] {
        assert!(alarmed.contains(needed), "no alarm on {needed}");
    }

    let body = dashboard_body.expect("CleverSyncDashboard has a DashboardBody");
    let dashboard: Value = serde_json::from_str(&body).expect("the dashboard body is JSON");
    let mut shown = BTreeSet::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        for line in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            let items = line.as_array().unwrap();
            if let Some(expression) = items.iter().find_map(|i| i["expression"].as_str()) {
                let metric = expression.split("MetricName=\"").nth(1).and_then(|m| m.split('"').next()).unwrap();
                assert!(expression.contains(hub::integrations::clever::metrics::NAMESPACE), "{expression}");
                shown.insert(metric.to_string());
            } else if items[0] == hub::integrations::clever::metrics::NAMESPACE {
                shown.insert(items[1].as_str().unwrap().to_string());
            }
        }
    }
    for name in &shown {
        assert!(emitted.contains(name.as_str()), "the dashboard shows {name}, which nothing emits");
    }
    for name in &emitted {
        assert!(shown.contains(*name), "{name} is emitted but not on the dashboard");
    }
}
