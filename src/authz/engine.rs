//! Evaluation: given what a principal holds in a workspace (its organization
//! role and its effective grants), answer whether it may use a permission on a
//! resource with given tags. Default deny.

use super::catalogue::PermissionSet;

/// The tag key applications are built on.
pub const APPLICATION_TAG: &str = "Application";

/// One tag condition: the resource has tag `key` with one of `values`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagCondition {
    pub key: String,
    pub values: Vec<String>,
}

/// Narrows a grant to resources whose tags satisfy every condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub conditions: Vec<TagCondition>,
}

impl Scope {
    /// A scope no resource is inside (what a damaged stored scope reads as).
    pub fn nothing() -> Self {
        Self {
            conditions: vec![TagCondition {
                key: String::new(),
                values: Vec::new(),
            }],
        }
    }

    /// Answers whether a resource with `tags` is inside the scope.
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        self.conditions.iter().all(|c| {
            tags.iter()
                .any(|(k, v)| *k == c.key && c.values.iter().any(|x| x == v))
        })
    }

    /// Answers whether every resource inside this scope is inside `other`
    /// too: each of `other`'s conditions is implied by one of this scope's on
    /// the same key, allowing no value `other` does not.
    pub fn within(&self, other: &Scope) -> bool {
        other.conditions.iter().all(|wide| {
            self.conditions.iter().any(|narrow| {
                narrow.key == wide.key && narrow.values.iter().all(|v| wide.values.contains(v))
            })
        })
    }

    /// The application the scope names, if it is a plain application scope.
    pub fn application(&self) -> Option<&str> {
        match self.conditions.as_slice() {
            [c] if c.key == APPLICATION_TAG && c.values.len() == 1 => Some(&c.values[0]),
            _ => None,
        }
    }
}

/// Answers whether something expiring at `expires_at` (a grant, a team
/// membership; `None`: never) still applies at `now_ms`: up to, and not at,
/// that instant.
#[inline]
pub fn live_at(expires_at: Option<i64>, now_ms: i64) -> bool {
    expires_at.is_none_or(|t| now_ms < t)
}

/// A grant as it applies to one principal.
#[derive(Clone, Debug)]
pub struct EffectiveGrant {
    pub grant_id: String,
    /// The role's id (a system role name or a custom role id).
    pub role: String,
    /// Set when the grant reaches the principal through a team.
    pub via_team: Option<String>,
    pub permissions: PermissionSet,
    /// `None`: every resource of the workspace.
    pub scope: Option<Scope>,
    /// From this instant (ms since the Unix epoch) the grant no longer
    /// applies: its own expiry or, through a team, the membership's,
    /// whichever comes first. `None`: it does not expire.
    pub expires_at: Option<i64>,
}

impl EffectiveGrant {
    /// Answers whether the grant still applies at `now_ms` (see [`live_at`]).
    pub fn live_at(&self, now_ms: i64) -> bool {
        live_at(self.expires_at, now_ms)
    }

    /// Answers whether this grant allows `permission` on a resource with `tags`.
    pub fn allows(&self, permission: u16, tags: &[(String, String)]) -> bool {
        self.permissions.contains(permission) && self.scope.as_ref().is_none_or(|s| s.matches(tags))
    }
}

/// What a principal holds in one workspace.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `ORG_ADMIN` of the workspace's organization: admin of every workspace.
    pub org_admin: bool,
    /// The grants that applied when this was resolved.
    pub grants: Vec<EffectiveGrant>,
    /// The grants that had expired by then (still stored until the sweep
    /// removes them): they allow nothing and are kept to explain a denial.
    pub expired: Vec<EffectiveGrant>,
}

impl Access {
    /// What a principal holds at instant `now_ms`: the grants that still
    /// apply then, and apart the ones that have expired.
    pub fn at(org_admin: bool, grants: Vec<EffectiveGrant>, now_ms: i64) -> Self {
        let (grants, expired) = grants.into_iter().partition(|g| g.live_at(now_ms));
        Self {
            org_admin,
            grants,
            expired,
        }
    }

