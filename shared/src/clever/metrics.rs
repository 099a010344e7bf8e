//! CloudWatch metrics of school syncs, in the Embedded Metric Format: one JSON line on stdout that
//! CloudWatch Logs turns into metrics, with no API call and no extra latency. template.yaml alarms on
//! `ConsecutiveFailures` and `ConsecutivePartials` (3 or more for any school).

use serde_json::json;

use crate::store::clever::{CleverSchool, RunCounts};

pub const NAMESPACE: &str = "IntegrationHub/Clever";

/// Emits `SyncSucceeded`/`SyncFailed`/`SyncPartial` (0 or 1), `ConsecutiveFailures` and
/// `ConsecutivePartials` for one school's run, by district and by school.
pub fn school_synced(school: &CleverSchool, status: &str, counts: RunCounts) {
    let failed = u8::from(status == "Failed");
    let partial = u8::from(status == "Partial");
    let line = json!({
        "_aws": {
            "Timestamp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[], ["DistrictId"], ["DistrictId", "SchoolId"]],
                "Metrics": [
                    {"Name": "SyncSucceeded", "Unit": "Count"},
                    {"Name": "SyncFailed", "Unit": "Count"},
                    {"Name": "SyncPartial", "Unit": "Count"},
                    {"Name": "ConsecutiveFailures", "Unit": "Count"},
                    {"Name": "ConsecutivePartials", "Unit": "Count"},
                ],
            }],
        },
        "DistrictId": school.district_id,
        "SchoolId": school.id,
        "SyncStatus": status,
        "SyncSucceeded": 1 - failed,
        "SyncFailed": failed,
        "SyncPartial": partial,
        "ConsecutiveFailures": counts.consecutive_failures,
        "ConsecutivePartials": counts.consecutive_partials,
    });
    println!("{line}");
}
