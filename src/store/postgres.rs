//! The fleet backend: PostgreSQL, shared by every gateway node.
//!
//! Writes are serialized across the whole fleet by a row lock on the revision counter
//! (`SELECT … FOR UPDATE` first thing in every write transaction), so revisions commit
//! in order and the expected-revision check cannot race. Each write also appends its
//! keys to `events` and sends `NOTIFY switchyard_changes` (delivered on commit); nodes
//! follow that feed (see `crate::fleet`).
//!
//! Locks: one `std::sync::Mutex` around the node's single control-plane connection,
//! held on a blocking-pool thread for one transaction. The data plane never touches
//! this module. A lost connection is dropped and reopened on the next call; while the
//! database is unreachable every call fails fast with `Error::Unavailable`.

use super::{Backend, Error, Event, EventKey, Result, Tx, TxFn};
use crate::domain::{
    Action, AdminTokenRecord, Agent, AgentName, Change, EnvName, Millis, Move, Pointer, Policy,
    PolicyChange, Role, Sealed, SecretAudit, SecretRecord, TokenHash, TokenRecord, UndoLink,
    Version, VersionState,
};
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, NoTls, Row};

/// The channel nodes listen on; the payload is the committed revision.
pub const CHANNEL: &str = "switchyard_changes";
/// Longest a connect or a statement may take before the store counts as unreachable.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Serializes schema migrations of nodes that start together.
const MIGRATION_LOCK: i64 = 0x5357_5944; // "SWYD"

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', 0), ('schema', 1) ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS agents (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS versions (
    agent       TEXT NOT NULL REFERENCES agents (name),
    number      BIGINT NOT NULL,
    upstreams   TEXT NOT NULL,
    config      TEXT NOT NULL,
    description TEXT NOT NULL,
    author      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (agent, number)
);
CREATE TABLE IF NOT EXISTS pointers (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    version     BIGINT,
    since       BIGINT NOT NULL,
    revision    BIGINT NOT NULL,
    undo_depth  BIGINT NOT NULL,
    undo_top    BIGINT NOT NULL,
    undo_next   BIGINT NOT NULL,
    PRIMARY KEY (agent, environment)
);
CREATE TABLE IF NOT EXISTS history (
    revision       BIGINT PRIMARY KEY,
    agent          TEXT NOT NULL REFERENCES agents (name),
    environment    TEXT NOT NULL,
    action         TEXT NOT NULL,
    version        BIGINT,
    previous       BIGINT,
    previous_since BIGINT,
    actor          TEXT NOT NULL,
    reason         TEXT,
    at             BIGINT NOT NULL,
    undo_depth     BIGINT NOT NULL,
    undo_top       BIGINT NOT NULL,
    undo_next      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_env ON history (agent, environment, revision);
CREATE INDEX IF NOT EXISTS history_by_version ON history (agent, environment, version);
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    hash        BYTEA NOT NULL UNIQUE,
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX IF NOT EXISTS tokens_by_env ON tokens (agent, environment);
CREATE TABLE IF NOT EXISTS admin_tokens (
    id          TEXT PRIMARY KEY,
    hash        BYTEA NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
-- columns added after a table was first made: altered only when missing, so a node
-- starting beside running ones takes no table lock (ALTER TABLE takes an exclusive
-- one even when IF NOT EXISTS finds the column, and could deadlock with their writes)
DO $$
DECLARE
    c RECORD;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('history', 'on_behalf_of', 'TEXT'),
        ('history', 'forced', 'BOOLEAN NOT NULL DEFAULT false'),
        ('versions', 'health', 'TEXT'),
        ('versions', 'min_healthy', 'BIGINT NOT NULL DEFAULT 1'),
        ('tokens', 'suspended_at', 'BIGINT'),
        ('tokens', 'scopes', 'TEXT NOT NULL DEFAULT ' || quote_literal('')),
        ('pointers', 'canary', 'TEXT'),
        ('history', 'weight', 'BIGINT'),
        ('versions', 'inject', 'TEXT'),
        ('tokens', 'created_by', 'TEXT NOT NULL DEFAULT ' || quote_literal('')),
        ('tokens', 'last_used_at', 'BIGINT')
    ) AS t (tab, col, ty) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = c.tab AND column_name = c.col
        ) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', c.tab, c.col, c.ty);
        END IF;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS events (
    revision    BIGINT NOT NULL,
    seq         INT NOT NULL,
    kind        TEXT NOT NULL,
    agent       TEXT,
    environment TEXT,
    token_id    TEXT,
    PRIMARY KEY (revision, seq)
);
ALTER TABLE events ADD COLUMN IF NOT EXISTS committed_at BIGINT NOT NULL DEFAULT 0;
INSERT INTO meta (key, value) VALUES ('feed_floor', 0) ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS releases (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    version     BIGINT NOT NULL,
    revision    BIGINT NOT NULL,
    PRIMARY KEY (agent, environment, version)
);
CREATE TABLE IF NOT EXISTS policies (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    policy      TEXT NOT NULL,
    PRIMARY KEY (agent, environment)
);
CREATE TABLE IF NOT EXISTS policy_history (
    revision    BIGINT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          BIGINT NOT NULL,
    before      TEXT NOT NULL,
    after       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_history_by_env ON policy_history (agent, environment, revision);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    agent       TEXT NOT NULL REFERENCES agents (name),
    name        TEXT NOT NULL,
    environment TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (agent, name, environment)
);
CREATE TABLE IF NOT EXISTS secret_audit (
    revision     BIGINT PRIMARY KEY,
    agent        TEXT NOT NULL REFERENCES agents (name),
    name         TEXT NOT NULL,
    environment  TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    on_behalf_of TEXT,
    at           BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS secret_audit_by_agent ON secret_audit (agent, revision);
"#;

fn pg(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        Error::Backend(db.to_string())
    } else {
        Error::Unavailable(e.to_string())
    }
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Backend(format!("stored {what} is invalid: {detail}"))
}

