//! The tonic services, one file each: decode the request, take the caller the
//! auth layer attached, call the domain, encode the answer. No rules here.

pub mod audit;
pub mod check;
pub mod identity;
pub mod noop;
pub mod roles;
pub mod workspace;

use prost_types::Timestamp;
use tonic::{Request, Status};

use crate::{
    auth::{Caller, PrincipalId},
    authz::OrgRole,
    error::Error,
    proto::v1 as pb,
};

/// The caller the auth layer attached to the request.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the epoch.
pub fn millis(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// Decodes an organization role field; `None` when unspecified.
pub fn org_role(field: &'static str, value: i32) -> Result<Option<OrgRole>, Error> {
    match pb::OrgRole::try_from(value) {
        Ok(pb::OrgRole::Unspecified) => Ok(None),
        Ok(pb::OrgRole::OrgAdmin) => Ok(Some(OrgRole::Admin)),
        Ok(pb::OrgRole::OrgUser) => Ok(Some(OrgRole::User)),
        Ok(pb::OrgRole::OrgViewer) => Ok(Some(OrgRole::Viewer)),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown organization role {value}"),
        )),
    }
}

/// Encodes a stored organization role.
pub fn org_role_to_pb(role: &str) -> i32 {
    match OrgRole::from_db(role) {
        Some(OrgRole::Admin) => pb::OrgRole::OrgAdmin as i32,
        Some(OrgRole::User) => pb::OrgRole::OrgUser as i32,
        Some(OrgRole::Viewer) => pb::OrgRole::OrgViewer as i32,
        None => pb::OrgRole::Unspecified as i32,
    }
}

/// Encodes a principal.
pub fn principal(p: &PrincipalId) -> pb::Principal {
    let kind = match p {
        PrincipalId::User(id) => pb::principal::Kind::UserId(id.clone()),
        PrincipalId::ServiceAccount(id) => pb::principal::Kind::ServiceAccountId(id.clone()),
    };
    pb::Principal { kind: Some(kind) }
}
