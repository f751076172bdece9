//! The permission catalogue: every `<resource_type>:<action>` an organization
//! knows (the built-in types of the access model plus its own), each with a
//! small integer id so a role's permissions are a bit set.
//!
//! The system roles are defined over the catalogue: `WORKSPACE_ADMIN` holds
//! everything, `WORKSPACE_EDITOR` everything but workspace management
//! (members, roles, service keys, the workspace itself), `WORKSPACE_VIEWER`
//! every `read`.

use std::collections::HashMap;

/// The built-in resource types and their actions.
pub const BUILTIN_TYPES: &[(&str, &[&str])] = &[
    ("projects", &["read", "create", "update", "delete", "share"]),
    ("annotation_queues", &["read", "create", "update", "delete"]),
    ("deployments", &["read", "create", "update", "delete"]),
    ("datasets", &["read", "create", "update", "delete", "share"]),
    ("experiments", &["read", "create", "update", "delete"]),
    ("prompts", &["read", "create", "update", "delete", "share"]),
    ("resource_tags", &["read", "create", "update", "delete"]),
    ("applications", &["read", "create", "delete"]),
    ("api_keys", &["read", "create", "update", "delete"]),
    ("secrets", &["read", "create", "update", "delete"]),
    ("feedback_configs", &["read", "create", "update", "delete"]),
    ("models", &["read", "create", "update", "delete"]),
    ("rules", &["read", "create", "update", "delete"]),
    ("shared_urls", &["read", "create", "update", "delete"]),
    ("members", &["read", "manage"]),
    ("roles", &["read", "manage"]),
    ("workspace", &["read", "update", "delete"]),
];

/// Answers whether `ty` is a built-in resource type: every organization's
/// catalogue has it, and no organization may register its name.
pub fn is_builtin_type(ty: &str) -> bool {
    BUILTIN_TYPES.iter().any(|(t, _)| *t == ty)
}

/// Workspace management: what `WORKSPACE_EDITOR` lacks.
const MANAGEMENT: &[&str] = &[
    "members:manage",
    "roles:manage",
    "api_keys:create",
    "api_keys:update",
    "api_keys:delete",
    "workspace:update",
    "workspace:delete",
];

/// A built-in, immutable workspace role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SystemRole {
    Admin,
    Editor,
    Viewer,
}

impl SystemRole {
    /// All system roles.
    pub const ALL: [SystemRole; 3] = [Self::Admin, Self::Editor, Self::Viewer];

    /// The role's id and name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "WORKSPACE_ADMIN",
            Self::Editor => "WORKSPACE_EDITOR",
            Self::Viewer => "WORKSPACE_VIEWER",
        }
    }

    /// The second naming of the seeds.
    pub fn alias(self) -> &'static str {
        match self {
            Self::Admin => "Owner",
            Self::Editor => "Contributor",
            Self::Viewer => "Reader",
        }
    }

    /// One-line description.
    pub fn description(self) -> &'static str {
        match self {
            Self::Admin => "Full access to all resources within the workspace",
            Self::Editor => {
                "Full permissions except workspace management (members, roles, service keys)"
            }
            Self::Viewer => "Read-only access to all resources within the workspace",
        }
    }

    /// Parses a role name or alias, ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| {
            name.eq_ignore_ascii_case(r.as_str())
                || name.eq_ignore_ascii_case(r.alias())
                || name.eq_ignore_ascii_case(r.as_str().trim_start_matches("WORKSPACE_"))
        })
    }
}

/// A set of permission ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermissionSet {
    words: Vec<u64>,
}

impl PermissionSet {
    /// Adds a permission.
    pub fn insert(&mut self, id: u16) {
        let (word, bit) = (usize::from(id / 64), id % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    /// Answers whether the set holds `id`: one bounds check and a bit test.
    #[inline]
    pub fn contains(&self, id: u16) -> bool {
        self.words
            .get(usize::from(id / 64))
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let base = u16::try_from(i).unwrap_or(u16::MAX).saturating_mul(64);
            (0..64u16)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| base + b)
        })
    }

    /// Adds every permission of `other`.
    pub fn union_with(&mut self, other: &PermissionSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }
}

/// One permission of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub name: String,
    pub resource_type: String,
    pub action: String,
    pub builtin: bool,
}

/// The catalogue of one organization.
#[derive(Clone, Debug)]
pub struct Catalogue {
    permissions: Vec<Permission>,
    index: HashMap<String, u16>,
}