pub struct PostgresBackend {
    config: tokio_postgres::Config,
    handle: tokio::runtime::Handle,
    client: Mutex<Option<Client>>,
}

/// Runs a database future from a blocking-pool thread, bounded by [`IO_TIMEOUT`].
fn wait<T>(
    handle: &tokio::runtime::Handle,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    match handle.block_on(tokio::time::timeout(IO_TIMEOUT, f)) {
        Ok(r) => r.map_err(pg),
        Err(_) => Err(Error::Unavailable(format!(
            "no answer within {} s",
            IO_TIMEOUT.as_secs()
        ))),
    }
}

/// Parses a `postgres://` URL, naming the setting on failure.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Unavailable(format!("store URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("switchyard");
    }
    config.connect_timeout(IO_TIMEOUT);
    Ok(config)
}

/// Opens one connection and drives it on the runtime.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, conn) = tokio::time::timeout(IO_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| Error::Unavailable("connect timed out".into()))?
        .map_err(pg)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error.detail = %e, "store connection ended");
        }
    });
    Ok(client)
}

impl PostgresBackend {
    /// Prepares the backend; connects lazily (so a node can start while the
    /// database is away). Must be called inside a tokio runtime.
    pub fn new(url: &str) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Backend("the PostgreSQL store needs a tokio runtime".into()))?;
        Ok(Self {
            config: parse_url(url)?,
            handle,
            client: Mutex::new(None),
        })
    }

    fn connected<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            let config = self.config.clone();
            let mut client = self
                .handle
                .block_on(async move { connect(&config).await })?;
            migrate(&self.handle, &mut client)?;
            *slot = Some(client);
        }
        slot.as_mut()
            .ok_or_else(|| Error::Unavailable("no connection".into()))
    }

    fn run(&self, write: bool, f: &mut TxFn<'_>) -> Result<()> {
        let mut slot = self
            .client
            .lock()
            .map_err(|_| Error::Backend("connection lock poisoned".into()))?;
        let result = self.connected(&mut slot).and_then(|client| {
            let h = &self.handle;
            let tx = wait(
                h,
                client
                    .build_transaction()
                    .isolation_level(if write {
                        IsolationLevel::ReadCommitted
                    } else {
                        IsolationLevel::RepeatableRead
                    })
                    .read_only(!write)
                    .start(),
            )?;
            if write {
                // one writer at a time across the fleet: revisions commit in order
                wait(
                    h,
                    tx.execute(
                        "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE",
                        &[],
                    ),
                )?;
            }
            f(&mut PgTx { tx: &tx, h })?;
            if write {
                // a COMMIT that times out or loses its connection may still have been
                // applied: say so, never "nothing was changed"
                wait(h, tx.commit()).map_err(|e| match e {
                    Error::Unavailable(detail) => Error::Unknown(detail),
                    other => other,
                })
            } else {
                wait(h, tx.rollback())
            }
        });
        if matches!(result, Err(Error::Unavailable(_) | Error::Unknown(_))) {
            *slot = None;
        }
        result
    }
}

/// Creates or upgrades the schema; safe when several nodes start at once.
fn migrate(h: &tokio::runtime::Handle, client: &mut Client) -> Result<()> {
    let tx = wait(h, client.transaction())?;
    wait(
        h,
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]),
    )?;
    wait(h, tx.batch_execute(SCHEMA))?;
    let key = super::new_pin_key()?;
    wait(
        h,
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('pin_key', $1) ON CONFLICT (key) DO NOTHING",
            &[&&key[..]],
        ),
    )?;
    wait(h, tx.commit())
}

