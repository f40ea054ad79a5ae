//! Tokens a worker has already verified, so a request with a known token skips SHA-256.
//!
//! Authenticating a presented token means hashing it with SHA-256 (what the store keeps)
//! and looking the digest up. SHA-256 of ~70 bytes is the largest single cost of a
//! proxied request when the CPU has no SHA extensions (about 6,800 instructions of
//! ~41,000). This cache maps a keyed 128-bit SipHash-2-4 of the presented text — a PRF
//! whose key is drawn at random per routing table and never leaves the process — to
//! the token's entry, once SHA-256 found it. Finding a different text with the same
//! SipHash output without the key means guessing 128 bits, one request per guess.
//!
//! What it never changes:
//! * Revocation and expiry are read from the entry on every request; a token record
//!   replaced in the table (revoked, re-applied by a fleet reload) marks the old entry
//!   stale, and a stale hit goes back to SHA-256 and the table.
//! * Only tokens found in the table are cached: an unknown token costs SHA-256 each
//!   time and cannot fill or flush the cache.
//! * The presented text is not kept: the cache holds the SipHash output.
//!
//! One cache per thread (a worker runtime is one thread), so a lookup takes no lock
//! and writes no shared memory; it belongs to one table at a time (tests run several
//! gateways in one process).

use super::{AuthError, DigestHasher, RoutingTable, Slot, TokenEntry};
use crate::domain::token::hash_token;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Entries per worker before the cache is emptied and refilled from the table.
pub const CAPACITY: usize = 4096;

/// A routing table's identity and SipHash key.
#[derive(Debug)]
pub(super) struct CacheKey {
    id: u64,
    sip: SipHasher24,
}

impl CacheKey {
    pub(super) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // no OS randomness: std's hash keys are seeded from it per thread, and
            // a table without a secret key is worse than one keyed from there
            let seed = std::collections::hash_map::RandomState::new();
            key[..8].copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 1u8).to_le_bytes());
            key[8..].copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 2u8).to_le_bytes());
        }
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            sip: SipHasher24::new_with_key(&key),
        }
    }

    fn of(&self, token: &[u8]) -> u128 {
        let mut h = self.sip;
        h.write(token);
        h.finish128().into()
    }
}

/// A SipHash output is uniform: its low bits are the map's hash.
type U128Map<V> = HashMap<u128, V, BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
struct Cache {
    /// The table the entries belong to (`CacheKey::id`); 0 before first use.
    owner: u64,
    entries: U128Map<Arc<TokenEntry>>,
}

thread_local! {
    static VERIFIED: RefCell<Cache> = RefCell::new(Cache::default());
}

impl RoutingTable {
    /// Authenticates a presented token and returns its slot: from this thread's cache
    /// when the token was verified here before, else through SHA-256 and the table.
    pub fn authenticate_token(&self, token: &[u8]) -> Result<Arc<Slot>, AuthError> {
        let key = self.cache_key.of(token);
        let hit = VERIFIED.try_with(|c| {
            let c = c.borrow();
            match c.entries.get(&key) {
                Some(e) if c.owner == self.cache_key.id && !e.stale.load(Ordering::Acquire) => {
                    let answer = e.check();
                    if answer.is_ok() {
                        self.note_use(e);
                    }
                    Some(answer)
                }
                _ => None,
            }
        });
        if let Ok(Some(answer)) = hit {
            return answer;
        }
        let entry = self
            .token_entry(&hash_token(token))
            .ok_or(AuthError::Unknown)?;
        let answer = entry.check();
        if answer.is_ok() {
            self.note_use(&entry);
        }
        let _ = VERIFIED.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.owner != self.cache_key.id || c.entries.len() >= CAPACITY {
                c.entries.clear();
                c.owner = self.cache_key.id;
            }
            c.entries.insert(key, entry);
        });
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{now_ms, AgentName, Change, EnvName, TokenRecord};

    fn record(secret: &str) -> TokenRecord {
        TokenRecord {
            created_by: String::new(),
            last_used_at: None,
            id: format!("tok_{secret}"),
            agent: AgentName::parse("a", "bot").unwrap(),
            environment: EnvName::parse("e", "staging").unwrap(),
            name: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            suspended_at: None,
            scopes: vec![],
            hash: hash_token(secret.as_bytes()),
        }
    }

    fn cached(t: &RoutingTable, secret: &str) -> bool {
        let key = t.cache_key.of(secret.as_bytes());
        VERIFIED.with(|c| {
            let c = c.borrow();
            c.owner == t.cache_key.id && c.entries.contains_key(&key)
        })
    }

    #[test]
    fn a_cached_token_is_still_revoked_and_expired_at_once() {
        let t = RoutingTable::new();
        let mut tok = record("s1");
        t.apply(&Change::Token(tok.clone()));
        assert!(t.authenticate_token(b"s1").is_ok());
        assert!(cached(&t, "s1"), "verified once, cached");
        assert!(
            t.authenticate_token(b"s1").is_ok(),
            "and served from the cache"
        );
        tok.revoked_at = Some(1);
        t.apply(&Change::Token(tok.clone()));
        assert_eq!(t.authenticate_token(b"s1").unwrap_err(), AuthError::Revoked);
        assert_eq!(t.authenticate_token(b"s1").unwrap_err(), AuthError::Revoked);
        let mut soon = record("s2");
        soon.expires_at = Some(now_ms() + 150);
        t.apply(&Change::Token(soon));
        assert!(t.authenticate_token(b"s2").is_ok());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(t.authenticate_token(b"s2").unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn unknown_tokens_are_never_cached_and_tables_do_not_share_entries() {
        let a = RoutingTable::new();
        let b = RoutingTable::new();
        a.apply(&Change::Token(record("only-in-a")));
        assert!(a.authenticate_token(b"only-in-a").is_ok());
        assert_eq!(
            a.authenticate_token(b"nope").unwrap_err(),
            AuthError::Unknown
        );
        assert!(!cached(&a, "nope"));
        // the same text on another table is checked against that table
        assert_eq!(
            b.authenticate_token(b"only-in-a").unwrap_err(),
            AuthError::Unknown
        );
        assert_ne!(a.cache_key.of(b"x"), b.cache_key.of(b"x"), "keys differ");
    }

    #[test]
    fn the_cache_is_bounded() {
        let t = RoutingTable::new();
        for i in 0..CAPACITY + 10 {
            let s = format!("s{i}");
            t.apply(&Change::Token(record(&s)));
            assert!(t.authenticate_token(s.as_bytes()).is_ok());
        }
        let n = VERIFIED.with(|c| c.borrow().entries.len());
        assert!(n <= CAPACITY, "{n} entries");
        assert!(
            t.authenticate_token(b"s0").is_ok(),
            "evicted ones verify again"
        );
    }
}
