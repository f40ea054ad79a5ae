//! Immutable versions of an agent and the rules for creating them.

use super::names::{truncate, version_label};
use super::secret::Inject;
use super::{ser_time, AgentName, DomainError, Millis, Result};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Most upstreams one version may list.
pub const MAX_UPSTREAMS: usize = 16;
/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION: usize = 4096;
/// Largest config document accepted, in bytes of compact JSON.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Whether a version may serve traffic. Stopping keeps the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Running,
    Stopped,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}

/// An active health check of a version's endpoints: `GET path` every `interval_ms`,
/// an answer below 500 within `timeout_ms` passes; `healthy_threshold` passes in a
/// row make an endpoint healthy, `unhealthy_threshold` failures in a row unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub path: String,
    #[serde(default = "HealthSpec::default_interval")]
    pub interval_ms: u64,
    #[serde(default = "HealthSpec::default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "HealthSpec::default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "HealthSpec::default_unhealthy")]
    pub unhealthy_threshold: u32,
}

impl HealthSpec {
    fn default_interval() -> u64 {
        2000
    }
    fn default_timeout() -> u64 {
        1000
    }
    fn default_healthy() -> u32 {
        2
    }
    fn default_unhealthy() -> u32 {
        3
    }

    fn check(&self) -> Result<()> {
        let bad = |message: String| DomainError::InvalidVersion {
            field: "health",
            message,
        };
        let path_ok = self.path.starts_with('/')
            && self.path.len() <= 512
            && self.path.parse::<http::uri::PathAndQuery>().is_ok();
        if !path_ok {
            return Err(bad(format!(
                "path {:?}: an absolute path such as /healthz",
                truncate(&self.path, 80)
            )));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err(bad("interval_ms: from 100 to 3600000".into()));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(bad("timeout_ms: from 1 to interval_ms".into()));
        }
        for (name, n) in [
            ("healthy_threshold", self.healthy_threshold),
            ("unhealthy_threshold", self.unhealthy_threshold),
        ] {
            if !(1..=100).contains(&n) {
                return Err(bad(format!("{name}: from 1 to 100")));
            }
        }
        Ok(())
    }
}

/// What a client submits to create a version, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
    /// Checked actively while the version is live; None: passive ejection only.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Endpoints that must pass the gate before a move makes it live (default 1).
    #[serde(default)]
    pub min_healthy: Option<u32>,
    /// Headers set from the agent's secrets on every request to the version.
    #[serde(default)]
    pub inject: Vec<Inject>,
}

/// An immutable snapshot of an agent. Never edited after creation except for
/// its run state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    pub agent: AgentName,
    #[serde(rename = "version", serialize_with = "ser_version")]
    pub number: u32,
    pub upstreams: Vec<String>,
    pub config: serde_json::Value,
    pub description: String,
    pub author: String,
    pub digest: String,
    pub state: VersionState,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Millis,
    pub health: Option<HealthSpec>,
    pub min_healthy: u32,
    pub inject: Vec<Inject>,
}

fn ser_version<S: Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&version_label(*n))
}

impl Version {
    pub fn label(&self) -> String {
        version_label(self.number)
    }
}

/// Checks one upstream URL: `http://host:port` or `https://host:port` with no path,
/// query or credentials.
pub fn validate_upstream(raw: &str) -> Result<String> {
    let bad = |why: &str| DomainError::InvalidVersion {
        field: "upstreams",
        message: format!("{:?} is not a usable upstream: {why}", truncate(raw, 120)),
    };
    let uri: http::Uri = raw.parse().map_err(|_| bad("not a URL"))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => ("http", 80),
        Some("https") => ("https", 443),
        Some(_) => return Err(bad("only http:// and https:// upstreams are supported")),
        None => return Err(bad("write it as http://host:port")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("credentials in the URL are not allowed"));
    }
    if auth.host().is_empty() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(bad(
            "a path or query is not allowed; requests keep their own",
        ));
    }
    let port = auth.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(format!("{scheme}://{}:{port}", auth.host()))
}

