//! Admin identities: named admin tokens with a role, and what each role may do.
//!
//! A named token is minted like a deployment token (OS randomness, shown once) and
//! stored only as its SHA-256. The bootstrap token is configuration, not a record: an
//! `admin` named `bootstrap` that every node holds and the API cannot revoke.

use super::token::{mint_with, Minted, TokenHash};
use super::{ser_opt_time, ser_time, DomainError, Millis};
use serde::Serialize;

/// The prefix of named admin tokens (deployment tokens start `swy_`).
pub const ADMIN_TOKEN_PREFIX: &str = "swa_";
/// The name of the configured admin token.
pub const BOOTSTRAP: &str = "bootstrap";

/// What an admin identity may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read.
    Viewer,
    /// Reads, agents, versions, moves, stop/start, deployment tokens, secrets.
    Deployer,
    /// Everything, admin tokens and policies included.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Deployer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(field: &'static str, s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DomainError::Invalid {
                field,
                message: format!(
                    "{:?} is not a role: use viewer, deployer or admin",
                    super::names::truncate(s, 40)
                ),
            })
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// Who is calling the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// A named admin token as stored and listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Millis,
    #[serde(serialize_with = "ser_opt_time")]
    pub revoked_at: Option<Millis>,
    /// The identity that created it.
    pub created_by: String,
    #[serde(skip)]
    pub hash: TokenHash,
}

/// Mints an admin token from the operating system's random source.
pub fn mint_admin() -> Result<Minted, getrandom::Error> {
    mint_with(ADMIN_TOKEN_PREFIX, "adm_")
}

/// Checks a new admin token's name: 1–64 characters of `[A-Za-z0-9._@-]`, and not the
/// bootstrap token's.
pub fn check_admin_name(name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._@-".contains(&c));
    if !ok {
        return Err(DomainError::Invalid {
            field: "name",
            message: "1 to 64 characters of letters, digits, '.', '_', '@' and '-'".into(),
        });
    }
    if name == BOOTSTRAP {
        return Err(DomainError::Invalid {
            field: "name",
            message: "\"bootstrap\" is the configured admin token's name".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them() {
        use Role::*;
        assert!(Admin.allows(Deployer) && Admin.allows(Viewer) && Admin.allows(Admin));
        assert!(Deployer.allows(Viewer) && !Deployer.allows(Admin));
        assert!(!Viewer.allows(Deployer));
        for r in Role::ALL {
            assert_eq!(Role::parse("role", r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("role", "root").is_err());
        assert!(Role::parse("role", "Admin").is_err());
    }

    #[test]
    fn admin_tokens_are_prefixed_and_names_checked() {
        let m = mint_admin().unwrap();
        assert!(m.secret.starts_with(ADMIN_TOKEN_PREFIX) && m.id.starts_with("adm_"));
        assert_eq!(m.hash, super::super::token::hash_token(m.secret.as_bytes()));
        assert!(check_admin_name("ci-deployer@team.x").is_ok());
        for bad in ["", "bootstrap", "a b", "x/y", &"n".repeat(65)] {
            assert!(check_admin_name(bad).is_err(), "{bad}");
        }
    }
}
