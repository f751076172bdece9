//! Workspace settings (data retention, usage limits) and the organization's
//! defaults for them.
//!
//! A workspace's effective value of each setting is its own value, else its
//! organization's default, else the built-in default (retention 0: the
//! product's own retention; no usage limit); [`Effective`] says which. Both
//! levels are read by every organization member and written by `ORG_ADMIN`
//! (seed 000's table); the organization's defaults reach every workspace, so
//! only a key reaching the whole organization writes them.
//!
//! Settings are read from storage on every request (nothing caches them), so
//! a changed default is what the next read of every inheriting workspace
//! gives.

use serde_json::json;

use super::{
    audit::{self, Actor, Change},
    authorize,
    change::Tx,
};
use crate::{
    auth::Caller,
    authz::OrgPermission,
    error::{Error, Result},
    state::AppState,
    store::{
        StoreError,
        entity::{organization_settings, workspace_settings},
        now_ms, settings,
    },
};

/// Longest retention a workspace or an organization may ask for.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// One setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Days traces are kept.
    DataRetentionDays,
    /// Maximum traces ingested per month.
    MonthlyTraceLimit,
}

impl Setting {
    /// The setting's field name in requests.
    pub const fn field(self) -> &'static str {
        match self {
            Self::DataRetentionDays => "data_retention_days",
            Self::MonthlyTraceLimit => "monthly_trace_limit",
        }
    }
}

/// Where an effective value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The workspace's own value.
    Workspace,
    /// The organization's default.
    Organization,
    /// Set nowhere: the built-in default.
    Default,
}

/// An effective value and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective<T> {
    pub value: T,
    pub source: Source,
}

/// A workspace's effective settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceSettings {
    pub workspace_id: String,
    /// Days traces are kept; 0 when set nowhere.
    pub data_retention_days: Effective<u32>,
    /// Traces per month; 0 means unlimited.
    pub monthly_trace_limit: Effective<u64>,
}

/// An organization's defaults for its workspaces (`None`: no default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationSettings {
    pub organization_id: String,
    pub data_retention_days: Option<u32>,
    pub monthly_trace_limit: Option<u64>,
}

/// A change to settings, at either level: values to set, settings to clear
/// (a retention of 0 clears too); what it leaves out stays as it was.
#[derive(Clone, Debug, Default)]
pub struct SettingsUpdate {
    pub data_retention_days: Option<u32>,
    pub monthly_trace_limit: Option<u64>,
    pub clear: Vec<Setting>,
}

/// What an update does to one stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    Keep,
    Set(i64),
    Clear,
}

impl Edit {
    fn apply(self, current: Option<i64>) -> Option<i64> {
        match self {
            Self::Keep => current,
            Self::Set(v) => Some(v),
            Self::Clear => None,
        }
    }
}

/// A validated [`SettingsUpdate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Edits {
    data_retention_days: Edit,
    monthly_trace_limit: Edit,
}

impl Edits {
    /// Checks an update's bounds; a setting may not be both given and cleared.
    fn of(update: &SettingsUpdate) -> Result<Self> {
        let data_retention_days = match update.data_retention_days {
            None => Edit::Keep,
            Some(0) => Edit::Clear,
            Some(d) if d > MAX_RETENTION_DAYS => {
                return Err(Error::invalid(
                    "data_retention_days",
                    format!("must be at most {MAX_RETENTION_DAYS} (0 clears the value)"),
                ));
            }
            Some(d) => Edit::Set(i64::from(d)),
        };
        let monthly_trace_limit = match update.monthly_trace_limit {
            None => Edit::Keep,
            Some(l) => Edit::Set(i64::try_from(l).map_err(|_| {
                Error::invalid(
                    "monthly_trace_limit",
                    format!("must be at most {} (0 means unlimited)", i64::MAX),
                )
            })?),
        };
        let mut edits = Self {
            data_retention_days,
            monthly_trace_limit,
        };
        for setting in &update.clear {
            let given = match setting {
                Setting::DataRetentionDays => update.data_retention_days.is_some(),
                Setting::MonthlyTraceLimit => update.monthly_trace_limit.is_some(),
            };
            if given {
                return Err(Error::invalid(
                    "clear",
                    format!("`{}` is both given and cleared", setting.field()),
                ));
            }
            *edits.of_mut(*setting) = Edit::Clear;
        }
        Ok(edits)
    }

    fn of_mut(&mut self, setting: Setting) -> &mut Edit {
        match setting {
            Setting::DataRetentionDays => &mut self.data_retention_days,
            Setting::MonthlyTraceLimit => &mut self.monthly_trace_limit,
        }
    }

