//! Effective power: what a caller may do is what its principal may do,
//! intersected with the limits of the key it calls with. Plain data in,
//! decisions out; `domain::authorize` gathers the facts and asks here.
//!
//! * A key's [`Reach`] is its whole organization (personal access tokens,
//!   organization-scoped service keys) or a list of its workspaces. The rule
//!   that a key is limited to its workspaces is [`Reach::includes`], and only
//!   there.
//! * Organization permissions are either organization-wide (members, teams,
//!   keys, roles, invites, billing, the audit log ...) or bound to one
//!   workspace (its settings, admin of it): a key limited to some workspaces
//!   holds only the second kind, and only inside them
//!   ([`OrgPermission::needs_whole_organization`]). What is exercised on
//!   every workspace at once (the organization's default settings) needs a
//!   key reaching the whole organization ([`Power::org_every_workspace`]).
//! * Powers that cross organizations ([`PlatformPower`]) belong to platform
//!   accounts acting as themselves with a key that reaches their whole
//!   organization, and to nobody else.
//! * Nothing delegates more than its caller holds: a new key reaches no more
//!   than the caller's key ([`Reach::covers`]) and lives no longer, a new
//!   account's role is no higher ([`OrgRole::at_most`]).
//! * A service account confined to a workspace acts only there: whatever its
//!   key's stored reach, the key reaches that workspace and nothing else
//!   ([`Reach::confined_to`]), and the account's organization role is never
//!   more than [`CONFINED_ACCOUNT_ROLE`].

use super::{OrgPermission, OrgRole};

/// Where a key may act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every workspace of the key's organization.
    Organization,
    /// These workspaces of the key's organization only.
    Workspaces(Vec<String>),
}

impl Reach {
    /// Answers whether a key with this reach may act in `workspace_id`.
    pub fn includes(&self, workspace_id: &str) -> bool {
        match self {
            Self::Organization => true,
            Self::Workspaces(ids) => ids.iter().any(|id| id == workspace_id),
        }
    }

    /// This reach cut down to `workspace_id`, the workspace a service account
    /// is confined to: that workspace if this reach includes it, else nothing.
    pub fn confined_to(&self, workspace_id: &str) -> Reach {
        let ids = if self.includes(workspace_id) {
            vec![workspace_id.to_owned()]
        } else {
            Vec::new()
        };
        Self::Workspaces(ids)
    }

    /// Answers whether this reach is the whole organization.
    pub fn is_whole_organization(&self) -> bool {
        matches!(self, Self::Organization)
    }

    /// Answers whether everything `other` reaches, this reaches too.
    pub fn covers(&self, other: &Reach) -> bool {
        match (self, other) {
            (Self::Organization, _) => true,
            (Self::Workspaces(_), Self::Organization) => false,
            (Self::Workspaces(_), Self::Workspaces(ids)) => ids.iter().all(|id| self.includes(id)),
        }
    }
}

/// The organization role of a service account confined to a workspace: the
/// lowest, which reads the organization (what working in a workspace needs)
/// and administers nothing. Its power in the workspace comes from its grants.
pub const CONFINED_ACCOUNT_ROLE: OrgRole = OrgRole::Viewer;

/// A power that crosses organizations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformPower {
    /// Register users of the identity provider (`CreateUser`).
    RegisterUsers,
    /// Read any user, whichever organizations they belong to.
    ReadUsers,
    /// Add an existing user to an organization directly (`AddMember`).
    AddMembers,
    /// Set an organization's plan in `saas` mode.
    SetPlans,
    /// Create, list, delete platform accounts and manage their keys.
    ManagePlatformAccounts,
    /// Read the platform audit log.
    ReadPlatformLog,
    /// Resolve (`Authenticate`) keys of any organization.
    ResolveKeys,
    /// Create a user's organization on their behalf without acting for them.
    CreateOrganizations,
    /// Rotate the key that signs every organization's temporary credentials.
    RotateSigningKeys,
}

