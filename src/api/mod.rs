//! The tonic services, one file each: decode the request, take the caller the
//! auth layer attached, call the domain, encode the answer. No rules here.

pub mod audit;
pub mod check;
pub mod identity;
pub mod noop;
pub mod roles;
pub mod watch;
pub mod workspace;

use prost_types::Timestamp;
use tonic::{Request, Status};

use crate::{
    auth::{Caller, PrincipalId},
    authz::OrgRole,
    domain::settings::{Setting, SettingsUpdate},
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

/// The earliest instant a timestamp field may hold: 0001-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_135_596_800;
/// The latest instant a timestamp field may hold: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A timestamp field as milliseconds since the epoch. Values outside the
/// protobuf Timestamp's range (years 1 to 9999, nanos 0 to 999,999,999) are
/// refused: stored, they would make answers no strict client can read.
pub fn millis(field: &'static str, ts: &Timestamp) -> Result<i64, Error> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(Error::invalid(
            field,
            "must be a valid timestamp: years 1 to 9999, nanos 0 to 999999999",
        ));
    }
    Ok(ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000)
}

/// An optional timestamp field as milliseconds since the epoch.
pub fn millis_opt(field: &'static str, ts: Option<&Timestamp>) -> Result<Option<i64>, Error> {
    ts.map(|t| millis(field, t)).transpose()
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

/// Decodes the settings an update sets and clears, each cleared at most once.
pub fn settings_update(
    data_retention_days: Option<u32>,
    monthly_trace_limit: Option<u64>,
    clear: &[i32],
) -> Result<SettingsUpdate, Error> {
    let mut cleared = Vec::with_capacity(clear.len().min(2));
    for value in clear {
        let setting = match pb::Setting::try_from(*value) {
            Ok(pb::Setting::DataRetentionDays) => Setting::DataRetentionDays,
            Ok(pb::Setting::MonthlyTraceLimit) => Setting::MonthlyTraceLimit,
            Ok(pb::Setting::Unspecified) | Err(_) => {
                return Err(Error::invalid("clear", format!("unknown setting {value}")));
            }
        };
        if cleared.contains(&setting) {
            return Err(Error::invalid(
                "clear",
                format!("`{}` is listed more than once", setting.field()),
            ));
        }
        cleared.push(setting);
    }
    Ok(SettingsUpdate {
        data_retention_days,
        monthly_trace_limit,
        clear: cleared,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_the_protobuf_range_are_refused() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(millis("t", &ts(1, 500_000_000)).unwrap(), 1500);
        assert!(millis("t", &ts(MAX_SECONDS, 999_999_999)).is_ok());
        assert!(millis("t", &ts(MIN_SECONDS, 0)).is_ok());
        for bad in [
            ts(MAX_SECONDS + 1, 0),
            ts(MIN_SECONDS - 1, 0),
            ts(0, -1),
            ts(0, 1_000_000_000),
            ts(i64::MAX, 0),
        ] {
            let err = millis("expires_at", &bad).unwrap_err();
            assert!(err.to_string().starts_with("expires_at: "), "{err}");
        }
    }
}
