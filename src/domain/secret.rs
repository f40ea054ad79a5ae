//! Secrets: named values an agent's versions get injected as request headers at the
//! edge, agent-wide or for one environment (which wins there).
//!
//! The domain sees only sealed values ([`Sealed`]): the admin API seals a value with
//! the node's key before it reaches the store, and the routing table opens it when it
//! builds a route. Nothing here can print a value: [`Sealed`]'s `Debug` shows its key
//! id and length only.

use super::names::truncate;
use super::{ser_time, AgentName, DomainError, EnvName, Millis, Result};
use serde::{Deserialize, Serialize};

/// Longest secret value accepted, in bytes.
pub const MAX_VALUE: usize = 8 * 1024;
/// Most headers one version may have injected.
pub const MAX_INJECT: usize = 16;
/// Longest `format` of an injection, in bytes.
const MAX_FORMAT: usize = 256;

/// Checks a secret name: `[A-Z][A-Z0-9_]{0,63}`.
pub fn check_name(field: &'static str, s: &str) -> Result<()> {
    let mut bytes = s.bytes();
    let ok = s.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            field,
            message: format!(
                "{:?} is not a secret name: an upper-case letter, then up to 63 of A-Z, 0-9 and _",
                truncate(s, 80)
            ),
        })
    }
}

/// Checks a value before it is sealed: what any header may carry (no CR, LF, NUL or
/// other control byte but tab), not empty, at most [`MAX_VALUE`] bytes. The message
/// never quotes the value.
pub fn check_value(value: &str) -> Result<()> {
    let bad = |message: &str| DomainError::Invalid {
        field: "value",
        message: message.into(),
    };
    if value.is_empty() {
        return Err(bad("a secret value cannot be empty"));
    }
    if value.len() > MAX_VALUE {
        return Err(bad("longer than 8192 bytes"));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad(
            "contains a control character (CR, LF, NUL …): it could not be sent as a header",
        ));
    }
    Ok(())
}

/// Fields the gateway sets or removes itself, and framing fields: never injected.
const RESERVED: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// One header a version has set from a secret on every request to its upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    /// The header's name (lower-cased when the version is created).
    pub header: String,
    /// The secret's name.
    pub secret: String,
    /// The header value with `{}` where the secret goes (default `{}`).
    #[serde(default = "Inject::plain")]
    pub format: String,
}

impl Inject {
    fn plain() -> String {
        "{}".into()
    }

    /// The header value for `value`.
    pub fn render(&self, value: &str) -> String {
        self.format.replacen("{}", value, 1)
    }

    /// Validates and normalizes a version's injection list.
    pub fn check_all(list: Vec<Inject>) -> Result<Vec<Inject>> {
        let bad = |message: String| DomainError::InvalidVersion {
            field: "inject",
            message,
        };
        if list.len() > MAX_INJECT {
            return Err(bad(format!("at most {MAX_INJECT} headers")));
        }
        let mut out: Vec<Inject> = Vec::with_capacity(list.len());
        for mut i in list {
            i.header = i.header.to_ascii_lowercase();
            if http::HeaderName::from_bytes(i.header.as_bytes()).is_err() {
                return Err(bad(format!(
                    "{:?} is not a header name",
                    truncate(&i.header, 80)
                )));
            }
            if RESERVED.contains(&i.header.as_str()) || i.header.starts_with("x-switchyard-") {
                return Err(bad(format!(
                    "{} is set by the gateway or frames the request; it cannot be injected",
                    i.header
                )));
            }
            if out.iter().any(|o| o.header == i.header) {
                return Err(bad(format!("{} is injected twice", i.header)));
            }
            check_name("inject", &i.secret).map_err(|e| bad(e.to_string()))?;
            let valid_text = i.format.len() <= MAX_FORMAT
                && i.format.matches("{}").count() == 1
                && i.format
                    .bytes()
                    .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t');
            if !valid_text {
                return Err(bad(format!(
                    "format {:?}: printable text with exactly one {{}} for the value",
                    truncate(&i.format, 80)
                )));
            }
            out.push(i);
        }
        Ok(out)
    }
}

/// A value as it is kept: AES-256-GCM under the key `key_id` names, with the nonce
/// of its write. The additional data binds it to its agent, scope and name, so a
/// sealed value copied to another row does not open.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealed({}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

/// The additional data a value is sealed with: `agent\0environment-or-*\0name`.
pub fn binding(agent: &AgentName, environment: Option<&EnvName>, name: &str) -> Vec<u8> {
    let env = environment.map_or("*", |e| e.as_str());
    format!("{agent}\0{env}\0{name}").into_bytes()
}

