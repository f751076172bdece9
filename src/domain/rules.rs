//! The rules of the access model that are not permissions: plans, personal
//! organizations, and the validation of names, emails and slugs.

use crate::{
    authz::OrgRole,
    config::DeploymentMode,
    error::{Error, Result},
    store::entity::organization,
};

/// An organization's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plan {
    /// The developer plan of personal organizations.
    Personal,
    Plus,
    Enterprise,
}

impl Plan {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Plus => "plus",
            Self::Enterprise => "enterprise",
        }
    }

    /// Parses a stored name.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "personal" => Some(Self::Personal),
            "plus" => Some(Self::Plus),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }

    /// The plan of a stored organization (unknown values read as the lowest plan).
    pub fn of(org: &organization::Model) -> Self {
        Self::from_db(&org.plan).unwrap_or(Self::Personal)
    }
}

/// Checks that `role` may be held in `org`: every member of a personal
/// organization is an admin, and in `saas` mode ORG_USER and ORG_VIEWER need
/// the plus plan or higher.
pub fn check_member_role(
    mode: DeploymentMode,
    org: &organization::Model,
    role: OrgRole,
) -> Result<()> {
    if role == OrgRole::Admin {
        return Ok(());
    }
    if org.personal {
        return Err(Error::FailedPrecondition(
            "every member of a personal organization is ORG_ADMIN".into(),
        ));
    }
    if mode == DeploymentMode::Saas && Plan::of(org) < Plan::Plus {
        return Err(Error::FailedPrecondition(format!(
            "{} needs the plus plan or higher; the organization is on the {} plan",
            role.as_str(),
            Plan::of(org).as_str()
        )));
    }
    Ok(())
}

/// Checks that a service account may hold `role` in `org`: in `saas` mode
/// `ORG_USER` and `ORG_VIEWER` need the plus plan or higher, as for members.
pub fn check_account_role(
    mode: DeploymentMode,
    org: &organization::Model,
    role: OrgRole,
) -> Result<()> {
    if role == OrgRole::Admin || mode != DeploymentMode::Saas || Plan::of(org) >= Plan::Plus {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "{} needs the plus plan or higher; the organization is on the {} plan",
        role.as_str(),
        Plan::of(org).as_str()
    )))
}

/// Refuses to add anyone to a personal organization.
pub fn check_can_add_members(org: &organization::Model) -> Result<()> {
    if org.personal {
        return Err(Error::FailedPrecondition(
            "a personal organization cannot invite or add members; create a shared organization"
                .into(),
        ));
    }
    Ok(())
}

/// Validates a display name: 1 to 100 characters, no control characters.
pub fn name(field: &'static str, value: &str) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > 100 {
        return Err(Error::invalid(field, "must be at most 100 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// Most characters in a free-text description.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// Validates a free-text description: trimmed, at most
/// [`MAX_DESCRIPTION_CHARS`] characters, no control characters (empty is fine).
pub fn description(field: &'static str, value: &str) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// Validates an email address and lower-cases it.
pub fn email(field: &'static str, value: &str) -> Result<String> {
    let value = value.trim().to_lowercase();
    let valid = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value[local.len() + 1..].contains('@')
        })
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::invalid(
            field,
            "must be an email address like name@example.com",
        ));
    }
    Ok(value)
}

/// Validates an identity-provider subject: 1 to 255 printable characters.
pub fn subject(field: &'static str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be at most 255 printable characters",
        ));
    }
    Ok(value.to_owned())
}

/// Validates the expiry of a grant or team membership given at `now_ms`:
/// absent (it does not expire) or in the future.
pub fn expiry(field: &'static str, expires_at: Option<i64>, now_ms: i64) -> Result<Option<i64>> {
    match expires_at {
        Some(t) if t <= now_ms => Err(Error::invalid(
            field,
            "must be in the future (leave it unset for access that does not expire)",
        )),
        other => Ok(other),
    }
}

/// Validates a non-empty id field.
pub fn id<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.len() > 64 {
        return Err(Error::invalid(field, "is not a valid id"));
    }
    Ok(value)
}

/// Validates a workspace key: a URL slug of 1 to 63 lower-case letters,
/// digits and inner hyphens.
pub fn slug(field: &'static str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(Error::invalid(
            field,
            "must be a URL slug: 1 to 63 lower-case letters, digits and inner hyphens (e.g. `ml-research`)",
        ));
    }
    Ok(value.to_owned())
}

/// The prefix of default workspaces' keys, which no chosen key may take.
pub const DEFAULT_WORKSPACE_PREFIX: &str = "personal-";

/// Validates a workspace key chosen by a caller: a slug that does not take
/// the prefix reserved for members' default workspaces (a workspace renamed
/// to a newcomer's default key would keep them from joining).
pub fn workspace_key(field: &'static str, value: &str) -> Result<String> {
    let key = slug(field, value)?;
    if key.starts_with(DEFAULT_WORKSPACE_PREFIX) {
        return Err(Error::invalid(
            field,
            format!(
                "`{DEFAULT_WORKSPACE_PREFIX}` begins only the keys of members' default workspaces"
            ),
        ));
    }
    Ok(key)
}

/// Validates a tag key: a letter, then letters, digits or `_ . : / -`; at most 64.
pub fn tag_key(field: &'static str, value: &str) -> Result<String> {
    check_tag_key(field, value)?;
    Ok(value.to_owned())
}