impl Backend for PostgresBackend {
    fn write(&self, f: &mut TxFn<'_>) -> Result<()> {
        self.run(true, f)
    }

    fn read(&self, f: &mut TxFn<'_>) -> Result<()> {
        self.run(false, f)
    }
}

struct PgTx<'a> {
    tx: &'a tokio_postgres::Transaction<'a>,
    h: &'a tokio::runtime::Handle,
}

fn agent_name(s: String) -> Result<AgentName> {
    AgentName::parse("agent", &s).map_err(|e| corrupt("agent name", e))
}

fn env_name(s: String) -> Result<EnvName> {
    EnvName::parse("environment", &s).map_err(|e| corrupt("environment name", e))
}

/// A secret's scope as the table keeps it: the environment, or `''` for agent-wide.
fn scope_of(env: Option<&EnvName>) -> &str {
    env.map_or("", |e| e.as_str())
}

fn scope_from(s: String) -> Result<Option<EnvName>> {
    if s.is_empty() {
        Ok(None)
    } else {
        env_name(s).map(Some)
    }
}

fn u32_of(v: Option<i64>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| corrupt("row", e))
}

const VERSION_COLS: &str =
    "agent, number, upstreams, config, description, author, digest, state, created_at, health, min_healthy, inject";

fn version_from(r: &Row) -> Result<Version> {
    let state: String = get(r, 7)?;
    let upstreams: String = get(r, 2)?;
    let config: String = get(r, 3)?;
    Ok(Version {
        agent: agent_name(get(r, 0)?)?,
        number: u32::try_from(get::<i64>(r, 1)?).map_err(|e| corrupt("version number", e))?,
        upstreams: serde_json::from_str(&upstreams).map_err(|e| corrupt("upstreams", e))?,
        config: serde_json::from_str(&config).map_err(|e| corrupt("config", e))?,
        description: get(r, 4)?,
        author: get(r, 5)?,
        digest: get(r, 6)?,
        state: VersionState::parse(&state).ok_or_else(|| corrupt("version state", &state))?,
        created_at: get(r, 8)?,
        health: get::<Option<String>>(r, 9)?
            .map(|h| serde_json::from_str(&h).map_err(|e| corrupt("health", e)))
            .transpose()?,
        min_healthy: u32::try_from(get::<i64>(r, 10)?).map_err(|e| corrupt("min_healthy", e))?,
        inject: super::inject_from(get::<Option<String>>(r, 11)?.as_deref())
            .map_err(|e| corrupt("inject", e))?,
    })
}

const MOVE_COLS: &str = "agent, environment, action, version, previous, actor, reason, revision, at, previous_since, on_behalf_of, forced, weight";

fn move_from(r: &Row) -> Result<Move> {
    let action: String = get(r, 2)?;
    Ok(Move {
        agent: agent_name(get(r, 0)?)?,
        environment: env_name(get(r, 1)?)?,
        action: Action::parse(&action).ok_or_else(|| corrupt("action", &action))?,
        version: u32_of(get(r, 3)?),
        previous: u32_of(get(r, 4)?),
        actor: get(r, 5)?,
        on_behalf_of: get(r, 10)?,
        reason: get(r, 6)?,
        forced: get(r, 11)?,
        weight: u32_of(get(r, 12)?),
        revision: get::<i64>(r, 7)? as u64,
        at: get(r, 8)?,
        previous_since: get(r, 9)?,
    })
}

const ADMIN_TOKEN_COLS: &str = "id, hash, name, role, created_by, created_at, revoked_at";

fn admin_token_from(r: &Row) -> Result<AdminTokenRecord> {
    let hash: Vec<u8> = get(r, 1)?;
    let role: String = get(r, 3)?;
    Ok(AdminTokenRecord {
        id: get(r, 0)?,
        hash: hash
            .try_into()
            .map_err(|_| corrupt("admin token hash", "not 32 bytes"))?,
        name: get(r, 2)?,
        role: Role::parse("role", &role).map_err(|e| corrupt("admin token role", e))?,
        created_by: get(r, 4)?,
        created_at: get(r, 5)?,
        revoked_at: get(r, 6)?,
    })
}

const TOKEN_COLS: &str =
    "id, hash, agent, environment, name, created_at, expires_at, revoked_at, suspended_at, scopes, created_by, last_used_at";

