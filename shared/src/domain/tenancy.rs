//! Tenancy of integrations (DESIGN.md §3a): every integration belongs to one organization, and data
//! arriving through it lands only there. One rule for every integration: Spark today (its partner
//! organization, `SparkOrganizationId`); LTI platform registrations and Clever districts name theirs.

use http::StatusCode;

use crate::{ApiError, Context};

/// The Spark integration's name: its identities' provider and its quests' `lms.platform`.
pub const SPARK: &str = "spark";

/// LMS platforms whose assignments a quest may map.
pub const LMS_PLATFORMS: &[&str] = &[SPARK];

/// The organization that data arriving through `integration` belongs to.
pub fn organization_of(ctx: &Context, integration: &str) -> Result<String, ApiError> {
    match integration {
        SPARK => ctx.config.spark_organization_id.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "integration_not_configured",
                "Spark has no organization (SparkOrganizationId): no quest may map its assignments",
            )
        }),
        _ => Err(ApiError::bad_request(
            "unknown_integration",
            format!("lms.platform must be one of: {}", LMS_PLATFORMS.join(", ")),
        )),
    }
}

/// Refuses to let data of `integration` land in `organization_id` unless it is the integration's own.
pub fn admit(ctx: &Context, integration: &str, organization_id: &str) -> Result<(), ApiError> {
    let owner = organization_of(ctx, integration)?;
    if owner == organization_id {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "integration_tenant_mismatch",
            format!("Data from {integration} belongs to its own organization; this quest's organization is another"),
        ))
    }
}
