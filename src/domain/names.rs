//! Validated names: agents, environments, version references.

use super::{DomainError, Result};
use serde::Serialize;
use std::fmt;

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

macro_rules! name_type {
    ($ty:ident, $what:literal) => {
        #[doc = concat!("A validated ", $what, " name: `[a-z0-9][a-z0-9-]{0,62}`.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(field: &'static str, s: &str) -> Result<Self> {
                if valid_name(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(DomainError::Invalid {
                        field,
                        message: format!(
                            concat!(
                                "{:?} is not a valid ",
                                $what,
                                " name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
                            ),
                            truncate(s, 80)
                        ),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(AgentName, "agent");
name_type!(EnvName, "environment");

/// Cuts user input for echoing in an error message.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Formats a version number the way the API shows it: `v3`.
pub fn version_label(n: u32) -> String {
    format!("v{n}")
}

/// A reference to a version as a client writes it: `v3`, `3`, or `agent/v3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    pub agent: Option<AgentName>,
    pub number: u32,
}

impl VersionRef {
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        let (agent, rest) = match s.split_once(['/', ':']) {
            Some((a, r)) => (Some(AgentName::parse(field, a)?), r),
            None => (None, s),
        };
        let digits = rest.strip_prefix('v').unwrap_or(rest);
        match digits.parse::<u32>() {
            Ok(n) if n > 0 && !digits.starts_with('+') => Ok(Self { agent, number: n }),
            _ => Err(DomainError::Invalid {
                field,
                message: format!(
                    "{:?} is not a version: write v1, v2, … (or agent/v2)",
                    truncate(s, 80)
                ),
            }),
        }
    }

    /// Resolves the reference against the agent a request names.
    pub fn for_agent(&self, agent: &AgentName, field: &'static str) -> Result<u32> {
        match &self.agent {
            Some(other) if other != agent => Err(DomainError::InvalidVersion {
                field,
                message: format!(
                    "version {other}/v{} belongs to agent {other}, not {agent}",
                    self.number
                ),
            }),
            _ => Ok(self.number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "support-bot", "0", "a-b-c", &"x".repeat(63)] {
            assert!(AgentName::parse("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"x".repeat(64), "a/b"] {
            let e = AgentName::parse("name", bad).unwrap_err();
            assert!(
                matches!(e, DomainError::Invalid { field: "name", .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn version_refs() {
        let a = AgentName::parse("a", "bot").unwrap();
        assert_eq!(VersionRef::parse("v", "v3").unwrap().number, 3);
        assert_eq!(VersionRef::parse("v", "12").unwrap().number, 12);
        assert_eq!(
            VersionRef::parse("v", "bot/v2")
                .unwrap()
                .for_agent(&a, "v")
                .unwrap(),
            2
        );
        let other = VersionRef::parse("v", "other/v2").unwrap();
        assert!(matches!(
            other.for_agent(&a, "version"),
            Err(DomainError::InvalidVersion { .. })
        ));
        for bad in ["v0", "v", "", "x1", "v-1", "v+1", "v99999999999"] {
            assert!(VersionRef::parse("v", bad).is_err(), "{bad}");
        }
    }
}