impl PlatformPower {
    /// What the power is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::RegisterUsers => "registering users",
            Self::ReadUsers => "reading users of other organizations",
            Self::AddMembers => {
                "adding an existing user to an organization directly (organizations invite instead)"
            }
            Self::SetPlans => "setting an organization's plan",
            Self::ManagePlatformAccounts => "managing platform accounts and their keys",
            Self::ReadPlatformLog => "reading the platform audit log",
            Self::ResolveKeys => "resolving keys of other organizations",
            Self::CreateOrganizations => "creating organizations on a user's behalf",
            Self::RotateSigningKeys => "rotating the signing key of temporary credentials",
        }
    }
}

/// Why a power does not reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

/// Who a caller is at the platform tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The key belongs to a platform account.
    pub platform_key: bool,
    /// The call acts for a user (`x-act-as-user`): it then has the user's
    /// power, not the account's.
    pub acting: bool,
    /// The key reaches its whole organization.
    pub whole_organization: bool,
}

impl Tier {
    /// Decides a platform power.
    pub fn allows(self, power: PlatformPower) -> Result<(), Denied> {
        if !self.platform_key || self.acting {
            return Err(Denied(format!(
                "{} is a platform power: only a platform account acting as itself holds it",
                power.describe()
            )));
        }
        if !self.whole_organization {
            return Err(Denied(format!(
                "{} needs a key that is not limited to workspaces",
                power.describe()
            )));
        }
        Ok(())
    }

    /// Decides whether a key may carry `x-act-as-user` at all.
    pub fn may_act_for_users(platform_key: bool) -> Result<(), Denied> {
        if platform_key {
            Ok(())
        } else {
            Err(Denied(
                "`x-act-as-user` is a platform power: only platform accounts' keys may act for users"
                    .into(),
            ))
        }
    }
}

/// What a caller may do in one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Power {
    /// The organization role of the principal the call is authorized as.
    pub role: OrgRole,
    /// The calling key's reach.
    pub reach: Reach,
    /// The caller is a platform account acting as itself.
    pub platform: bool,
}

impl Power {
    /// Decides an organization permission exercised on the whole organization.
    pub fn org(&self, permission: OrgPermission) -> Result<(), Denied> {
        if permission.needs_whole_organization() && !self.reach.is_whole_organization() {
            return Err(Denied(format!(
                "the key is limited to workspaces; `{}` needs a key that reaches the whole organization",
                permission.name()
            )));
        }
        self.role_allows(permission)
    }

    /// Decides an organization permission exercised on every workspace at
    /// once (the organization's default settings, which workspaces inherit):
    /// the key must reach the whole organization, whatever the permission,
    /// since the change reaches workspaces beyond a narrower key's.
    pub fn org_every_workspace(&self, permission: OrgPermission) -> Result<(), Denied> {
        if !self.reach.is_whole_organization() {
            return Err(Denied(format!(
                "the key is limited to workspaces; `{}` on the organization's defaults needs a key that reaches the whole organization",
                permission.name()
            )));
        }
        self.role_allows(permission)
    }

    /// Decides an organization permission exercised on one workspace (its
    /// settings, say): the workspace must be within the key's reach.
    pub fn org_in(&self, permission: OrgPermission, workspace_id: &str) -> Result<(), Denied> {
        self.reaches(workspace_id)?;
        self.role_allows(permission)
    }

    /// Decides whether the key reaches `workspace_id`.
    pub fn reaches(&self, workspace_id: &str) -> Result<(), Denied> {
        if self.reach.includes(workspace_id) {
            Ok(())
        } else {
            Err(Denied(format!(
                "the key is not scoped to workspace `{workspace_id}`"
            )))
        }
    }

    /// Answers whether the caller is admin of every workspace it reaches.
    pub fn admin_of_reached_workspaces(&self) -> bool {
        self.role.allows(OrgPermission::AdminAllWorkspaces)
    }

    /// Decides whether the caller may give a new key `reach`: never more
    /// than its own key reaches.
    pub fn may_give_reach(&self, reach: &Reach) -> Result<(), Denied> {
        if self.reach.covers(reach) {
            Ok(())
        } else {
            Err(Denied(
                "a new key may reach only workspaces the calling key reaches".into(),
            ))
        }
    }

