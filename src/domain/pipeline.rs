//! The ordered pipeline of environments (`sandbox → staging → production` by default).

use super::{DomainError, EnvName, Result};
use serde::Serialize;

/// One stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvSpec {
    pub name: EnvName,
    /// Moving this environment's pointer needs `"confirm": true`.
    pub protected: bool,
}

/// The environments in promotion order. Built once from the config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    stages: Vec<EnvSpec>,
}

impl Default for Pipeline {
    fn default() -> Self {
        let stage = |n: &str, protected| EnvSpec {
            name: EnvName::parse("environments", n).unwrap_or_else(|_| unreachable!()),
            protected,
        };
        Self {
            stages: vec![
                stage("sandbox", false),
                stage("staging", false),
                stage("production", true),
            ],
        }
    }
}

impl Pipeline {
    /// Builds a pipeline; names must be unique and there must be at least one stage.
    pub fn new(stages: Vec<EnvSpec>) -> Result<Self> {
        if stages.is_empty() {
            return Err(DomainError::Invalid {
                field: "environments",
                message: "the pipeline needs at least one environment".into(),
            });
        }
        for (i, s) in stages.iter().enumerate() {
            if stages[..i].iter().any(|o| o.name == s.name) {
                return Err(DomainError::Invalid {
                    field: "environments",
                    message: format!("environment {} is listed twice", s.name),
                });
            }
        }
        Ok(Self { stages })
    }

    pub fn stages(&self) -> &[EnvSpec] {
        &self.stages
    }

    /// Looks an environment up by name; unknown names are a 404 for the caller.
    pub fn get(&self, name: &str) -> Result<&EnvSpec> {
        self.stages
            .iter()
            .find(|s| s.name.as_str() == name)
            .ok_or_else(|| DomainError::EnvironmentNotFound(name.to_owned()))
    }

    /// The stage after `name`, if any.
    pub fn next(&self, name: &EnvName) -> Option<&EnvSpec> {
        let i = self.stages.iter().position(|s| &s.name == name)?;
        self.stages.get(i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pipeline_order_and_protection() {
        let p = Pipeline::default();
        let names: Vec<_> = p.stages().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sandbox", "staging", "production"]);
        assert!(p.get("production").unwrap().protected);
        assert!(!p.get("staging").unwrap().protected);
        let staging = p.get("staging").unwrap().name.clone();
        assert_eq!(p.next(&staging).unwrap().name.as_str(), "production");
        let prod = p.get("production").unwrap().name.clone();
        assert!(p.next(&prod).is_none());
        assert!(matches!(
            p.get("qa"),
            Err(DomainError::EnvironmentNotFound(_))
        ));
    }

    #[test]
    fn pipeline_rejects_duplicates_and_empty() {
        assert!(Pipeline::new(vec![]).is_err());
        let s = EnvSpec {
            name: EnvName::parse("e", "dev").unwrap(),
            protected: false,
        };
        assert!(Pipeline::new(vec![s.clone(), s]).is_err());
    }
}
