//! CloudWatch metrics of Clever syncs, in the Embedded Metric Format: one JSON line on stdout that
//! CloudWatch Logs turns into metrics, with no API call and no extra latency. template.yaml alarms on
//! `ConsecutiveFailures` and `ConsecutivePartials` (3 or more for any school), `UnmappedFields` and
//! `HealthUnhealthy`, and its Clever dashboard graphs the rest; [`NAMES`] lists every metric, and a
//! test checks that the template names no other.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::store::clever::{CleverSchool, RunCounts};

pub const NAMESPACE: &str = "IntegrationHub/Clever";

/// Every metric emitted here (and `SyncStale`, from the worker log's metric filter).
pub const NAMES: &[&str] = &[
    "SyncSucceeded",
    "SyncFailed",
    "SyncPartial",
    "ConsecutiveFailures",
    "ConsecutivePartials",
    "SyncDurationSeconds",
    "RecordsProcessed",
    "RecordsChanged",
    "UnmappedFields",
    "HealthUnhealthy",
    "HealthDegraded",
    "DistrictsRefused",
    "SyncStale",
];

/// What one school's run did, for its metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunFigures {
    pub counts: RunCounts,
    pub duration_secs: f64,
    pub processed: u64,
    /// Created, updated and deleted records.
    pub changed: u64,
}

/// Emits `SyncSucceeded`/`SyncFailed`/`SyncPartial` (0 or 1), `ConsecutiveFailures`,
/// `ConsecutivePartials`, `SyncDurationSeconds`, `RecordsProcessed` and `RecordsChanged` for one
/// school's run, in all, by district and by school.
pub fn school_synced(school: &CleverSchool, status: &str, figures: RunFigures) {
    let failed = u8::from(status == "Failed");
    let partial = u8::from(status == "Partial");
    let metrics = [
        ("SyncSucceeded", "Count"),
        ("SyncFailed", "Count"),
        ("SyncPartial", "Count"),
        ("ConsecutiveFailures", "Count"),
        ("ConsecutivePartials", "Count"),
        ("SyncDurationSeconds", "Seconds"),
        ("RecordsProcessed", "Count"),
        ("RecordsChanged", "Count"),
    ];
    let values = json!({
        "DistrictId": school.district_id,
        "SchoolId": school.id,
        "SyncStatus": status,
        "SyncSucceeded": 1 - failed,
        "SyncFailed": failed,
        "SyncPartial": partial,
        "ConsecutiveFailures": figures.counts.consecutive_failures,
        "ConsecutivePartials": figures.counts.consecutive_partials,
        "SyncDurationSeconds": figures.duration_secs,
        "RecordsProcessed": figures.processed,
        "RecordsChanged": figures.changed,
    });
    println!("{}", emf(json!([[], ["DistrictId"], ["DistrictId", "SchoolId"]]), &metrics, values));
}

/// Emits `UnmappedFields` (how many distinct fields Clever sent that we do not map) by entity, with
/// the field names as a searchable property (EC-008: the team reviews the schema change).
pub fn unmapped_fields(school: &CleverSchool, fields: &BTreeMap<String, BTreeSet<String>>) {
    for (entity, names) in fields {
        let values = json!({"DistrictId": school.district_id, "SchoolId": school.id, "Entity": entity,
                            "Fields": names, "UnmappedFields": names.len()});
        println!("{}", emf(json!([[], ["Entity"]]), &[("UnmappedFields", "Count")], values));
    }
}

/// Emits the health probe's `HealthUnhealthy` and `HealthDegraded` (0 or 1) and `DistrictsRefused`.
pub fn health_probed(status: &str, districts_refused: usize) {
    let values = json!({
        "HealthStatus": status,
        "HealthUnhealthy": u8::from(status == "Unhealthy"),
        "HealthDegraded": u8::from(status == "Degraded"),
        "DistrictsRefused": districts_refused,
    });
    let metrics = [("HealthUnhealthy", "Count"), ("HealthDegraded", "Count"), ("DistrictsRefused", "Count")];
    println!("{}", emf(json!([[]]), &metrics, values));
}

/// One EMF line: `values` (dimensions, metrics and properties) with the `_aws` block declaring
/// `metrics` under `dimensions`.
fn emf(dimensions: Value, metrics: &[(&str, &str)], mut values: Value) -> Value {
    debug_assert!(metrics.iter().all(|(name, _)| NAMES.contains(name)));
    let timestamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let declared: Vec<Value> = metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect();
    values["_aws"] = json!({
        "Timestamp": timestamp,
        "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": declared}],
    });
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_its_metrics_and_carries_their_values() {
        let line = emf(
            json!([["Entity"]]),
            &[("UnmappedFields", "Count")],
            json!({"Entity": "students", "UnmappedFields": 2}),
        );
        let declared = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], NAMESPACE);
        assert_eq!(declared["Metrics"][0]["Name"], "UnmappedFields");
        assert_eq!(declared["Dimensions"], json!([["Entity"]]));
        assert_eq!(line["UnmappedFields"], 2);
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
}
