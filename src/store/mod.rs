//! The durable record: agents, versions, pointers, history and tokens.
//!
//! One [`Store`] with two backends, [`sqlite`] (embedded) and [`postgres`] (a fleet).
//! A backend only supplies transactions ([`Tx`]: plain reads and writes of rows); the
//! rules live once, in
//! [`engine`], which validates each command against the state read *inside* the
//! transaction, bumps the store revision, writes the change together with its history
//! row, and returns the [`Change`]s for the routing table. The caller applies those
//! only after the commit.
//!
//! Backends are synchronous and run on tokio's blocking pool; the async API here is
//! what the admin API and the server use. The store knows nothing of HTTP.

pub mod engine;
pub mod postgres;
pub mod sqlite;

use crate::domain::{
    AdminTokenRecord, Agent, AgentName, Change, DomainError, EnvName, Millis, Move, MoveRequest,
    Pipeline, Pointer, Policy, PolicyChange, PolicyPatch, Role, Sealed, SecretAudit, SecretRecord,
    TokenHash, TokenRecord, UndoLink, Version, VersionRef, VersionSpec, VersionState,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The backend cannot be reached; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not confirm a commit it was asked for (it timed out or the
    /// connection broke during COMMIT): the write may or may not have been applied.
    #[error("store did not confirm the commit: {0}")]
    Unknown(String),
    /// The backend failed in a way that is not the caller's fault.
    #[error("store error: {0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mutation of the record.
#[derive(Debug, Clone)]
pub enum Command {
    CreateAgent {
        name: AgentName,
        description: String,
    },
    CreateVersion {
        agent: AgentName,
        spec: VersionSpec,
        author: String,
    },
    SetVersionState {
        agent: AgentName,
        version: VersionRef,
        state: VersionState,
    },
    Move(MoveRequest),
    CreateToken {
        agent: AgentName,
        environment: EnvName,
        name: String,
        expires_at: Option<Millis>,
        id: String,
        hash: TokenHash,
        scopes: Vec<String>,
        /// The admin identity minting it.
        created_by: String,
    },
    /// Suspends or resumes a deployment token (a revoked one is refused).
    SuspendToken {
        id: String,
        suspend: bool,
    },
    RevokeToken {
        id: String,
    },
    CreateAdminToken {
        id: String,
        name: String,
        role: Role,
        hash: TokenHash,
        created_by: String,
    },
    RevokeAdminToken {
        id: String,
    },
    /// Sets a secret (agent-wide without `environment`) to a value sealed by the caller.
    SetSecret {
        agent: AgentName,
        name: String,
        environment: Option<EnvName>,
        sealed: Sealed,
        actor: String,
        on_behalf_of: Option<String>,
    },
    /// Deletes a secret, unless a live version needs it.
    DeleteSecret {
        agent: AgentName,
        name: String,
        environment: Option<EnvName>,
        actor: String,
        on_behalf_of: Option<String>,
    },
    /// Merges `patch` into the policy of (agent, environment).
    SetPolicy {
        agent: AgentName,
        environment: EnvName,
        patch: PolicyPatch,
        actor: String,
    },
}

/// What a command produced, for the caller's answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    Agent(Agent),
    Version(Version),
    Move(Move),
    Token(TokenRecord),
    AdminToken(AdminTokenRecord),
    Policy(Policy),
    Secret(crate::domain::SecretInfo),
    Deleted,
}

/// A committed command: its outcome, the store revision after it, and the changes the
/// routing table must apply.
#[derive(Debug, Clone)]
pub struct Applied {
    pub outcome: Outcome,
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// Everything the data plane needs at start: every route and every token.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// The fleet-wide key that signs session pins.
    pub pin_key: Option<Vec<u8>>,
}

/// The rows a transaction can read and write. Implemented once per backend; every
/// rule is in [`engine`].
pub trait Tx {
    fn revision(&mut self) -> Result<u64>;
    /// Increments the store revision and returns the new value.
    fn bump_revision(&mut self) -> Result<u64>;

    fn agent(&mut self, name: &AgentName) -> Result<Option<Agent>>;
    fn agents(&mut self) -> Result<Vec<Agent>>;
    fn insert_agent(&mut self, agent: &Agent) -> Result<()>;
    /// Reserves the next version number of `agent` (monotonic, never reused).
    fn next_version_number(&mut self, agent: &AgentName) -> Result<u32>;

    fn version(&mut self, agent: &AgentName, number: u32) -> Result<Option<Version>>;
    fn versions(&mut self, agent: &AgentName) -> Result<Vec<Version>>;
    fn insert_version(&mut self, version: &Version) -> Result<()>;
    fn set_version_state(
        &mut self,
        agent: &AgentName,
        number: u32,
        state: VersionState,
    ) -> Result<()>;

    /// The pointer of (agent, environment); the default (empty) one if it never moved.
    fn pointer(&mut self, agent: &AgentName, env: &EnvName) -> Result<Pointer>;
    /// Every pointer that ever moved, of one agent or (None) of all agents.
    fn pointers(&mut self, agent: Option<&AgentName>)
        -> Result<Vec<(AgentName, EnvName, Pointer)>>;
    /// The undo stack stored with the history row at `revision`.
    fn undo_at(&mut self, agent: &AgentName, env: &EnvName, revision: u64) -> Result<UndoLink>;
    /// Whether `number` has ever been the live version of (agent, environment).
    fn has_served(&mut self, agent: &AgentName, env: &EnvName, number: u32) -> Result<bool>;
    /// Appends the move to history and sets the pointer, in the same transaction.
    fn record_move(&mut self, mv: &Move, pointer: &Pointer) -> Result<()>;
    /// Records that pins of `version` (0: of every version) issued before `revision`
    /// no longer hold in (agent, environment).
    fn release(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        version: u32,
        revision: u64,
    ) -> Result<()>;
    /// (version or 0, revision of its last release) of (agent, environment).
    fn releases(&mut self, agent: &AgentName, env: &EnvName) -> Result<Vec<(u32, u64)>>;
    /// The versions that served (agent, environment), most recent service first.
    fn served(&mut self, agent: &AgentName, env: &EnvName, limit: u32) -> Result<Vec<u32>>;
    /// The stored policy of (agent, environment); None: the default.
    fn policy(&mut self, agent: &AgentName, env: &EnvName) -> Result<Option<Policy>>;
    /// Stores `change.after` and appends the change to the policy history.
    fn set_policy(&mut self, change: &PolicyChange) -> Result<()>;
    /// Policy changes of (agent, environment), newest first.
    fn policy_history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
    ) -> Result<Vec<PolicyChange>>;
    /// The key that signs session pins (made when the store was first opened).
    fn pin_key(&mut self) -> Result<Option<Vec<u8>>>;
    /// History of (agent, environment), newest first, at most `limit` rows older than
    /// `before` (a revision) when given.
    fn history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<Move>>;

    fn insert_token(&mut self, token: &TokenRecord) -> Result<()>;
    fn token(&mut self, id: &str) -> Result<Option<TokenRecord>>;
    fn revoke_token(&mut self, id: &str, at: Millis) -> Result<()>;
    /// Suspends (`Some(time)`) or resumes (`None`) a token.
    fn set_token_suspended(&mut self, id: &str, at: Option<Millis>) -> Result<()>;
    /// Tokens of (agent, environment), or (None) every token.
    fn tokens(&mut self, scope: Option<(&AgentName, &EnvName)>) -> Result<Vec<TokenRecord>>;
    /// Records when tokens were last used (a later time only; no revision).
    fn touch_tokens(&mut self, used: &[(String, Millis)]) -> Result<()>;

    /// The secrets of `agent`, or (None) of every agent, sealed.
    fn secrets(&mut self, agent: Option<&AgentName>) -> Result<Vec<SecretRecord>>;
    /// Inserts or replaces one secret.
    fn put_secret(&mut self, secret: &SecretRecord) -> Result<()>;
    /// Deletes one secret; whether it existed.
    fn delete_secret(
        &mut self,
        agent: &AgentName,
        name: &str,
        env: Option<&EnvName>,
    ) -> Result<bool>;
    fn audit_secret(&mut self, agent: &AgentName, entry: &SecretAudit) -> Result<()>;
    /// Secret writes of `agent`, newest first.
    fn secret_audit(&mut self, agent: &AgentName, limit: u32) -> Result<Vec<SecretAudit>>;

    fn insert_admin_token(&mut self, token: &AdminTokenRecord) -> Result<()>;
    fn admin_token(&mut self, id: &str) -> Result<Option<AdminTokenRecord>>;
    fn admin_token_by_hash(&mut self, hash: &TokenHash) -> Result<Option<AdminTokenRecord>>;
    fn admin_tokens(&mut self) -> Result<Vec<AdminTokenRecord>>;
    fn revoke_admin_token(&mut self, id: &str, at: Millis) -> Result<()>;

    /// Records what a committed command changed, at `at` (the writer's clock), for
    /// other nodes to pick up (and tells them). A single-node backend has no one to
    /// tell.
    fn record_changes(&mut self, _revision: u64, _changes: &[Change], _at: Millis) -> Result<()> {
        Ok(())
    }

    /// The change events after `revision`, oldest first, at most `limit`.
    fn events_since(&mut self, _revision: u64, _limit: u32) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    /// The highest revision pruned from the change feed: a node whose cursor is below
    /// it cannot catch up from the feed and must reload the whole state.
    fn feed_floor(&mut self) -> Result<u64> {
        Ok(0)
    }

    /// Drops the change events committed before `before`; returns the new floor.
    fn prune_feed(&mut self, _before: Millis) -> Result<u64> {
        Ok(0)
    }
}