impl VersionSpec {
    /// Validates the spec and builds version `number` of `agent`.
    pub fn build(
        self,
        agent: AgentName,
        number: u32,
        author: String,
        created_at: Millis,
    ) -> Result<Version> {
        if self.upstreams.is_empty() {
            return Err(DomainError::InvalidVersion {
                field: "upstreams",
                message: "a version needs at least one upstream".into(),
            });
        }
        if self.upstreams.len() > MAX_UPSTREAMS {
            return Err(DomainError::InvalidVersion {
                field: "upstreams",
                message: format!("at most {MAX_UPSTREAMS} upstreams per version"),
            });
        }
        let upstreams = self
            .upstreams
            .iter()
            .map(|u| validate_upstream(u))
            .collect::<Result<Vec<_>>>()?;
        let config = self
            .config
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        if !config.is_object() {
            return Err(DomainError::Invalid {
                field: "config",
                message: "config must be a JSON object".into(),
            });
        }
        let config_len = serde_json::to_vec(&config).map(|v| v.len()).unwrap_or(0);
        if config_len > MAX_CONFIG_BYTES {
            return Err(DomainError::Invalid {
                field: "config",
                message: format!("config is {config_len} bytes; the limit is {MAX_CONFIG_BYTES}"),
            });
        }
        let description = self.description.unwrap_or_default();
        if description.len() > MAX_DESCRIPTION {
            return Err(DomainError::Invalid {
                field: "description",
                message: format!("longer than {MAX_DESCRIPTION} bytes"),
            });
        }
        if let Some(h) = &self.health {
            h.check()?;
        }
        let min_healthy = self.min_healthy.unwrap_or(1);
        if min_healthy == 0 || min_healthy as usize > upstreams.len() {
            return Err(DomainError::InvalidVersion {
                field: "min_healthy",
                message: format!("from 1 to the number of upstreams ({})", upstreams.len()),
            });
        }
        let inject = Inject::check_all(self.inject)?;
        let digest = digest(
            &upstreams,
            &config,
            &description,
            self.health.as_ref(),
            min_healthy,
            &inject,
        );
        Ok(Version {
            agent,
            number,
            upstreams,
            config,
            description,
            author,
            digest,
            state: VersionState::Running,
            created_at,
            health: self.health,
            min_healthy,
            inject,
        })
    }
}

/// The content digest: SHA-256 over the canonical JSON of what the version serves.
/// serde_json's maps are ordered, so equal content gives equal digests.
/// The health rules and injections count only when set, so a version without them keeps the digest
/// it had before they existed.
pub fn digest(
    upstreams: &[String],
    config: &serde_json::Value,
    description: &str,
    health: Option<&HealthSpec>,
    min_healthy: u32,
    inject: &[Inject],
) -> String {
    let mut doc = serde_json::json!({
        "upstreams": upstreams,
        "config": config,
        "description": description,
    });
    if let Some(h) = health {
        doc["health"] = serde_json::to_value(h).unwrap_or_default();
    }
    if min_healthy != 1 {
        doc["min_healthy"] = min_healthy.into();
    }
    if !inject.is_empty() {
        doc["inject"] = serde_json::to_value(inject).unwrap_or_default();
    }
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent() -> AgentName {
        AgentName::parse("a", "bot").unwrap()
    }

    fn spec(upstreams: &[&str]) -> VersionSpec {
        VersionSpec {
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            config: Some(json!({"model": "m1"})),
            description: Some("first".into()),
            ..Default::default()
        }
    }

    #[test]
    fn builds_a_running_version_with_a_digest() {
        let v = spec(&["http://127.0.0.1:9000"])
            .build(agent(), 1, "me".into(), 5)
            .unwrap();
        assert_eq!(v.state, VersionState::Running);
        assert_eq!(v.upstreams, ["http://127.0.0.1:9000"]);
        assert!(v.digest.starts_with("sha256:") && v.digest.len() == 7 + 64);
        let same = spec(&["http://127.0.0.1:9000/"])
            .build(agent(), 2, "you".into(), 9)
            .unwrap();
        assert_eq!(v.digest, same.digest, "digest covers content only");
        let mut other = spec(&["http://127.0.0.1:9000"]);
        other.config = Some(json!({"model": "m2"}));
        assert_ne!(
            v.digest,
            other.build(agent(), 3, "me".into(), 5).unwrap().digest
        );
    }

    #[test]
    fn upstream_rules() {
        assert_eq!(
            validate_upstream("http://localhost").unwrap(),
            "http://localhost:80"
        );
        assert_eq!(
            validate_upstream("https://agent.example").unwrap(),
            "https://agent.example:443"
        );
        assert_eq!(
            validate_upstream("https://x:8443").unwrap(),
            "https://x:8443"
        );
        for bad in [
            "",
            "localhost:80",
            "https://u:p@x:1",
            "https://x:1/v1",
            "http://u:p@x:1",
            "http://x:1/path",
            "http://x:1/?q=1",
            "http://x:0",
            "ftp://x",
        ] {
            let e = validate_upstream(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    DomainError::InvalidVersion {
                        field: "upstreams",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn spec_limits() {
        assert!(spec(&[]).build(agent(), 1, "a".into(), 0).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("http://h:{}", i + 1)).collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        assert!(spec(&many).build(agent(), 1, "a".into(), 0).is_err());
        let mut s = spec(&["http://h:1"]);
        s.config = Some(json!([1]));
        assert!(matches!(
            s.build(agent(), 1, "a".into(), 0),
            Err(DomainError::Invalid {
                field: "config",
                ..
            })
        ));
    }
}