fn token_from(r: &Row) -> Result<TokenRecord> {
    let hash: Vec<u8> = get(r, 1)?;
    Ok(TokenRecord {
        id: get(r, 0)?,
        hash: hash
            .try_into()
            .map_err(|_| corrupt("token hash", "not 32 bytes"))?,
        agent: agent_name(get(r, 2)?)?,
        environment: env_name(get(r, 3)?)?,
        name: get(r, 4)?,
        created_at: get(r, 5)?,
        expires_at: get(r, 6)?,
        revoked_at: get(r, 7)?,
        suspended_at: get(r, 8)?,
        scopes: super::scopes_from(&get::<String>(r, 9)?),
        created_by: get(r, 10)?,
        last_used_at: get(r, 11)?,
    })
}

fn pointer_from(r: &Row, at: usize) -> Result<Pointer> {
    let canary: Option<String> = get(r, at + 6)?;
    Ok(Pointer {
        canary: canary
            .map(|c| serde_json::from_str(&c).map_err(|e| corrupt("canary", e)))
            .transpose()?,
        version: u32_of(get(r, at)?),
        since: get(r, at + 1)?,
        revision: get::<i64>(r, at + 2)? as u64,
        undo: UndoLink {
            depth: get::<i64>(r, at + 3)? as u32,
            top: get::<i64>(r, at + 4)? as u32,
            next: get::<i64>(r, at + 5)? as u64,
        },
    })
}

impl PgTx<'_> {
    fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        wait(self.h, self.tx.query(sql, params))
    }

    fn opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        wait(self.h, self.tx.query_opt(sql, params))
    }

    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        wait(self.h, self.tx.execute(sql, params))
    }
}