    /// Decides whether the caller may give a new account `role`: never a
    /// higher one than its own.
    pub fn may_give_role(&self, role: OrgRole) -> Result<(), Denied> {
        if role.at_most(self.role) {
            Ok(())
        } else {
            Err(Denied(format!(
                "{} cannot give {}: nothing delegates more than its caller holds",
                self.role.as_str(),
                role.as_str()
            )))
        }
    }

    fn role_allows(&self, permission: OrgPermission) -> Result<(), Denied> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(Denied(format!(
                "{} lacks the organization permission `{}`",
                self.role.as_str(),
                permission.name()
            )))
        }
    }
}

/// The organization role a new service account confined to a workspace is
/// given: [`CONFINED_ACCOUNT_ROLE`] when none is asked; anything more is
/// refused, so a workspace admin cannot hand out an organization role.
pub fn confined_account_role(requested: Option<OrgRole>) -> Result<OrgRole, Denied> {
    match requested {
        None => Ok(CONFINED_ACCOUNT_ROLE),
        Some(role) if role.at_most(CONFINED_ACCOUNT_ROLE) => Ok(role),
        Some(role) => Err(Denied(format!(
            "role: a service account confined to a workspace is {} and never {}; its power is what it is granted in the workspace",
            CONFINED_ACCOUNT_ROLE.as_str(),
            role.as_str()
        ))),
    }
}

/// The reach of a new key of a service account confined to `workspace_id`:
/// that workspace, whether asked for by name or not asked for at all; any
/// other reach is refused.
pub fn confined_key_reach(requested: Option<&Reach>, workspace_id: &str) -> Result<Reach, Denied> {
    let exact = Reach::Workspaces(vec![workspace_id.to_owned()]);
    match requested {
        None => Ok(exact),
        Some(reach) if *reach == exact => Ok(exact),
        Some(_) => Err(Denied(format!(
            "scope: the service account is confined to workspace `{workspace_id}`; its keys reach that workspace only"
        ))),
    }
}