/// What reading the change feed after a cursor gives.
#[derive(Debug, Clone)]
pub enum FeedRead {
    /// The changes after the cursor (the current state of each changed key), the
    /// revision they bring the reader to, and the commit time of each event read.
    Changes {
        changes: Vec<Change>,
        last: u64,
        committed_at: Vec<Millis>,
    },
    /// The cursor is below the feed's floor: the events it needs were pruned.
    Pruned { floor: u64 },
}

/// One entry of the change feed: what changed at a revision (the current state is
/// read when the event is applied, so applying is idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub key: EventKey,
    /// When it was committed (the writing node's clock), ms.
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKey {
    Route {
        agent: AgentName,
        environment: EnvName,
    },
    Token {
        id: String,
    },
}

/// A body of work run inside one transaction. Called again if the backend retries.
pub type TxFn<'a> = dyn FnMut(&mut dyn Tx) -> Result<()> + 'a;

/// A durable backend: runs closures in transactions.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` in a write transaction and commits when it returns Ok; rolls back
    /// otherwise.
    fn write(&self, f: &mut TxFn<'_>) -> Result<()>;
    /// Runs `f` against a consistent read view.
    fn read(&self, f: &mut TxFn<'_>) -> Result<()>;
}

/// The store the rest of the gateway talks to.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    pipeline: Arc<Pipeline>,
    up: Arc<AtomicBool>,
    url: Option<String>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, pipeline: Arc<Pipeline>) -> Self {
        Self {
            backend,
            pipeline,
            up: Arc::new(AtomicBool::new(true)),
            url: None,
        }
    }

    /// Opens the store a URL names: `sqlite://PATH` or `postgres://…`. Must be
    /// called inside a tokio runtime for PostgreSQL.
    pub fn open(url: &str, pipeline: Arc<Pipeline>) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let backend = sqlite::SqliteBackend::open(path)?;
            return Ok(Self::new(Arc::new(backend), pipeline));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let backend = postgres::PostgresBackend::new(url)?;
            let mut store = Self::new(Arc::new(backend), pipeline);
            store.url = Some(url.to_owned());
            return Ok(store);
        }
        Err(Error::Unavailable(format!(
            "unsupported store URL {:?}: use sqlite://PATH or postgres://…",
            crate::domain::names::truncate(url, 80)
        )))
    }

    /// The PostgreSQL URL when this store is shared by a fleet.
    pub fn fleet_url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Whether the last store operation reached the backend.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    async fn blocking<T: Send + 'static>(
        &self,
        write: bool,
        mut f: impl FnMut(&mut dyn Tx, &Pipeline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let backend = Arc::clone(&self.backend);
        let pipeline = Arc::clone(&self.pipeline);
        let up = Arc::clone(&self.up);
        let result = tokio::task::spawn_blocking(move || {
            let mut out = None;
            let mut body = |tx: &mut dyn Tx| {
                out = Some(f(tx, &pipeline)?);
                Ok(())
            };
            if write {
                backend.write(&mut body)?;
            } else {
                backend.read(&mut body)?;
            }
            out.ok_or_else(|| Error::Backend("transaction produced no result".into()))
        })
        .await
        .map_err(|e| Error::Backend(format!("store task failed: {e}")))?;
        let reachable = !matches!(result, Err(Error::Unavailable(_) | Error::Unknown(_)));
        if up.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!("store reachable again");
            } else {
                tracing::error!("store unreachable; serving the last known state");
            }
        }
        result
    }

    /// Validates and commits one command.
    /// What a move would do, read without writing ([`engine::plan_move`]).
    pub async fn plan_move(&self, req: crate::domain::MoveRequest) -> Result<engine::MovePlan> {
        self.blocking(false, move |tx, p| engine::plan_move(tx, p, &req))
            .await
    }

    pub async fn execute(&self, cmd: Command) -> Result<Applied> {
        self.blocking(true, move |tx, p| {
            let now = crate::domain::now_ms();
            let applied = engine::execute(tx, p, cmd.clone(), now)?;
            tx.record_changes(applied.revision, &applied.changes, now)?;
            Ok(applied)
        })
        .await
    }

    /// What changed after `revision`, as changes for the routing table (the current
    /// state of each changed key), or that the feed no longer reaches back that far.
    pub async fn changes_since(&self, revision: u64) -> Result<FeedRead> {
        self.blocking(false, move |tx, p| engine::changes_since(tx, p, revision))
            .await
    }

    /// Drops change events older than `retention`; returns the feed's floor.
    pub async fn prune_feed(&self, retention: std::time::Duration) -> Result<u64> {
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.blocking(true, move |tx, _| {
            tx.prune_feed(crate::domain::now_ms().saturating_sub(keep))
        })
        .await
    }

    /// Every route and token, for loading the routing table.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.blocking(false, engine::snapshot).await
    }

    pub async fn revision(&self) -> Result<u64> {
        self.blocking(false, |tx, _| tx.revision()).await
    }

    pub async fn agents(&self) -> Result<Vec<Agent>> {
        self.blocking(false, |tx, _| tx.agents()).await
    }

    /// An agent and the pointer of each environment of the pipeline.
    pub async fn deployment(&self, agent: AgentName) -> Result<engine::Deployment> {
        self.blocking(false, move |tx, p| engine::deployment(tx, p, &agent))
            .await
    }

    pub async fn versions(&self, agent: AgentName) -> Result<Vec<Version>> {
        self.blocking(false, move |tx, _| {
            engine::require_agent(tx, &agent)?;
            tx.versions(&agent)
        })
        .await
    }

    pub async fn version(&self, agent: AgentName, version: VersionRef) -> Result<Version> {
        self.blocking(false, move |tx, _| {
            engine::require_version(tx, &agent, &version)
        })
        .await
    }

    pub async fn history(
        &self,
        agent: AgentName,
        env: EnvName,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<Move>> {
        self.blocking(false, move |tx, p| {
            engine::require_agent(tx, &agent)?;
            p.get(env.as_str())?;
            tx.history(&agent, &env, limit, before)
        })
        .await
    }

    /// The named admin token with this hash, unless it was revoked.
    pub async fn admin_identity(&self, hash: TokenHash) -> Result<Option<AdminTokenRecord>> {
        self.blocking(false, move |tx, _| {
            Ok(tx
                .admin_token_by_hash(&hash)?
                .filter(|t| t.revoked_at.is_none()))
        })
        .await
    }

    pub async fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>> {
        self.blocking(false, |tx, _| tx.admin_tokens()).await
    }

    /// The policy of (agent, environment), the default when none was set.
    pub async fn policy(&self, agent: AgentName, env: EnvName) -> Result<Policy> {
        self.blocking(false, move |tx, p| {
            engine::require_agent(tx, &agent)?;
            p.get(env.as_str())?;
            Ok(tx.policy(&agent, &env)?.unwrap_or_default())
        })
        .await
    }

    pub async fn policy_history(
        &self,
        agent: AgentName,
        env: EnvName,
        limit: u32,
    ) -> Result<Vec<PolicyChange>> {
        self.blocking(false, move |tx, p| {
            engine::require_agent(tx, &agent)?;
            p.get(env.as_str())?;
            tx.policy_history(&agent, &env, limit)
        })
        .await
    }

    /// The secrets of `agent` (sealed: the caller shows names and scopes only).
    pub async fn secrets(&self, agent: AgentName) -> Result<Vec<SecretRecord>> {
        self.blocking(false, move |tx, _| {
            engine::require_agent(tx, &agent)?;
            tx.secrets(Some(&agent))
        })
        .await
    }

    pub async fn secret_audit(&self, agent: AgentName, limit: u32) -> Result<Vec<SecretAudit>> {
        self.blocking(false, move |tx, _| {
            engine::require_agent(tx, &agent)?;
            tx.secret_audit(&agent, limit)
        })
        .await
    }

    /// The key ids every stored secret is sealed with, once each.
    pub async fn secret_key_ids(&self) -> Result<Vec<String>> {
        self.blocking(false, |tx, _| {
            let mut ids: Vec<String> = tx
                .secrets(None)?
                .into_iter()
                .map(|s| s.sealed.key_id)
                .collect();
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
        .await
    }

    /// Records when tokens were last used; no revision, no change event.
    pub async fn touch_tokens(&self, used: Vec<(String, Millis)>) -> Result<()> {
        self.blocking(true, move |tx, _| tx.touch_tokens(&used))
            .await
    }

    pub async fn tokens(&self, agent: AgentName, env: EnvName) -> Result<Vec<TokenRecord>> {
        self.blocking(false, move |tx, p| {
            engine::require_agent(tx, &agent)?;
            p.get(env.as_str())?;
            tx.tokens(Some((&agent, &env)))
        })
        .await
    }
}

/// 32 random bytes for the pin-signing key.
fn new_pin_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::Backend(format!("no randomness: {e}")))?;
    Ok(key)
}

/// A token's scopes as both stores keep them: comma-separated.
fn scopes_from(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A pointer's canary as both stores keep it: JSON, or NULL without one.
fn canary_json(p: &Pointer) -> Result<Option<String>> {
    p.canary
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Backend(e.to_string()))
}

/// A version's injections as both stores keep them: JSON, or NULL without any.
fn inject_json(v: &crate::domain::Version) -> Result<Option<String>> {
    if v.inject.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&v.inject)
        .map(Some)
        .map_err(|e| Error::Backend(e.to_string()))
}

fn inject_from(s: Option<&str>) -> serde_json::Result<Vec<crate::domain::Inject>> {
    s.map_or(Ok(Vec::new()), serde_json::from_str)
}

/// A version's health check as both stores keep it: JSON, or NULL without one.
fn health_json(v: &crate::domain::Version) -> Result<Option<String>> {
    v.health
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Backend(e.to_string()))
}