    /// The earliest instant one of the applying grants expires: from then
    /// on this resolution is out of date. `None`: none of them expires.
    pub fn valid_until(&self) -> Option<i64> {
        self.grants.iter().filter_map(|g| g.expires_at).min()
    }

    /// Answers whether `permission` is allowed on a resource with `tags`.
    /// Workspace-level actions pass no tags, so only unscoped grants apply.
    pub fn allows(&self, permission: u16, tags: &[(String, String)]) -> bool {
        self.org_admin || self.grants.iter().any(|g| g.allows(permission, tags))
    }

    /// The first permission of `wanted` the holder could not pass on in a
    /// grant with `scope`: one no grant of theirs holds over at least every
    /// resource the new grant would cover. `None` when they hold it all.
    pub fn first_not_covered(&self, wanted: &PermissionSet, scope: Option<&Scope>) -> Option<u16> {
        if self.org_admin {
            return None;
        }
        wanted
            .iter()
            .find(|p| !self.covering(*p, scope).any(|_| true))
    }

    /// Until when the holder keeps every permission of `wanted` over every
    /// resource of `scope`: for each permission the latest expiry of the
    /// grants covering it, and the earliest of those. `None`: for good (or
    /// it does not hold them all; ask [`Self::first_not_covered`] first).
    pub fn covered_until(&self, wanted: &PermissionSet, scope: Option<&Scope>) -> Option<i64> {
        if self.org_admin {
            return None;
        }
        wanted
            .iter()
            .filter_map(|p| {
                let mut until = Some(i64::MIN);
                for g in self.covering(p, scope) {
                    until = match (until, g.expires_at) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                until.filter(|t| *t != i64::MIN)
            })
            .min()
    }

    /// The grants holding `permission` over at least every resource of `scope`.
    fn covering(
        &self,
        permission: u16,
        scope: Option<&Scope>,
    ) -> impl Iterator<Item = &EffectiveGrant> {
        self.grants.iter().filter(move |g| {
            g.permissions.contains(permission)
                && match (&g.scope, scope) {
                    (None, _) => true,
                    (Some(held), Some(given)) => given.within(held),
                    (Some(_), None) => false,
                }
        })
    }

    /// Answers whether the principal holds anything in the workspace.
    pub fn any(&self) -> bool {
        self.org_admin || !self.grants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn scope(conds: &[(&str, &[&str])]) -> Scope {
        Scope {
            conditions: conds
                .iter()
                .map(|(k, vs)| TagCondition {
                    key: (*k).into(),
                    values: vs.iter().map(|v| (*v).into()).collect(),
                })
                .collect(),
        }
    }

    fn grant(perms: &[u16], scope: Option<Scope>) -> EffectiveGrant {
        let mut set = PermissionSet::default();
        for p in perms {
            set.insert(*p);
        }
        EffectiveGrant {
            grant_id: "g".into(),
            role: "r".into(),
            via_team: None,
            permissions: set,
            scope,
            expires_at: None,
        }
    }

    #[test]
    fn a_grant_applies_up_to_and_not_at_its_expiry() {
        let mut expiring = grant(&[1], None);
        expiring.expires_at = Some(1_000);
        let mut later = grant(&[2], None);
        later.expires_at = Some(5_000);
        let held = |now| Access::at(false, vec![expiring.clone(), later.clone()], now);
        assert!(held(999).allows(1, &[]));
        assert_eq!(held(999).valid_until(), Some(1_000));
        let at = held(1_000);
        assert!(!at.allows(1, &[]), "expired at the instant itself");
        assert!(at.allows(2, &[]));
        assert_eq!(at.expired.len(), 1);
        assert_eq!(at.valid_until(), Some(5_000));
        assert_eq!(held(5_000).valid_until(), None);
        assert!(!held(5_000).any());
    }

    #[test]
    fn what_is_passed_on_lasts_as_long_as_the_grants_covering_it() {
        let mut short = grant(&[1, 2], None);
        short.expires_at = Some(1_000);
        let mut long = grant(&[1], None);
        long.expires_at = Some(5_000);
        let held = Access::at(false, vec![short, long, grant(&[3], None)], 0);
        let wanted = |ps: &[u16]| {
            let mut set = PermissionSet::default();
            for p in ps {
                set.insert(*p);
            }
            set
        };
        assert_eq!(held.covered_until(&wanted(&[1]), None), Some(5_000));
        assert_eq!(held.covered_until(&wanted(&[1, 2]), None), Some(1_000));
        assert_eq!(held.covered_until(&wanted(&[3]), None), None);
        assert_eq!(
            Access::at(true, vec![], 0).covered_until(&wanted(&[1]), None),
            None
        );
    }

    #[test]
    fn nothing_held_denies() {
        assert!(!Access::default().allows(0, &[]));
    }

    #[test]
    fn org_admin_allows_everything() {
        let a = Access::at(true, vec![], 0);
        assert!(a.allows(42, &tags(&[("Environment", "prod")])));
    }

    #[test]
    fn unscoped_grant_allows_its_permissions_on_any_resource() {
        let a = Access::at(false, vec![grant(&[1, 2], None)], 0);
        assert!(a.allows(1, &[]));
        assert!(a.allows(2, &tags(&[("Application", "x")])));
        assert!(!a.allows(3, &[]));
    }

    #[test]
    fn scoped_grant_needs_every_condition() {
        let s = scope(&[
            ("Environment", &["dev", "staging"]),
            ("Application", &["chat"]),
        ]);
        let a = Access::at(false, vec![grant(&[1], Some(s))], 0);
        assert!(a.allows(1, &tags(&[("Environment", "dev"), ("Application", "chat")])));
        assert!(!a.allows(
            1,
            &tags(&[("Environment", "prod"), ("Application", "chat")])
        ));
        assert!(!a.allows(1, &tags(&[("Environment", "dev")])));
        assert!(
            !a.allows(1, &[]),
            "workspace-level actions ignore scoped grants"
        );
    }

    #[test]
    fn a_grant_passes_on_only_what_it_holds_as_broadly() {
        let prod = scope(&[("Environment", &["prod"])]);
        let prod_or_dev = scope(&[("Environment", &["prod", "dev"])]);
        let prod_checkout = scope(&[("Environment", &["prod"]), ("Application", &["checkout"])]);
        assert!(prod.within(&prod_or_dev));
        assert!(!prod_or_dev.within(&prod));
        assert!(prod_checkout.within(&prod));
        assert!(!prod.within(&prod_checkout));
        let holder = Access::at(
            false,
            vec![grant(&[1], None), grant(&[2], Some(prod_or_dev.clone()))],
            0,
        );
        let wanted = |ps: &[u16]| {
            let mut set = PermissionSet::default();
            for p in ps {
                set.insert(*p);
            }
            set
        };
        assert_eq!(holder.first_not_covered(&wanted(&[1]), None), None);
        assert_eq!(holder.first_not_covered(&wanted(&[1, 2]), None), Some(2));
        assert_eq!(
            holder.first_not_covered(&wanted(&[1, 2]), Some(&prod)),
            None
        );
        assert_eq!(
            holder.first_not_covered(&wanted(&[3]), Some(&prod)),
            Some(3)
        );
        let admin = Access::at(true, vec![], 0);
        assert_eq!(admin.first_not_covered(&wanted(&[3]), None), None);
    }

    #[test]
    fn untagged_resources_are_outside_application_scopes() {
        let s = scope(&[(APPLICATION_TAG, &["chat"])]);
        assert_eq!(s.application(), Some("chat"));
        assert!(!s.matches(&[]));
        assert!(s.matches(&tags(&[("Application", "chat")])));
    }
}
