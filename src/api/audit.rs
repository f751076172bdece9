//! `AuditService`: the organization's log of changes.

use tonic::{Request, Response, Status};

use super::{caller, millis_opt, timestamp};
use crate::{
    domain::audit::{self as domain_audit, Log, PLATFORM_ACTOR, PLATFORM_PLACEHOLDER},
    error::Error,
    proto::v1::{self as pb, audit_service_server::AuditService},
    state::AppState,
    store::{audit, entity::audit_event},
};

/// The AuditService handlers.
#[derive(Clone, Debug)]
pub struct AuditApi {
    state: AppState,
}

impl AuditApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn event_pb(e: audit_event::Model) -> pb::AuditEvent {
    let by_platform = e.actor_type == PLATFORM_ACTOR;
    let actor = match e.actor_type.as_str() {
        "user" => Some(pb::principal::Kind::UserId(e.actor_id)),
        "service_account" => Some(pb::principal::Kind::ServiceAccountId(e.actor_id)),
        PLATFORM_ACTOR if e.actor_id != PLATFORM_PLACEHOLDER => {
            Some(pb::principal::Kind::ServiceAccountId(e.actor_id))
        }
        _ => None,
    };
    pb::AuditEvent {
        by_platform,
        id: e.id,
        organization_id: e.organization_id.unwrap_or_default(),
        actor: Some(pb::Principal { kind: actor }),
        acting_for_user_id: e.acting_for_user_id.unwrap_or_default(),
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        details_json: e.details,
        revision: u64::try_from(e.revision).unwrap_or_default(),
        created_at: Some(timestamp(e.created_at)),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let filter = audit::AuditFilter {
            actor_id: (!req.actor_id.is_empty()).then_some(req.actor_id),
            action: (!req.action.is_empty()).then_some(req.action),
            since_ms: millis_opt("start_time", req.start_time.as_ref())?,
            until_ms: millis_opt("end_time", req.end_time.as_ref())?,
        };
        let log = if req.platform {
            if !req.organization_id.is_empty() {
                return Err(Error::invalid(
                    "organization_id",
                    "must be empty when reading the platform log",
                )
                .into());
            }
            Log::Platform
        } else {
            Log::Organization(&req.organization_id)
        };
        let (rows, next_page_token) = domain_audit::list_events(
            &self.state,
            &caller,
            log,
            &filter,
            req.page_size,
            &req.page_token,
        )
        .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: rows.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }
}
