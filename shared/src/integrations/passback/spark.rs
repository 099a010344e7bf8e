//! The Spark adapter: a `grade.updated` event of a Spark assignment becomes a post to Spark's grade
//! API, with an `Idempotency-Key` (the completion and grade) so Spark applies it once.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Delivery, GRADE_UPDATED};
use crate::runtime::events::DomainEvent;
use crate::{Context, support::crypto};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparkGrade {
    pub completion_id: String,
    pub spark_user_id: String,
    pub course_id: String,
    pub assignment_id: String,
    pub grade: Value,
}

impl SparkGrade {
    /// The grade a `grade.updated` event carries, when it belongs to a Spark assignment.
    pub fn from_event(event: &DomainEvent) -> Option<Self> {
        let lms = event.data.get("lms")?;
        if event.event_type != GRADE_UPDATED || lms["platform"] != "spark" {
            return None;
        }
        Some(Self {
            completion_id: event.data["completion_id"].as_str()?.to_string(),
            spark_user_id: lms["user_id"].as_str()?.to_string(),
            course_id: lms["course_id"].as_str()?.to_string(),
            assignment_id: lms["assignment_id"].as_str()?.to_string(),
            grade: event.data.get("grade")?.clone(),
        })
    }

    /// Same completion and grade, same key: Spark applies it once however often it arrives.
    pub fn idempotency_key(&self) -> String {
        crypto::sha256_hex(format!("{}\0{}", self.completion_id, self.grade).as_bytes())
    }
}

/// The Spark grade an event asks for. Grades go back to Spark only from Spark's own organization
/// (DESIGN.md §3a): a completion of a quest elsewhere (a mapping made before that rule) never writes
/// into Spark's gradebook.
pub fn job(ctx: &Context, event: &DomainEvent) -> Option<SparkGrade> {
    let grade = SparkGrade::from_event(event)?;
    let organization = event.organization_id.as_deref().unwrap_or_default();
    if crate::domain::tenancy::admit(ctx, crate::integrations::spark::sso::PROVIDER, organization).is_err() {
        tracing::warn!(
            alert = "integration_tenant_mismatch",
            completion_id = grade.completion_id,
            organization_id = organization,
            "grade not passed back: the completion is outside Spark's organization"
        );
        return None;
    }
    Some(grade)
}

/// Posts one grade to Spark's API.
pub async fn post(ctx: &Context, grade: &SparkGrade) -> Delivery {
    let Some(api) = ctx.config.spark_api_url.as_deref() else {
        return Delivery::Unavailable("SPARK_API_URL not configured".into());
    };
    let Some(host) = url::Url::parse(api).ok().and_then(|u| u.host_str().map(str::to_string)) else {
        return Delivery::Unavailable("SPARK_API_URL is not a URL".into());
    };
    let Some(keys) = ctx.spark_api_key.as_ref() else {
        return Delivery::Unavailable("Spark API key not configured".into());
    };
    let key = match keys.get(ctx.secrets()).await {
        Ok(key) => key,
        Err(e) => return Delivery::Unavailable(e.to_string()),
    };
    let api_key = String::from_utf8_lossy(crate::support::secrets::key_bytes(&key.current)).into_owned();
    let request = match ctx
        .outbound(Some(vec![host]))
        .map_err(|e| e.to_string())
        .and_then(|client| client.post(&format!("{api}/api/grades")).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(e) => return Delivery::Unavailable(e),
    };
    let request = request.bearer_auth(api_key).header("Idempotency-Key", grade.idempotency_key()).json(&json!({
        "user_id": grade.spark_user_id, "course_id": grade.course_id, "assignment_id": grade.assignment_id,
        "grade": grade.grade, "completion_id": grade.completion_id,
    }));
    match request.send().await {
        Ok(response) => Delivery::of_status(response.status().as_u16(), "Spark"),
        Err(e) => Delivery::Retry(format!("request failed: {e}")),
    }
}
