//! Deployment tokens: minted from OS randomness, stored only as a SHA-256 hash.

use super::{ser_opt_time, ser_time, AgentName, EnvName, Millis};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The prefix every deployment token starts with, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "swy_";
/// Random bytes in a token's secret.
pub const TOKEN_BYTES: usize = 32;

/// SHA-256 of a token's full text.
pub type TokenHash = [u8; 32];

/// Hashes a presented token. One SHA-256 over ~70 bytes: the only per-request cost
/// of authentication besides one map lookup.
pub fn hash_token(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

/// A freshly minted token: the secret (shown once) and its hash (stored).
pub struct Minted {
    pub id: String,
    pub secret: String,
    pub hash: TokenHash,
}

/// Mints a deployment token from the operating system's random source.
pub fn mint() -> Result<Minted, getrandom::Error> {
    mint_with(TOKEN_PREFIX, "tok_")
}

/// Mints a secret `prefix` + 64 hex digits and an id `id_prefix` + 16 hex digits.
pub fn mint_with(prefix: &str, id_prefix: &str) -> Result<Minted, getrandom::Error> {
    let mut secret = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut secret)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)?;
    let secret = format!("{prefix}{}", hex::encode(secret));
    Ok(Minted {
        id: format!("{id_prefix}{}", hex::encode(id)),
        hash: hash_token(secret.as_bytes()),
        secret,
    })
}

/// The scopes a deployment token may be given.
pub const SCOPES: [&str; 1] = ["pin"];

/// A token as stored and listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub agent: AgentName,
    pub environment: EnvName,
    pub name: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Millis,
    #[serde(serialize_with = "ser_opt_time")]
    pub expires_at: Option<Millis>,
    #[serde(serialize_with = "ser_opt_time")]
    pub revoked_at: Option<Millis>,
    /// Suspended (answers 403 `token_suspended`) until resumed.
    #[serde(serialize_with = "ser_opt_time")]
    pub suspended_at: Option<Millis>,
    /// What the token may do beyond reaching its environment: `pin` (evaluation pins).
    pub scopes: Vec<String>,
    /// The admin identity that minted it (empty for tokens minted before this was kept).
    pub created_by: String,
    /// When it last let a request through, about: recorded at most once a minute.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_used_at: Option<Millis>,
    #[serde(skip)]
    pub hash: TokenHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_prefixed_random_and_hashed() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
        assert_eq!(a.hash, hash_token(a.secret.as_bytes()));
    }

    #[test]
    fn records_never_serialize_the_hash() {
        let m = mint().unwrap();
        let r = TokenRecord {
            created_by: String::new(),
            last_used_at: None,
            id: m.id,
            agent: AgentName::parse("a", "bot").unwrap(),
            environment: EnvName::parse("e", "staging").unwrap(),
            name: "ci".into(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            suspended_at: None,
            scopes: vec![],
            hash: m.hash,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains(&hex::encode(m.hash)));
        assert!(!json.contains("hash"));
    }
}