/// Validates a tag value: 1 to 256 printable characters.
pub fn tag_value(field: &'static str, value: &str) -> Result<String> {
    check_tag_value(field, value)?;
    Ok(value.to_owned())
}

/// Validates a backend's id of one of its resources: 1 to 256 printable characters.
pub fn resource_id(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be 1 to 256 printable characters",
        ));
    }
    Ok(())
}

/// The resource type a question about `permission` (`<type>:<action>`) is
/// about: the permission's own. A resource named with another type is
/// refused, so a question cannot name a registered resource under a type
/// it is not registered with and be judged by tags of its own choosing.
pub fn resource_type_of<'a>(permission: &'a str, named: &str) -> Result<&'a str> {
    let own = permission.split_once(':').map_or(permission, |(t, _)| t);
    if !named.is_empty() && named != own {
        return Err(Error::invalid(
            "resource.type",
            format!("must be the permission's resource type `{own}`, or empty"),
        ));
    }
    Ok(own)
}

/// Most tags one resource may carry, registered or sent inline.
pub const MAX_TAGS: usize = 50;

/// Validates a resource's tags, registered or sent inline in a Check, by one
/// rule: at most [`MAX_TAGS`], every key and value valid, no key twice (two
/// values for one key could satisfy a scope neither alone does).
pub fn check_tags(field: &'static str, tags: &[(String, String)]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_TAGS} tags per resource"),
        ));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        check_tag_key(field, key)?;
        check_tag_value(field, value)?;
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(Error::invalid(field, format!("key `{key}` appears twice")));
        }
    }
    Ok(())
}

fn check_tag_key(field: &'static str, value: &str) -> Result<()> {
    let ok = value.len() <= 64
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "tag key `{value}` must start with a letter and use only letters, digits and `_ . : / -` (at most 64)"
            ),
        ))
    }
}

fn check_tag_value(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("tag value `{value}` must be 1 to 256 printable characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(plan: Plan, personal: bool) -> organization::Model {
        organization::Model {
            id: "o".into(),
            name: "o".into(),
            name_key: None,
            plan: plan.as_str().into(),
            personal,
            personal_owner_user_id: None,
            pat_creation_disabled: false,
            created_at: 0,
        }
    }

    #[test]
    fn saas_personal_plan_allows_only_admins() {
        let o = org(Plan::Personal, false);
        assert!(check_member_role(DeploymentMode::Saas, &o, OrgRole::Admin).is_ok());
        assert!(check_member_role(DeploymentMode::Saas, &o, OrgRole::User).is_err());
        assert!(check_member_role(DeploymentMode::Saas, &o, OrgRole::Viewer).is_err());
        assert!(check_member_role(DeploymentMode::SelfHosted, &o, OrgRole::Viewer).is_ok());
        assert!(
            check_member_role(
                DeploymentMode::Saas,
                &org(Plan::Plus, false),
                OrgRole::Viewer
            )
            .is_ok()
        );
    }

    #[test]
    fn personal_organizations_hold_only_admins_in_every_mode() {
        let o = org(Plan::Personal, true);
        assert!(check_member_role(DeploymentMode::SelfHosted, &o, OrgRole::User).is_err());
        assert!(check_can_add_members(&o).is_err());
    }

    #[test]
    fn emails_are_validated_and_lowercased() {
        assert_eq!(
            email("email", " Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn slugs_are_lowercase_with_inner_hyphens() {
        assert!(slug("key", "ml-research").is_ok());
        assert!(slug("key", "a").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a b", &"x".repeat(64)] {
            assert!(slug("key", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chosen_workspace_keys_leave_the_default_prefix_alone() {
        assert!(workspace_key("key", "ml-research").is_ok());
        assert!(workspace_key("key", "personal").is_ok());
        assert!(workspace_key("key", "personal-0123456789ab").is_err());
    }

    #[test]
    fn tag_keys_and_values_are_validated() {
        assert!(tag_key("tags", "Environment").is_ok());
        assert!(tag_key("tags", "team/owner.v2").is_ok());
        assert!(tag_key("tags", "1env").is_err());
        assert!(tag_key("tags", "env name").is_err());
        assert!(tag_value("tags", "prod").is_ok());
        assert!(tag_value("tags", "").is_err());
        assert!(tag_value("tags", &"v".repeat(257)).is_err());
    }

    #[test]
    fn descriptions_are_trimmed_and_bounded() {
        assert_eq!(description("description", " laptop ").unwrap(), "laptop");
        assert_eq!(description("description", "").unwrap(), "");
        assert!(description("description", &"é".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        assert!(description("description", &"x".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(description("description", "a\nb").is_err());
    }

    #[test]
    fn tags_follow_one_rule_and_name_each_key_once() {
        let t = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(check_tags("tags", &t(&[("Environment", "prod"), ("Application", "a")])).is_ok());
        assert!(check_tags("tags", &[]).is_ok());
        let twice = check_tags(
            "tags",
            &t(&[("Environment", "dev"), ("Environment", "prod")]),
        );
        assert!(twice.unwrap_err().to_string().contains("appears twice"));
        assert!(check_tags("tags", &t(&[("1env", "x")])).is_err());
        assert!(check_tags("tags", &t(&[("Environment", "")])).is_err());
        let many: Vec<(String, String)> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(check_tags("tags", &many).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  Acme ").unwrap(), "Acme");
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(101)).is_err());
        assert!(name("name", "a\u{7}b").is_err());
    }
}