impl Catalogue {
    /// The built-in catalogue extended with an organization's own types.
    pub fn new<'a>(custom: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Self {
        let mut permissions = Vec::new();
        for (ty, actions) in BUILTIN_TYPES {
            for action in *actions {
                permissions.push(Permission {
                    name: format!("{ty}:{action}"),
                    resource_type: (*ty).to_owned(),
                    action: (*action).to_owned(),
                    builtin: true,
                });
            }
        }
        for (ty, actions) in custom {
            for action in actions {
                permissions.push(Permission {
                    name: format!("{ty}:{action}"),
                    resource_type: ty.to_owned(),
                    action: action.clone(),
                    builtin: false,
                });
            }
        }
        let index = permissions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        Self { permissions, index }
    }

    /// The id of a permission name.
    pub fn id(&self, name: &str) -> Option<u16> {
        self.index.get(name).copied()
    }

    /// The permission with an id.
    pub fn get(&self, id: u16) -> Option<&Permission> {
        self.permissions.get(usize::from(id))
    }

    /// Every permission, in id order.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// Answers whether the catalogue has a resource type.
    pub fn has_type(&self, ty: &str) -> bool {
        self.permissions.iter().any(|p| p.resource_type == ty)
    }

    /// The permissions of a system role.
    pub fn system_role(&self, role: SystemRole) -> PermissionSet {
        let mut set = PermissionSet::default();
        for (i, p) in self.permissions.iter().enumerate() {
            let keep = match role {
                SystemRole::Admin => true,
                SystemRole::Editor => !MANAGEMENT.contains(&p.name.as_str()),
                SystemRole::Viewer => p.action == "read",
            };
            if keep {
                set.insert(u16::try_from(i).unwrap_or(u16::MAX));
            }
        }
        set
    }

    /// The set of named permissions; the first unknown name is the error.
    pub fn set_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<PermissionSet, &'a str> {
        let mut set = PermissionSet::default();
        for name in names {
            set.insert(self.id(name).ok_or(name)?);
        }
        Ok(set)
    }

    /// The names of a set's permissions.
    pub fn names_of(&self, set: &PermissionSet) -> Vec<String> {
        set.iter()
            .filter_map(|id| self.get(id).map(|p| p.name.clone()))
            .collect()
    }
}

/// Checks a resource type or action name: lower-case, digits and `_`, starting
/// with a letter, at most 63 characters.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Catalogue, role: SystemRole) -> Vec<String> {
        c.names_of(&c.system_role(role))
    }

    #[test]
    fn admin_holds_every_permission_including_custom_types() {
        let actions = vec!["read".to_owned(), "run".to_owned()];
        let c = Catalogue::new([("pipelines", actions.as_slice())]);
        assert_eq!(names(&c, SystemRole::Admin).len(), c.permissions().len());
        assert!(names(&c, SystemRole::Admin).contains(&"pipelines:run".to_owned()));
    }

    #[test]
    fn editor_lacks_only_workspace_management() {
        let c = Catalogue::new([]);
        let editor = names(&c, SystemRole::Editor);
        for m in MANAGEMENT {
            assert!(!editor.iter().any(|n| n == m), "editor must not hold {m}");
        }
        assert!(editor.contains(&"prompts:delete".to_owned()));
        assert!(editor.contains(&"members:read".to_owned()));
        assert_eq!(editor.len() + MANAGEMENT.len(), c.permissions().len());
    }

    #[test]
    fn viewer_reads_only() {
        let c = Catalogue::new([]);
        let viewer = names(&c, SystemRole::Viewer);
        assert!(viewer.iter().all(|n| n.ends_with(":read")));
        assert_eq!(viewer.len(), BUILTIN_TYPES.len());
    }

    #[test]
    fn aliases_name_the_same_roles() {
        assert_eq!(SystemRole::parse("Owner"), Some(SystemRole::Admin));
        assert_eq!(SystemRole::parse("contributor"), Some(SystemRole::Editor));
        assert_eq!(SystemRole::parse("READER"), Some(SystemRole::Viewer));
        assert_eq!(
            SystemRole::parse("WORKSPACE_EDITOR"),
            Some(SystemRole::Editor)
        );
        assert_eq!(SystemRole::parse("viewer"), Some(SystemRole::Viewer));
        assert_eq!(SystemRole::parse("superuser"), None);
    }

    #[test]
    fn permission_sets_hold_what_was_inserted() {
        let mut set = PermissionSet::default();
        for id in [0, 63, 64, 200] {
            set.insert(id);
        }
        assert!(set.contains(63) && set.contains(64) && set.contains(200));
        assert!(!set.contains(1) && !set.contains(1000));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200]);
    }

    #[test]
    fn identifiers_are_lower_snake_case() {
        assert!(valid_identifier("pipelines"));
        assert!(valid_identifier("run_2"));
        for bad in ["", "Pipelines", "2x", "a-b", "a:b"] {
            assert!(!valid_identifier(bad), "{bad:?}");
        }
    }
}