    /// The permissions the update needs: retention's for retention, usage
    /// limits' for limits (and for an update that changes nothing).
    fn needed(self) -> Vec<OrgPermission> {
        let mut needed = Vec::new();
        if self.data_retention_days != Edit::Keep {
            needed.push(OrgPermission::UpdateRetention);
        }
        if self.monthly_trace_limit != Edit::Keep || needed.is_empty() {
            needed.push(OrgPermission::UpdateUsageLimits);
        }
        needed
    }
}

fn corrupt(what: &str) -> Error {
    // Stored data that does not parse fails closed: no value is made up.
    Error::Store(StoreError::Internal(format!("stored {what} is not valid")))
}

fn retention(stored: i64) -> Result<u32> {
    u32::try_from(stored)
        .ok()
        .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
        .ok_or_else(|| corrupt("data retention"))
}

fn trace_limit(stored: i64) -> Result<u64> {
    u64::try_from(stored).map_err(|_| corrupt("monthly trace limit"))
}

/// The effective value of one setting: the workspace's, else the
/// organization's, else `builtin`.
fn effective<T>(
    own: Option<i64>,
    default: Option<i64>,
    parse: fn(i64) -> Result<T>,
    builtin: T,
) -> Result<Effective<T>> {
    Ok(match (own, default) {
        (Some(v), _) => Effective {
            value: parse(v)?,
            source: Source::Workspace,
        },
        (None, Some(v)) => Effective {
            value: parse(v)?,
            source: Source::Organization,
        },
        (None, None) => Effective {
            value: builtin,
            source: Source::Default,
        },
    })
}

/// A workspace's effective settings from its own row and its organization's.
fn resolve(
    workspace_id: String,
    own: Option<&workspace_settings::Model>,
    org: Option<&organization_settings::Model>,
) -> Result<WorkspaceSettings> {
    Ok(WorkspaceSettings {
        workspace_id,
        data_retention_days: effective(
            own.and_then(|o| o.data_retention_days),
            org.and_then(|o| o.data_retention_days),
            retention,
            0,
        )?,
        monthly_trace_limit: effective(
            own.and_then(|o| o.monthly_trace_limit),
            org.and_then(|o| o.monthly_trace_limit),
            trace_limit,
            0,
        )?,
    })
}

fn organization_settings(
    organization_id: String,
    row: Option<&organization_settings::Model>,
) -> Result<OrganizationSettings> {
    Ok(OrganizationSettings {
        organization_id,
        data_retention_days: row
            .and_then(|r| r.data_retention_days)
            .map(retention)
            .transpose()?,
        monthly_trace_limit: row
            .and_then(|r| r.monthly_trace_limit)
            .map(trace_limit)
            .transpose()?,
    })
}

fn stored_json(days: Option<i64>, limit: Option<i64>) -> serde_json::Value {
    json!({ "data_retention_days": days, "monthly_trace_limit": limit })
}

/// A workspace's effective settings (permissions to view retention and usage
/// limits, within the key's reach).
pub async fn get_settings(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
) -> Result<WorkspaceSettings> {
    let conn = state.store.db();
    let (ws, _) = authorize::org_in_workspace(
        conn,
        caller,
        workspace_id,
        &[OrgPermission::ViewRetention, OrgPermission::ViewUsageLimits],
    )
    .await?;
    let own = settings::workspace(conn, &ws.id).await?;
    let org = settings::organization(conn, &ws.organization_id).await?;
    resolve(ws.id, own.as_ref(), org.as_ref())
}

/// Sets or clears a workspace's own values: retention needs the organization
/// permission to update retention, limits the one to update usage limits.
/// Returns the effective settings after the change.
pub async fn update_settings(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    update: SettingsUpdate,
) -> Result<(WorkspaceSettings, u64)> {
    let edits = Edits::of(&update)?;
    let tx = Tx::begin(state, caller).await?;
    let (ws, _) =
        authorize::org_in_workspace(tx.conn(), caller, workspace_id, &edits.needed()).await?;
    let current = settings::workspace(tx.conn(), &ws.id).await?;
    let (days, limit) = current.as_ref().map_or((None, None), |c| {
        (c.data_retention_days, c.monthly_trace_limit)
    });
    let row = workspace_settings::Model {
        workspace_id: ws.id.clone(),
        data_retention_days: edits.data_retention_days.apply(days),
        monthly_trace_limit: edits.monthly_trace_limit.apply(limit),
        updated_at: now_ms(),
    };
    settings::put_workspace(tx.conn(), row.clone()).await?;
    let org = settings::organization(tx.conn(), &ws.organization_id).await?;
    let effective = resolve(ws.id.clone(), Some(&row), org.as_ref())?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "workspace.update_settings",
            target_type: "workspace",
            target_id: &ws.id,
            details: json!({
                "before": current.map(|c| stored_json(c.data_retention_days, c.monthly_trace_limit)),
                "after": stored_json(row.data_retention_days, row.monthly_trace_limit),
            }),
        },
    );
    Ok((effective, tx.commit().await?))
}