/// Decides whether a new key may live until `requested` (`None`: forever)
/// when the calling key lives until `caller` (`None`: forever).
pub fn may_outlive(caller: Option<i64>, requested: Option<i64>) -> Result<(), Denied> {
    match (caller, requested) {
        (None, _) => Ok(()),
        (Some(limit), Some(t)) if t <= limit => Ok(()),
        (Some(_), _) => Err(Denied(
            "expires_at: must be set, and no later than the calling key's own expiry".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(ids: &[&str]) -> Reach {
        Reach::Workspaces(ids.iter().map(|s| (*s).to_owned()).collect())
    }

    fn power(role: OrgRole, reach: Reach) -> Power {
        Power {
            role,
            reach,
            platform: false,
        }
    }

    #[test]
    fn workspace_limited_keys_reach_only_their_workspaces() {
        assert!(Reach::Organization.includes("a"));
        assert!(ws(&["a", "b"]).includes("b"));
        assert!(!ws(&["a"]).includes("b"));
        assert!(!ws(&[]).includes("a"));
    }

    #[test]
    fn workspace_limited_admin_keys_hold_no_organization_wide_permission() {
        let limited = power(OrgRole::Admin, ws(&["a"]));
        for p in OrgPermission::ALL {
            assert_eq!(
                limited.org(p).is_ok(),
                !p.needs_whole_organization(),
                "{p:?}"
            );
        }
        for p in [
            OrgPermission::ManageApiKeys,
            OrgPermission::ManageMembers,
            OrgPermission::ManageTeams,
            OrgPermission::CreateWorkspaces,
            OrgPermission::ViewAuditLog,
            OrgPermission::ViewMembers,
            OrgPermission::CreatePat,
        ] {
            assert!(limited.org(p).is_err(), "{p:?}");
        }
        assert!(limited.org_in(OrgPermission::UpdateRetention, "a").is_ok());
        assert!(limited.org_in(OrgPermission::UpdateRetention, "b").is_err());
        let whole = power(OrgRole::Admin, Reach::Organization);
        assert!(OrgPermission::ALL.iter().all(|p| whole.org(*p).is_ok()));
    }

    #[test]
    fn organization_defaults_need_a_key_reaching_the_whole_organization() {
        let limited = power(OrgRole::Admin, ws(&["a"]));
        for p in OrgPermission::ALL {
            assert!(limited.org_every_workspace(p).is_err(), "{p:?}");
        }
        let whole = power(OrgRole::Admin, Reach::Organization);
        assert!(
            whole
                .org_every_workspace(OrgPermission::UpdateRetention)
                .is_ok()
        );
        let user = power(OrgRole::User, Reach::Organization);
        assert!(
            user.org_every_workspace(OrgPermission::UpdateUsageLimits)
                .is_err()
        );
    }

    #[test]
    fn nothing_delegates_more_than_its_caller_holds() {
        let limited = power(OrgRole::Admin, ws(&["a", "b"]));
        assert!(limited.may_give_reach(&ws(&["a"])).is_ok());
        assert!(limited.may_give_reach(&ws(&["a", "c"])).is_err());
        assert!(limited.may_give_reach(&Reach::Organization).is_err());
        let user = power(OrgRole::User, Reach::Organization);
        assert!(user.may_give_reach(&Reach::Organization).is_ok());
        assert!(user.may_give_role(OrgRole::Viewer).is_ok());
        assert!(user.may_give_role(OrgRole::User).is_ok());
        assert!(user.may_give_role(OrgRole::Admin).is_err());
    }

    #[test]
    fn keys_of_confined_accounts_reach_their_workspace_only() {
        assert_eq!(Reach::Organization.confined_to("a"), ws(&["a"]));
        assert_eq!(ws(&["a", "b"]).confined_to("b"), ws(&["b"]));
        assert_eq!(ws(&["a"]).confined_to("b"), ws(&[]));
        assert!(!ws(&["a"]).confined_to("b").includes("a"));
        assert!(!Reach::Organization.confined_to("a").is_whole_organization());
    }

    #[test]
    fn confined_accounts_hold_no_organization_role_and_keys_no_other_reach() {
        assert_eq!(confined_account_role(None), Ok(CONFINED_ACCOUNT_ROLE));
        assert_eq!(
            confined_account_role(Some(OrgRole::Viewer)),
            Ok(OrgRole::Viewer)
        );
        assert!(confined_account_role(Some(OrgRole::User)).is_err());
        assert!(confined_account_role(Some(OrgRole::Admin)).is_err());
        assert_eq!(confined_key_reach(None, "a"), Ok(ws(&["a"])));
        assert_eq!(confined_key_reach(Some(&ws(&["a"])), "a"), Ok(ws(&["a"])));
        assert!(confined_key_reach(Some(&ws(&["a", "b"])), "a").is_err());
        assert!(confined_key_reach(Some(&ws(&["b"])), "a").is_err());
        assert!(confined_key_reach(Some(&Reach::Organization), "a").is_err());
    }

    #[test]
    fn new_keys_live_no_longer_than_the_calling_key() {
        assert!(may_outlive(None, None).is_ok());
        assert!(may_outlive(None, Some(5)).is_ok());
        assert!(may_outlive(Some(10), Some(10)).is_ok());
        assert!(may_outlive(Some(10), Some(11)).is_err());
        assert!(may_outlive(Some(10), None).is_err());
    }

    #[test]
    fn platform_powers_need_a_platform_account_acting_as_itself() {
        let platform = Tier {
            platform_key: true,
            acting: false,
            whole_organization: true,
        };
        assert!(platform.allows(PlatformPower::RegisterUsers).is_ok());
        for denied in [
            Tier {
                acting: true,
                ..platform
            },
            Tier {
                platform_key: false,
                ..platform
            },
            Tier {
                whole_organization: false,
                ..platform
            },
        ] {
            assert!(denied.allows(PlatformPower::RegisterUsers).is_err());
        }
        assert!(Tier::may_act_for_users(false).is_err());
    }
}
