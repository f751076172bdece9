//! Organization roles and the organization-level permission table.
//!
//! | permission                          | viewer | user | admin |
//! |-------------------------------------|:------:|:----:|:-----:|
//! | view configuration, roles, members, retention, usage limits | ✓ | ✓ | ✓ |
//! | create personal access tokens       |        |  ✓   |   ✓   |
//! | everything else (billing, workspaces, roles, invites, members, teams, service accounts, keys, settings, audit) | | | ✓ |
//!
//! A key limited to some workspaces holds, of its principal's permissions,
//! only those that stay inside them ([`OrgPermission::needs_whole_organization`]).

/// An organization role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrgRole {
    /// Full access, and admin of every workspace of the organization.
    Admin,
    /// Reads the organization, may create personal access tokens.
    User,
    /// Reads the organization.
    Viewer,
}

impl OrgRole {
    /// The stored and displayed name (`ORG_ADMIN`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "ORG_ADMIN",
            Self::User => "ORG_USER",
            Self::Viewer => "ORG_VIEWER",
        }
    }

    /// Parses a stored name.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "ORG_ADMIN" => Some(Self::Admin),
            "ORG_USER" => Some(Self::User),
            "ORG_VIEWER" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// The permissions this role holds.
    pub const fn permissions(self) -> OrgPermissionSet {
        match self {
            Self::Admin => OrgPermissionSet(u32::MAX),
            Self::User => OrgPermissionSet(VIEW_ALL | OrgPermission::CreatePat.bit()),
            Self::Viewer => OrgPermissionSet(VIEW_ALL),
        }
    }

    /// Answers whether this role holds `permission`.
    pub const fn allows(self, permission: OrgPermission) -> bool {
        self.permissions().contains(permission)
    }

    /// Answers whether this role holds no permission `other` lacks.
    pub const fn at_most(self, other: OrgRole) -> bool {
        self.rank() <= other.rank()
    }

    const fn rank(self) -> u8 {
        match self {
            Self::Viewer => 0,
            Self::User => 1,
            Self::Admin => 2,
        }
    }
}

/// An organization-level permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OrgPermission {
    ViewOrganization,
    ViewRoles,
    ViewMembers,
    ViewRetention,
    ViewUsageLimits,
    CreatePat,
    AdminAllWorkspaces,
    ManageBilling,
    CreateWorkspaces,
    ManageRoles,
    InviteUsers,
    DeleteInvites,
    RemoveUsers,
    UpdateRetention,
    UpdateUsageLimits,
    ManageMembers,
    ManageTeams,
    ManageServiceAccounts,
    ManageApiKeys,
    ManageSecurity,
    ViewAuditLog,
    /// Follow the organization's changes (`WatchService.Watch`).
    WatchChanges,
}

const VIEW_ALL: u32 = OrgPermission::ViewOrganization.bit()
    | OrgPermission::ViewRoles.bit()
    | OrgPermission::ViewMembers.bit()
    | OrgPermission::ViewRetention.bit()
    | OrgPermission::ViewUsageLimits.bit();

impl OrgPermission {
    /// Every organization permission.
    pub const ALL: [OrgPermission; 22] = [
        Self::ViewOrganization,
        Self::ViewRoles,
        Self::ViewMembers,
        Self::ViewRetention,
        Self::ViewUsageLimits,
        Self::CreatePat,
        Self::AdminAllWorkspaces,
        Self::ManageBilling,
        Self::CreateWorkspaces,
        Self::ManageRoles,
        Self::InviteUsers,
        Self::DeleteInvites,
        Self::RemoveUsers,
        Self::UpdateRetention,
        Self::UpdateUsageLimits,
        Self::ManageMembers,
        Self::ManageTeams,
        Self::ManageServiceAccounts,
        Self::ManageApiKeys,
        Self::ManageSecurity,
        Self::ViewAuditLog,
        Self::WatchChanges,
    ];

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }

    /// Answers whether the permission acts on the organization as a whole,
    /// so that a key limited to some workspaces never holds it: everything
    /// but reading the organization and its roles (needed to work in a
    /// workspace) and what is exercised on one workspace (its settings, admin
    /// of it), which such a key holds inside its workspaces only.
    pub const fn needs_whole_organization(self) -> bool {
        !matches!(
            self,
            Self::ViewOrganization
                | Self::ViewRoles
                | Self::ViewRetention
                | Self::ViewUsageLimits
                | Self::UpdateRetention
                | Self::UpdateUsageLimits
                | Self::AdminAllWorkspaces
        )
    }

    /// The permission's name in the catalogue, `<resource_type>:<action>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ViewOrganization => "organization:read",
            Self::ViewRoles => "organization_roles:read",
            Self::ViewMembers => "organization_members:read",
            Self::ViewRetention => "data_retention:read",
            Self::ViewUsageLimits => "usage_limits:read",
            Self::CreatePat => "personal_access_tokens:create",
            Self::AdminAllWorkspaces => "workspaces:admin",
            Self::ManageBilling => "billing:manage",
            Self::CreateWorkspaces => "workspaces:create",
            Self::ManageRoles => "organization_roles:manage",
            Self::InviteUsers => "invites:create",
            Self::DeleteInvites => "invites:delete",
            Self::RemoveUsers => "organization_members:delete",
            Self::UpdateRetention => "data_retention:update",
            Self::UpdateUsageLimits => "usage_limits:update",
            Self::ManageMembers => "organization_members:manage",
            Self::ManageTeams => "teams:manage",
            Self::ManageServiceAccounts => "service_accounts:manage",
            Self::ManageApiKeys => "api_keys:manage",
            Self::ManageSecurity => "organization_security:manage",
            Self::ViewAuditLog => "audit_log:read",
            Self::WatchChanges => "changes:watch",
        }
    }
}

/// A set of organization permissions, one bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgPermissionSet(u32);

impl OrgPermissionSet {
    /// Answers whether the set holds `permission`.
    pub const fn contains(self, permission: OrgPermission) -> bool {
        self.0 & permission.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_may_view_the_organization() {
        for role in [OrgRole::Admin, OrgRole::User, OrgRole::Viewer] {
            for p in [
                OrgPermission::ViewOrganization,
                OrgPermission::ViewRoles,
                OrgPermission::ViewMembers,
                OrgPermission::ViewRetention,
                OrgPermission::ViewUsageLimits,
            ] {
                assert!(role.allows(p), "{role:?} should hold {p:?}");
            }
        }
    }

    #[test]
    fn only_users_and_admins_create_pats() {
        assert!(OrgRole::Admin.allows(OrgPermission::CreatePat));
        assert!(OrgRole::User.allows(OrgPermission::CreatePat));
        assert!(!OrgRole::Viewer.allows(OrgPermission::CreatePat));
    }

    #[test]
    fn admin_holds_everything_and_others_no_write() {
        let reads = 5;
        for p in OrgPermission::ALL {
            assert!(OrgRole::Admin.allows(p));
        }
        let user_count = OrgPermission::ALL
            .iter()
            .filter(|p| OrgRole::User.allows(**p))
            .count();
        let viewer_count = OrgPermission::ALL
            .iter()
            .filter(|p| OrgRole::Viewer.allows(**p))
            .count();
        assert_eq!(user_count, reads + 1);
        assert_eq!(viewer_count, reads);
    }

    #[test]
    fn permission_names_are_unique_catalogue_names() {
        let mut names: Vec<_> = OrgPermission::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OrgPermission::ALL.len());
        assert!(names.iter().all(|n| n.split_once(':').is_some()));
    }
}