/// An organization's defaults (permissions to view retention and usage
/// limits; a key limited to workspaces may read them, as it reads the
/// organization).
pub async fn get_organization_settings(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
) -> Result<OrganizationSettings> {
    let org_id = caller.organization(org_id);
    let conn = state.store.db();
    for permission in [OrgPermission::ViewRetention, OrgPermission::ViewUsageLimits] {
        authorize::org(conn, caller, org_id, permission).await?;
    }
    let row = settings::organization(conn, org_id).await?;
    organization_settings(org_id.to_owned(), row.as_ref())
}

/// Sets or clears an organization's defaults, which every workspace without
/// a value of its own inherits: `ORG_ADMIN`'s, with a key reaching the whole
/// organization.
pub async fn update_organization_settings(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    update: SettingsUpdate,
) -> Result<(OrganizationSettings, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let edits = Edits::of(&update)?;
    let tx = Tx::begin(state, caller).await?;
    authorize::org_every_workspace(tx.conn(), caller, &org_id, &edits.needed()).await?;
    let current = settings::organization(tx.conn(), &org_id).await?;
    let (days, limit) = current.as_ref().map_or((None, None), |c| {
        (c.data_retention_days, c.monthly_trace_limit)
    });
    let row = organization_settings::Model {
        organization_id: org_id.clone(),
        data_retention_days: edits.data_retention_days.apply(days),
        monthly_trace_limit: edits.monthly_trace_limit.apply(limit),
        updated_at: now_ms(),
    };
    settings::put_organization(tx.conn(), row.clone()).await?;
    let defaults = organization_settings(org_id.clone(), Some(&row))?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "organization.update_settings",
            target_type: "organization",
            target_id: &org_id,
            details: json!({
                "before": current.map(|c| stored_json(c.data_retention_days, c.monthly_trace_limit)),
                "after": stored_json(row.data_retention_days, row.monthly_trace_limit),
            }),
        },
    );
    Ok((defaults, tx.commit().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(days: Option<u32>, limit: Option<u64>, clear: &[Setting]) -> SettingsUpdate {
        SettingsUpdate {
            data_retention_days: days,
            monthly_trace_limit: limit,
            clear: clear.to_vec(),
        }
    }

    #[test]
    fn a_workspace_value_overrides_the_default_which_overrides_the_builtin() {
        assert_eq!(
            effective(Some(5), Some(9), trace_limit, 0).unwrap(),
            Effective {
                value: 5,
                source: Source::Workspace
            }
        );
        assert_eq!(
            effective(None, Some(9), trace_limit, 0).unwrap(),
            Effective {
                value: 9,
                source: Source::Organization
            }
        );
        assert_eq!(
            effective(None, None, trace_limit, 0).unwrap(),
            Effective {
                value: 0,
                source: Source::Default
            }
        );
    }

    #[test]
    fn stored_values_out_of_bounds_fail_closed() {
        assert!(effective(Some(-1), None, trace_limit, 0).is_err());
        assert!(effective(None, Some(0), retention, 0).is_err());
        assert!(effective(Some(4000), None, retention, 0).is_err());
    }

    #[test]
    fn a_retention_of_zero_clears_and_bounds_are_checked() {
        let e = Edits::of(&update(Some(0), None, &[])).unwrap();
        assert_eq!(e.data_retention_days, Edit::Clear);
        assert_eq!(e.monthly_trace_limit, Edit::Keep);
        assert!(Edits::of(&update(Some(MAX_RETENTION_DAYS + 1), None, &[])).is_err());
        assert!(Edits::of(&update(None, Some(u64::MAX), &[])).is_err());
        let e = Edits::of(&update(None, Some(0), &[])).unwrap();
        assert_eq!(e.monthly_trace_limit, Edit::Set(0));
    }

    #[test]
    fn a_setting_cannot_be_both_given_and_cleared() {
        assert!(Edits::of(&update(Some(3), None, &[Setting::DataRetentionDays])).is_err());
        let e = Edits::of(&update(Some(3), None, &[Setting::MonthlyTraceLimit])).unwrap();
        assert_eq!(e.monthly_trace_limit, Edit::Clear);
        assert_eq!(e.data_retention_days, Edit::Set(3));
    }

    #[test]
    fn each_setting_needs_its_own_update_permission() {
        let needed = |u| Edits::of(&u).unwrap().needed();
        assert_eq!(
            needed(update(Some(3), None, &[])),
            vec![OrgPermission::UpdateRetention]
        );
        assert_eq!(
            needed(update(None, None, &[Setting::MonthlyTraceLimit])),
            vec![OrgPermission::UpdateUsageLimits]
        );
        assert_eq!(
            needed(update(None, None, &[])),
            vec![OrgPermission::UpdateUsageLimits]
        );
    }
}
