//! `CheckService`: authorization decisions.

use tonic::{Request, Response, Status};

use super::{caller, org_role_to_pb, principal, timestamp, workspace::scope_pb};
use crate::{
    authz::engine::EffectiveGrant,
    domain::check::{self, CheckInput, CheckPrincipal, Resource},
    error::Error,
    proto::v1::{self as pb, check_service_server::CheckService},
    state::AppState,
};

/// The CheckService handlers.
#[derive(Clone, Debug)]
pub struct CheckApi {
    state: AppState,
}

impl CheckApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn record(&self, allowed: bool) {
        let allowed = u64::from(allowed);
        self.state.metrics.record_decisions(allowed, 1 - allowed);
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn resource(r: Option<pb::Resource>) -> Resource {
    r.map(|r| Resource {
        resource_type: r.r#type,
        id: r.id,
        tags: r.tags.into_iter().map(|t| (t.key, t.value)).collect(),
    })
    .unwrap_or_default()
}

fn check_principal(p: Option<pb::CheckPrincipal>) -> Option<CheckPrincipal> {
    Some(match p?.kind? {
        pb::check_principal::Kind::UserId(id) => CheckPrincipal::User(id),
        pb::check_principal::Kind::ServiceAccountId(id) => CheckPrincipal::ServiceAccount(id),
        pb::check_principal::Kind::ApiKey(key) => CheckPrincipal::ApiKey(key),
    })
}

fn input(req: pb::CheckRequest) -> CheckInput {
    CheckInput {
        principal: check_principal(req.principal),
        workspace_id: req.workspace_id,
        permission: req.permission,
        resource: resource(req.resource),
        at_least_revision: req.at_least_revision,
    }
}

fn decision(allowed: bool) -> i32 {
    if allowed {
        pb::Decision::Allowed as i32
    } else {
        pb::Decision::Denied as i32
    }
}

fn grant_match(g: EffectiveGrant) -> pb::GrantMatch {
    pb::GrantMatch {
        scope: g.scope.as_ref().map(scope_pb),
        grant_id: g.grant_id,
        role: g.role,
        via_team_id: g.via_team.unwrap_or_default(),
        expires_at: g.expires_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl CheckService for CheckApi {
    async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        let caller = caller(&request)?;
        let d = check::check(&self.state, &caller, &input(request.into_inner())).await?;
        self.record(d.allowed);
        Ok(Response::new(pb::CheckResponse {
            decision: decision(d.allowed),
            allowed: d.allowed,
            revision: d.revision,
        }))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Reply<pb::BatchCheckResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let max = self.state.settings.max_batch_size;
        if req.checks.is_empty() {
            return Err(Error::invalid("checks", "must hold at least one check").into());
        }
        if req.checks.len() > max {
            return Err(Error::invalid(
                "checks",
                format!("at most {max} checks per batch, got {}", req.checks.len()),
            )
            .into());
        }
        // Questions that name no workspace share the one the call implies,
        // looked up once.
        let implied = if req.checks.iter().any(|c| c.workspace_id.is_empty()) {
            match check::implied_workspace(&self.state, &caller).await {
                Ok(id) => Ok(id),
                Err(err @ crate::error::Error::Store(_)) => return Err(err.into()),
                Err(err) => Err(Status::from(err).message().to_owned()),
            }
        } else {
            Ok(String::new())
        };
        let mut results = Vec::with_capacity(req.checks.len());
        let mut revision = u64::MAX;
        for mut item in req.checks {
            if item.workspace_id.is_empty() {
                match &implied {
                    Ok(id) => item.workspace_id.clone_from(id),
                    Err(error) => {
                        results.push(pb::BatchCheckResult {
                            decision: pb::Decision::Unspecified as i32,
                            allowed: false,
                            error: error.clone(),
                        });
                        continue;
                    }
                }
            }
            match check::check(&self.state, &caller, &input(item)).await {
                Ok(d) => {
                    revision = revision.min(d.revision);
                    results.push(pb::BatchCheckResult {
                        decision: decision(d.allowed),
                        allowed: d.allowed,
                        error: String::new(),
                    });
                }
                Err(err @ crate::error::Error::Store(_)) => return Err(err.into()),
                Err(err) => results.push(pb::BatchCheckResult {
                    decision: pb::Decision::Unspecified as i32,
                    allowed: false,
                    error: Status::from(err).message().to_owned(),
                }),
            }
        }
        if revision == u64::MAX {
            revision = self.state.applied_revision();
        }
        let allowed = results.iter().filter(|r| r.allowed).count() as u64;
        let denied = results
            .iter()
            .filter(|r| r.decision == pb::Decision::Denied as i32)
            .count() as u64;
        self.state.metrics.record_decisions(allowed, denied);
        Ok(Response::new(pb::BatchCheckResponse { results, revision }))
    }

    async fn explain_check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Reply<pb::ExplainCheckResponse> {
        let caller = caller(&request)?;
        let e = check::explain(&self.state, &caller, &input(request.into_inner())).await?;
        self.record(e.allowed);
        Ok(Response::new(pb::ExplainCheckResponse {
            decision: decision(e.allowed),
            allowed: e.allowed,
            reason: e.reason,
            org_role: e.org_role.map_or(pb::OrgRole::Unspecified as i32, |r| {
                org_role_to_pb(r.as_str())
            }),
            matched: e.matched.into_iter().map(grant_match).collect(),
            scope_mismatched: e.scope_mismatched.into_iter().map(grant_match).collect(),
            expired: e.expired.into_iter().map(grant_match).collect(),
            revision: e.revision,
        }))
    }

    async fn list_principal_permissions(
        &self,
        request: Request<pb::ListPrincipalPermissionsRequest>,
    ) -> Reply<pb::ListPrincipalPermissionsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let query = CheckInput {
            principal: check_principal(req.principal),
            workspace_id: req.workspace_id,
            at_least_revision: req.at_least_revision,
            ..CheckInput::default()
        };
        let p = check::list_permissions(&self.state, &caller, &query).await?;
        Ok(Response::new(pb::ListPrincipalPermissionsResponse {
            org_admin: p.org_admin,
            entries: p
                .entries
                .into_iter()
                .map(|(scope, permissions)| pb::ScopedPermissions {
                    scope: scope.as_ref().map(scope_pb),
                    permissions,
                })
                .collect(),
            revision: p.revision,
        }))
    }

    async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Reply<pb::LookupSubjectsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (subjects, revision) = check::lookup_subjects(
            &self.state,
            &caller,
            &req.workspace_id,
            &req.permission,
            &resource(req.resource),
            req.at_least_revision,
        )
        .await?;
        Ok(Response::new(pb::LookupSubjectsResponse {
            subjects: subjects
                .into_iter()
                .map(|s| pb::SubjectMatch {
                    principal: Some(principal(&s.principal)),
                    via: s.via,
                })
                .collect(),
            revision,
        }))
    }
}