impl Tx for PgTx<'_> {
    fn revision(&mut self) -> Result<u64> {
        let r = self
            .opt("SELECT value FROM meta WHERE key = 'revision'", &[])?
            .ok_or_else(|| corrupt("meta", "no revision row"))?;
        Ok(get::<i64>(&r, 0)? as u64)
    }

    fn bump_revision(&mut self) -> Result<u64> {
        let r = self
            .opt(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
                &[],
            )?
            .ok_or_else(|| corrupt("meta", "no revision row"))?;
        Ok(get::<i64>(&r, 0)? as u64)
    }

    fn agent(&mut self, name: &AgentName) -> Result<Option<Agent>> {
        let row = self.opt(
            "SELECT description, created_at FROM agents WHERE name = $1",
            &[&name.as_str()],
        )?;
        row.map(|r| {
            Ok(Agent {
                name: name.clone(),
                description: get(&r, 0)?,
                created_at: get(&r, 1)?,
            })
        })
        .transpose()
    }

    fn agents(&mut self) -> Result<Vec<Agent>> {
        self.rows(
            "SELECT name, description, created_at FROM agents ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(Agent {
                name: agent_name(get(r, 0)?)?,
                description: get(r, 1)?,
                created_at: get(r, 2)?,
            })
        })
        .collect()
    }

    fn insert_agent(&mut self, a: &Agent) -> Result<()> {
        self.exec(
            "INSERT INTO agents (name, description, created_at) VALUES ($1, $2, $3)",
            &[&a.name.as_str(), &a.description, &a.created_at],
        )?;
        Ok(())
    }

    fn next_version_number(&mut self, agent: &AgentName) -> Result<u32> {
        let r = self
            .opt(
                "UPDATE agents SET last_version = last_version + 1 WHERE name = $1 RETURNING last_version",
                &[&agent.as_str()],
            )?
            .ok_or_else(|| corrupt("agents", "agent vanished"))?;
        u32::try_from(get::<i64>(&r, 0)?).map_err(|e| corrupt("version counter", e))
    }

    fn version(&mut self, agent: &AgentName, number: u32) -> Result<Option<Version>> {
        let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE agent = $1 AND number = $2");
        self.opt(&sql, &[&agent.as_str(), &i64::from(number)])?
            .map(|r| version_from(&r))
            .transpose()
    }

    fn versions(&mut self, agent: &AgentName) -> Result<Vec<Version>> {
        let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE agent = $1 ORDER BY number");
        self.rows(&sql, &[&agent.as_str()])?
            .iter()
            .map(version_from)
            .collect()
    }

    fn insert_version(&mut self, v: &Version) -> Result<()> {
        let upstreams =
            serde_json::to_string(&v.upstreams).map_err(|e| Error::Backend(e.to_string()))?;
        let config = serde_json::to_string(&v.config).map_err(|e| Error::Backend(e.to_string()))?;
        let health = super::health_json(v)?;
        let inject = super::inject_json(v)?;
        self.exec(
            &format!(
                "INSERT INTO versions ({VERSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &v.agent.as_str(),
                &i64::from(v.number),
                &upstreams,
                &config,
                &v.description,
                &v.author,
                &v.digest,
                &v.state.as_str(),
                &v.created_at,
                &health,
                &i64::from(v.min_healthy),
                &inject,
            ],
        )?;
        Ok(())
    }

    fn set_version_state(
        &mut self,
        agent: &AgentName,
        number: u32,
        state: VersionState,
    ) -> Result<()> {
        self.exec(
            "UPDATE versions SET state = $3 WHERE agent = $1 AND number = $2",
            &[&agent.as_str(), &i64::from(number), &state.as_str()],
        )?;
        Ok(())
    }

    fn pointer(&mut self, agent: &AgentName, env: &EnvName) -> Result<Pointer> {
        let row = self.opt(
            "SELECT version, since, revision, undo_depth, undo_top, undo_next, canary
             FROM pointers WHERE agent = $1 AND environment = $2",
            &[&agent.as_str(), &env.as_str()],
        )?;
        match row {
            Some(r) => pointer_from(&r, 0),
            None => Ok(Pointer::default()),
        }
    }

    fn pointers(
        &mut self,
        agent: Option<&AgentName>,
    ) -> Result<Vec<(AgentName, EnvName, Pointer)>> {
        const COLS: &str =
            "agent, environment, version, since, revision, undo_depth, undo_top, undo_next, canary";
        let rows = match agent {
            Some(a) => self.rows(
                &format!("SELECT {COLS} FROM pointers WHERE agent = $1"),
                &[&a.as_str()],
            )?,
            None => self.rows(&format!("SELECT {COLS} FROM pointers"), &[])?,
        };
        rows.iter()
            .map(|r| {
                Ok((
                    agent_name(get(r, 0)?)?,
                    env_name(get(r, 1)?)?,
                    pointer_from(r, 2)?,
                ))
            })
            .collect()
    }

    fn undo_at(&mut self, agent: &AgentName, env: &EnvName, revision: u64) -> Result<UndoLink> {
        let r = self
            .opt(
                "SELECT undo_depth, undo_top, undo_next FROM history
                 WHERE revision = $1 AND agent = $2 AND environment = $3",
                &[&(revision as i64), &agent.as_str(), &env.as_str()],
            )?
            .ok_or_else(|| corrupt("history", format!("no row at revision {revision}")))?;
        Ok(UndoLink {
            depth: get::<i64>(&r, 0)? as u32,
            top: get::<i64>(&r, 1)? as u32,
            next: get::<i64>(&r, 2)? as u64,
        })
    }

    fn has_served(&mut self, agent: &AgentName, env: &EnvName, number: u32) -> Result<bool> {
        let r = self
            .opt(
                "SELECT EXISTS (SELECT 1 FROM history
                 WHERE agent = $1 AND environment = $2 AND version = $3)",
                &[&agent.as_str(), &env.as_str(), &i64::from(number)],
            )?
            .ok_or_else(|| corrupt("history", "EXISTS returned nothing"))?;
        get(&r, 0)
    }

    fn record_move(&mut self, mv: &Move, p: &Pointer) -> Result<()> {
        let version = mv.version.map(i64::from);
        let previous = mv.previous.map(i64::from);
        let (depth, top, next) = (
            i64::from(p.undo.depth),
            i64::from(p.undo.top),
            p.undo.next as i64,
        );
        self.exec(
            "INSERT INTO history (revision, agent, environment, action, version, previous,
                 previous_since, actor, reason, at, undo_depth, undo_top, undo_next,
                 on_behalf_of, forced, weight)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                &(mv.revision as i64),
                &mv.agent.as_str(),
                &mv.environment.as_str(),
                &mv.action.as_str(),
                &version,
                &previous,
                &mv.previous_since,
                &mv.actor,
                &mv.reason,
                &mv.at,
                &depth,
                &top,
                &next,
                &mv.on_behalf_of,
                &mv.forced,
                &mv.weight.map(i64::from),
            ],
        )?;
        self.exec(
            "INSERT INTO pointers (agent, environment, version, since, revision,
                 undo_depth, undo_top, undo_next, canary)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (agent, environment) DO UPDATE SET
                 version = excluded.version, since = excluded.since,
                 revision = excluded.revision, undo_depth = excluded.undo_depth,
                 undo_top = excluded.undo_top, undo_next = excluded.undo_next,
                 canary = excluded.canary",
            &[
                &mv.agent.as_str(),
                &mv.environment.as_str(),
                &p.version.map(i64::from),
                &p.since,
                &(p.revision as i64),
                &depth,
                &top,
                &next,
                &super::canary_json(p)?,
            ],
        )?;
        Ok(())
    }

    fn release(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        version: u32,
        revision: u64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO releases (agent, environment, version, revision) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent, environment, version) DO UPDATE SET revision = excluded.revision",
            &[
                &agent.as_str(),
                &env.as_str(),
                &i64::from(version),
                &(revision as i64),
            ],
        )?;
        Ok(())
    }

    fn releases(&mut self, agent: &AgentName, env: &EnvName) -> Result<Vec<(u32, u64)>> {
        self.rows(
            "SELECT version, revision FROM releases WHERE agent = $1 AND environment = $2",
            &[&agent.as_str(), &env.as_str()],
        )?
        .iter()
        .map(|r| {
            Ok((
                u32::try_from(get::<i64>(r, 0)?).unwrap_or(0),
                get::<i64>(r, 1)? as u64,
            ))
        })
        .collect()
    }

    fn served(&mut self, agent: &AgentName, env: &EnvName, limit: u32) -> Result<Vec<u32>> {
        self.rows(
            "SELECT version FROM history WHERE agent = $1 AND environment = $2
                 AND version IS NOT NULL
             GROUP BY version ORDER BY MAX(revision) DESC LIMIT $3",
            &[&agent.as_str(), &env.as_str(), &i64::from(limit)],
        )?
        .iter()
        .map(|r| u32::try_from(get::<i64>(r, 0)?).map_err(|e| corrupt("history version", e)))
        .collect()
    }

    fn policy(&mut self, agent: &AgentName, env: &EnvName) -> Result<Option<Policy>> {
        self.opt(
            "SELECT policy FROM policies WHERE agent = $1 AND environment = $2",
            &[&agent.as_str(), &env.as_str()],
        )?
        .map(|r| serde_json::from_str(&get::<String>(&r, 0)?).map_err(|e| corrupt("policy", e)))
        .transpose()
    }

    fn set_policy(&mut self, c: &PolicyChange) -> Result<()> {
        let json = |p: &Policy| serde_json::to_string(p).map_err(|e| Error::Backend(e.to_string()));
        let (before, after) = (json(&c.before)?, json(&c.after)?);
        self.exec(
            "INSERT INTO policies (agent, environment, policy) VALUES ($1, $2, $3)
             ON CONFLICT (agent, environment) DO UPDATE SET policy = excluded.policy",
            &[&c.agent.as_str(), &c.environment.as_str(), &after],
        )?;
        self.exec(
            "INSERT INTO policy_history (revision, agent, environment, actor, at, before, after)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &(c.revision as i64),
                &c.agent.as_str(),
                &c.environment.as_str(),
                &c.actor,
                &c.at,
                &before,
                &after,
            ],
        )?;
        Ok(())
    }

    fn policy_history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
    ) -> Result<Vec<PolicyChange>> {
        let parse = |s: String| serde_json::from_str(&s).map_err(|e| corrupt("policy", e));
        self.rows(
            "SELECT revision, actor, at, before, after FROM policy_history
             WHERE agent = $1 AND environment = $2 ORDER BY revision DESC LIMIT $3",
            &[&agent.as_str(), &env.as_str(), &i64::from(limit)],
        )?
        .iter()
        .map(|r| {
            Ok(PolicyChange {
                agent: agent.clone(),
                environment: env.clone(),
                revision: get::<i64>(r, 0)? as u64,
                actor: get(r, 1)?,
                at: get(r, 2)?,
                before: parse(get(r, 3)?)?,
                after: parse(get(r, 4)?)?,
            })
        })
        .collect()
    }

    fn pin_key(&mut self) -> Result<Option<Vec<u8>>> {
        self.opt("SELECT value FROM settings WHERE key = 'pin_key'", &[])?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<Move>> {
        let sql = format!(
            "SELECT {MOVE_COLS} FROM history WHERE agent = $1 AND environment = $2 AND revision < $3
             ORDER BY revision DESC LIMIT $4"
        );
        let before = before
            .map(|b| b.min(i64::MAX as u64) as i64)
            .unwrap_or(i64::MAX);
        self.rows(
            &sql,
            &[&agent.as_str(), &env.as_str(), &before, &i64::from(limit)],
        )?
        .iter()
        .map(move_from)
        .collect()
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<()> {
        self.exec(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &t.id,
                &&t.hash[..],
                &t.agent.as_str(),
                &t.environment.as_str(),
                &t.name,
                &t.created_at,
                &t.expires_at,
                &t.revoked_at,
                &t.suspended_at,
                &t.scopes.join(","),
                &t.created_by,
                &t.last_used_at,
            ],
        )?;
        Ok(())
    }

    fn token(&mut self, id: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1");
        self.opt(&sql, &[&id])?.map(|r| token_from(&r)).transpose()
    }

    fn set_token_suspended(&mut self, id: &str, at: Option<Millis>) -> Result<()> {
        self.exec(
            "UPDATE tokens SET suspended_at = $2 WHERE id = $1",
            &[&id, &at],
        )?;
        Ok(())
    }

    fn revoke_token(&mut self, id: &str, at: Millis) -> Result<()> {
        self.exec(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at],
        )?;
        Ok(())
    }

    fn insert_admin_token(&mut self, t: &AdminTokenRecord) -> Result<()> {
        self.exec(
            &format!(
                "INSERT INTO admin_tokens ({ADMIN_TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &t.id,
                &&t.hash[..],
                &t.name,
                &t.role.as_str(),
                &t.created_by,
                &t.created_at,
                &t.revoked_at,
            ],
        )?;
        Ok(())
    }

    fn admin_token(&mut self, id: &str) -> Result<Option<AdminTokenRecord>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens WHERE id = $1");
        self.opt(&sql, &[&id])?
            .map(|r| admin_token_from(&r))
            .transpose()
    }

    fn admin_token_by_hash(&mut self, hash: &TokenHash) -> Result<Option<AdminTokenRecord>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens WHERE hash = $1");
        self.opt(&sql, &[&&hash[..]])?
            .map(|r| admin_token_from(&r))
            .transpose()
    }

    fn admin_tokens(&mut self) -> Result<Vec<AdminTokenRecord>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens ORDER BY created_at, id");
        self.rows(&sql, &[])?.iter().map(admin_token_from).collect()
    }

    fn revoke_admin_token(&mut self, id: &str, at: Millis) -> Result<()> {
        self.exec(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at],
        )?;
        Ok(())
    }

    fn tokens(&mut self, scope: Option<(&AgentName, &EnvName)>) -> Result<Vec<TokenRecord>> {
        let rows = match scope {
            Some((a, e)) => self.rows(
                &format!(
                    "SELECT {TOKEN_COLS} FROM tokens WHERE agent = $1 AND environment = $2
                     ORDER BY created_at, id"
                ),
                &[&a.as_str(), &e.as_str()],
            )?,
            None => self.rows(
                &format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id"),
                &[],
            )?,
        };
        rows.iter().map(token_from).collect()
    }

    fn touch_tokens(&mut self, used: &[(String, Millis)]) -> Result<()> {
        for (id, at) in used {
            self.exec(
                "UPDATE tokens SET last_used_at = $2
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                &[id, at],
            )?;
        }
        Ok(())
    }

    fn secrets(&mut self, agent: Option<&AgentName>) -> Result<Vec<SecretRecord>> {
        const COLS: &str =
            "agent, name, environment, key_id, nonce, ciphertext, updated_at, updated_by";
        let rows = match agent {
            Some(a) => self.rows(
                &format!("SELECT {COLS} FROM secrets WHERE agent = $1 ORDER BY name, environment"),
                &[&a.as_str()],
            )?,
            None => self.rows(
                &format!("SELECT {COLS} FROM secrets ORDER BY agent, name, environment"),
                &[],
            )?,
        };
        rows.iter()
            .map(|r| {
                Ok(SecretRecord {
                    agent: agent_name(get(r, 0)?)?,
                    name: get(r, 1)?,
                    environment: scope_from(get(r, 2)?)?,
                    sealed: Sealed {
                        key_id: get(r, 3)?,
                        nonce: get(r, 4)?,
                        ciphertext: get(r, 5)?,
                    },
                    updated_at: get(r, 6)?,
                    updated_by: get(r, 7)?,
                })
            })
            .collect()
    }

    fn put_secret(&mut self, s: &SecretRecord) -> Result<()> {
        self.exec(
            "INSERT INTO secrets (agent, name, environment, key_id, nonce, ciphertext, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (agent, name, environment) DO UPDATE SET key_id = excluded.key_id,
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            &[
                &s.agent.as_str(),
                &s.name,
                &scope_of(s.environment.as_ref()),
                &s.sealed.key_id,
                &s.sealed.nonce,
                &s.sealed.ciphertext,
                &s.updated_at,
                &s.updated_by,
            ],
        )?;
        Ok(())
    }

    fn delete_secret(
        &mut self,
        agent: &AgentName,
        name: &str,
        env: Option<&EnvName>,
    ) -> Result<bool> {
        let n = self.exec(
            "DELETE FROM secrets WHERE agent = $1 AND name = $2 AND environment = $3",
            &[&agent.as_str(), &name, &scope_of(env)],
        )?;
        Ok(n > 0)
    }

    fn audit_secret(&mut self, agent: &AgentName, a: &SecretAudit) -> Result<()> {
        self.exec(
            "INSERT INTO secret_audit (revision, agent, name, environment, action, actor, on_behalf_of, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &(a.revision as i64),
                &agent.as_str(),
                &a.name,
                &scope_of(a.environment.as_ref()),
                &a.action,
                &a.actor,
                &a.on_behalf_of,
                &a.at,
            ],
        )?;
        Ok(())
    }

    fn secret_audit(&mut self, agent: &AgentName, limit: u32) -> Result<Vec<SecretAudit>> {
        self.rows(
            "SELECT revision, name, environment, action, actor, on_behalf_of, at
             FROM secret_audit WHERE agent = $1 ORDER BY revision DESC LIMIT $2",
            &[&agent.as_str(), &i64::from(limit)],
        )?
        .iter()
        .map(|r| {
            Ok(SecretAudit {
                revision: get::<i64>(r, 0)? as u64,
                name: get(r, 1)?,
                environment: scope_from(get(r, 2)?)?,
                action: get(r, 3)?,
                actor: get(r, 4)?,
                on_behalf_of: get(r, 5)?,
                at: get(r, 6)?,
            })
        })
        .collect()
    }

    fn record_changes(&mut self, revision: u64, changes: &[Change], at: Millis) -> Result<()> {
        for (seq, c) in changes.iter().enumerate() {
            let seq = seq as i32;
            let rev = revision as i64;
            match c {
                Change::Route {
                    agent, environment, ..
                } => self.exec(
                    "INSERT INTO events (revision, seq, kind, agent, environment, committed_at) VALUES ($1, $2, 'route', $3, $4, $5)",
                    &[&rev, &seq, &agent.as_str(), &environment.as_str(), &at],
                )?,
                Change::Token(t) => self.exec(
                    "INSERT INTO events (revision, seq, kind, token_id, committed_at) VALUES ($1, $2, 'token', $3, $4)",
                    &[&rev, &seq, &t.id, &at],
                )?,
            };
        }
        if !changes.is_empty() {
            self.exec(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &revision.to_string()],
            )?;
        }
        Ok(())
    }

    fn events_since(&mut self, revision: u64, limit: u32) -> Result<Vec<Event>> {
        let rows = self.rows(
            // whole revisions only: a batch never ends in the middle of one
            "SELECT revision, kind, agent, environment, token_id, committed_at FROM events
             WHERE revision IN (SELECT DISTINCT revision FROM events WHERE revision > $1
                                ORDER BY revision LIMIT $2)
             ORDER BY revision, seq",
            &[&(revision as i64), &i64::from(limit)],
        )?;
        rows.iter()
            .map(|r| {
                let kind: String = get(r, 1)?;
                let key = match kind.as_str() {
                    "route" => EventKey::Route {
                        agent: agent_name(get(r, 2)?)?,
                        environment: env_name(get(r, 3)?)?,
                    },
                    "token" => EventKey::Token { id: get(r, 4)? },
                    other => return Err(corrupt("event kind", other)),
                };
                Ok(Event {
                    revision: get::<i64>(r, 0)? as u64,
                    key,
                    at: get(r, 5)?,
                })
            })
            .collect()
    }

    fn feed_floor(&mut self) -> Result<u64> {
        let r = self
            .opt("SELECT value FROM meta WHERE key = 'feed_floor'", &[])?
            .map(|r| get::<i64>(&r, 0))
            .transpose()?;
        Ok(r.unwrap_or(0).max(0) as u64)
    }

    fn prune_feed(&mut self, before: Millis) -> Result<u64> {
        // a prefix of the feed only (revisions commit in order): every event up to the
        // newest one committed before the cutoff
        let r = self.opt(
            "WITH gone AS (
                 DELETE FROM events WHERE revision <=
                     (SELECT max(revision) FROM events WHERE committed_at < $1)
                 RETURNING revision)
             UPDATE meta SET value = GREATEST(value, (SELECT max(revision) FROM gone))
             WHERE key = 'feed_floor' AND EXISTS (SELECT 1 FROM gone)
             RETURNING value",
            &[&before],
        )?;
        match r {
            Some(r) => Ok(get::<i64>(&r, 0)?.max(0) as u64),
            None => self.feed_floor(),
        }
    }
}

/// Listens for change notifications on a connection of its own. Each notification
/// (and the connection's end) is reported on `tx`; the returned future completes when
/// the connection is lost.
pub async fn subscribe(
    url: &str,
    tx: tokio::sync::mpsc::Sender<u64>,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    use futures_util::StreamExt;
    let config = parse_url(url)?;
    let (client, mut conn) = tokio::time::timeout(IO_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| Error::Unavailable("connect timed out".into()))?
        .map_err(pg)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        let _keep = ready_tx;
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let rev = n.payload().parse().unwrap_or(0);
                    if tx.send(rev).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error.detail = %e, "change feed connection failed");
                    return;
                }
            }
        }
    };
    let driver = tokio::spawn(driver);
    tokio::time::timeout(
        IO_TIMEOUT,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    .map_err(|_| Error::Unavailable("LISTEN timed out".into()))?
    .map_err(pg)?;
    Ok(async move {
        // the client must live as long as the subscription
        let _client = client;
        let _ = ready_rx.await;
        let _ = driver.await;
    })
}