/// One stored secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub agent: AgentName,
    pub name: String,
    /// None: agent-wide.
    pub environment: Option<EnvName>,
    pub sealed: Sealed,
    pub updated_at: Millis,
    pub updated_by: String,
}

impl SecretRecord {
    /// What the API shows of it: never the value.
    pub fn info(&self) -> SecretInfo {
        SecretInfo {
            name: self.name.clone(),
            environment: self.environment.clone(),
            updated_at: self.updated_at,
        }
    }
}

/// A secret as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub environment: Option<EnvName>,
    #[serde(serialize_with = "ser_time")]
    pub updated_at: Millis,
}

/// What a secret write did, kept for the audit (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretAudit {
    pub revision: u64,
    pub name: String,
    pub environment: Option<EnvName>,
    /// `set` or `delete`.
    pub action: String,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub at: Millis,
}

/// The value of each name for `environment`: its own, else the agent-wide one.
pub fn resolve<'a>(
    secrets: &'a [SecretRecord],
    environment: &EnvName,
) -> std::collections::BTreeMap<&'a str, &'a SecretRecord> {
    let mut out = std::collections::BTreeMap::new();
    for s in secrets.iter().filter(|s| s.environment.is_none()) {
        out.insert(s.name.as_str(), s);
    }
    for s in secrets
        .iter()
        .filter(|s| s.environment.as_ref() == Some(environment))
    {
        out.insert(s.name.as_str(), s);
    }
    out
}

/// The secrets `inject` names that `available` lacks, sorted, once each.
pub fn missing<'a>(inject: &'a [Inject], available: &[&str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = inject
        .iter()
        .map(|i| i.secret.as_str())
        .filter(|n| !available.contains(n))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inj(header: &str, secret: &str, format: &str) -> Inject {
        Inject {
            header: header.into(),
            secret: secret.into(),
            format: format.into(),
        }
    }

    #[test]
    fn names() {
        for ok in ["A", "OPENAI_API_KEY", "K9", &format!("A{}", "B".repeat(63))] {
            assert!(check_name("name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "1A",
            "_A",
            "A-B",
            "Aé",
            &format!("A{}", "B".repeat(64)),
        ] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_that_could_not_be_a_header_are_refused_without_being_quoted() {
        assert!(check_value("sk-live-1234\tx").is_ok());
        for bad in ["", "a\r\nx-evil: 1", "a\nb", "a\0b", "a\x7fb"] {
            let e = check_value(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
        assert!(check_value(&"x".repeat(MAX_VALUE + 1)).is_err());
    }

    #[test]
    fn injection_lists() {
        let l = Inject::check_all(vec![inj("Authorization", "KEY", "Bearer {}")]).unwrap();
        assert_eq!(l[0].header, "authorization");
        assert_eq!(l[0].render("abc"), "Bearer abc");
        for bad in [
            inj("host", "KEY", "{}"),
            inj("x-switchyard-version", "KEY", "{}"),
            inj("bad header", "KEY", "{}"),
            inj("x-key", "key", "{}"),
            inj("x-key", "KEY", "no placeholder"),
            inj("x-key", "KEY", "{} and {}"),
            inj("x-key", "KEY", "a\r\n{}"),
        ] {
            assert!(Inject::check_all(vec![bad.clone()]).is_err(), "{bad:?}");
        }
        assert!(Inject::check_all(vec![inj("x-a", "A", "{}"), inj("X-A", "B", "{}")]).is_err());
    }

    #[test]
    fn the_environment_value_wins() {
        let agent = AgentName::parse("a", "bot").unwrap();
        let prod = EnvName::parse("e", "production").unwrap();
        let rec = |name: &str, env: Option<&EnvName>, tag: u8| SecretRecord {
            agent: agent.clone(),
            name: name.into(),
            environment: env.cloned(),
            sealed: Sealed {
                key_id: "k".into(),
                nonce: vec![tag],
                ciphertext: vec![],
            },
            updated_at: 0,
            updated_by: "t".into(),
        };
        let staging = EnvName::parse("e", "staging").unwrap();
        let all = [
            rec("K", Some(&prod), 1),
            rec("K", None, 2),
            rec("J", Some(&staging), 3),
        ];
        let r = resolve(&all, &prod);
        assert_eq!(r["K"].sealed.nonce, vec![1]);
        assert!(!r.contains_key("J"));
        let names: Vec<&str> = r.keys().copied().collect();
        let need = [
            inj("x-a", "K", "{}"),
            inj("x-b", "J", "{}"),
            inj("x-c", "J", "{}"),
        ];
        assert_eq!(missing(&need, &names), vec!["J"]);
        assert_eq!(resolve(&all, &staging)["K"].sealed.nonce, vec![2]);
    }
}
