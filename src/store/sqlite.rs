//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! commit that returned is on disk.
//!
//! Locks: one `std::sync::Mutex` around the connection, held for the length of one
//! transaction on a blocking-pool thread, never across an `.await`. Writes use
//! `BEGIN IMMEDIATE`, so a transaction that reads then writes cannot be overtaken.

use super::{Backend, Error, Result, Tx, TxFn};
use crate::domain::{
    Action, AdminTokenRecord, Agent, AgentName, EnvName, Millis, Move, Pointer, Policy,
    PolicyChange, Role, Sealed, SecretAudit, SecretRecord, TokenHash, TokenRecord, UndoLink,
    Version, VersionState,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('schema', 1);
CREATE TABLE IF NOT EXISTS agents (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS versions (
    agent       TEXT NOT NULL REFERENCES agents (name),
    number      INTEGER NOT NULL,
    upstreams   TEXT NOT NULL,
    config      TEXT NOT NULL,
    description TEXT NOT NULL,
    author      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (agent, number)
);
CREATE TABLE IF NOT EXISTS pointers (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    version     INTEGER,
    since       INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    undo_depth  INTEGER NOT NULL,
    undo_top    INTEGER NOT NULL,
    undo_next   INTEGER NOT NULL,
    PRIMARY KEY (agent, environment)
);
CREATE TABLE IF NOT EXISTS history (
    revision       INTEGER PRIMARY KEY,
    agent          TEXT NOT NULL REFERENCES agents (name),
    environment    TEXT NOT NULL,
    action         TEXT NOT NULL,
    version        INTEGER,
    previous       INTEGER,
    previous_since INTEGER,
    actor          TEXT NOT NULL,
    reason         TEXT,
    at             INTEGER NOT NULL,
    undo_depth     INTEGER NOT NULL,
    undo_top       INTEGER NOT NULL,
    undo_next      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_env ON history (agent, environment, revision);
CREATE INDEX IF NOT EXISTS history_by_version ON history (agent, environment, version);
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE,
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_env ON tokens (agent, environment);
CREATE TABLE IF NOT EXISTS admin_tokens (
    id          TEXT PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE IF NOT EXISTS releases (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    version     INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    PRIMARY KEY (agent, environment, version)
);
CREATE TABLE IF NOT EXISTS policies (
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    policy      TEXT NOT NULL,
    PRIMARY KEY (agent, environment)
);
CREATE TABLE IF NOT EXISTS policy_history (
    revision    INTEGER PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    before      TEXT NOT NULL,
    after       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_history_by_env ON policy_history (agent, environment, revision);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    agent       TEXT NOT NULL REFERENCES agents (name),
    name        TEXT NOT NULL,
    environment TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (agent, name, environment)
);
CREATE TABLE IF NOT EXISTS secret_audit (
    revision     INTEGER PRIMARY KEY,
    agent        TEXT NOT NULL REFERENCES agents (name),
    name         TEXT NOT NULL,
    environment  TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    on_behalf_of TEXT,
    at           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS secret_audit_by_agent ON secret_audit (agent, revision);
"#;

/// Columns added after a table was first created: (table, column, type). Added on
/// open when missing, so a file written by an older release keeps working.
const ADDED_COLUMNS: [(&str, &str, &str); 11] = [
    ("history", "on_behalf_of", "TEXT"),
    ("history", "forced", "INTEGER NOT NULL DEFAULT 0"),
    ("versions", "health", "TEXT"),
    ("versions", "min_healthy", "INTEGER NOT NULL DEFAULT 1"),
    ("tokens", "suspended_at", "INTEGER"),
    ("tokens", "scopes", "TEXT NOT NULL DEFAULT ''"),
    ("pointers", "canary", "TEXT"),
    ("history", "weight", "INTEGER"),
    ("versions", "inject", "TEXT"),
    ("tokens", "created_by", "TEXT NOT NULL DEFAULT ''"),
    ("tokens", "last_used_at", "INTEGER"),
];

/// SQLite's errors: busy or locked (another writer holds the file past the busy
/// timeout) is a retryable outage with nothing written; anything else is the
/// backend's failure.
fn backend(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => Error::Unavailable(e.to_string()),
        _ => Error::Backend(e.to_string()),
    }
}

/// Data in the file that the domain rejects: the file was edited by hand or is corrupt.
fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Backend(format!("stored {what} is invalid: {detail}"))
}

/// Creates `path` readable by its owner only (mode 0600) unless it exists; SQLite
/// gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub struct SqliteBackend {
    conn: Mutex<Connection>,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and its parent directory.
    pub fn open(path: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(Error::Unavailable("sqlite:// needs a file path".into()));
        }
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
                })?;
            }
        }
        create_private(Path::new(path))
            .map_err(|e| Error::Unavailable(format!("cannot create {path}: {e}")))?;
        let conn = Connection::open(path)
            .map_err(|e| Error::Unavailable(format!("cannot open {path}: {e}")))?;
        Self::init(conn).map_err(|e| Error::Unavailable(format!("cannot use {path}: {e}")))
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        for (table, column, ty) in ADDED_COLUMNS {
            let present: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                    [table, column],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
                    .map_err(backend)?;
            }
        }
        let key = super::new_pin_key()?;
        conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('pin_key', ?1)",
            [&key[..]],
        )
        .map_err(backend)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn run(&self, behavior: TransactionBehavior, commit: bool, f: &mut TxFn<'_>) -> Result<()> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Backend("connection lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(behavior).map_err(backend)?;
        f(&mut SqliteTx { tx: &tx })?;
        if commit {
            tx.commit().map_err(backend)?;
        }
        Ok(())
    }
}

impl Backend for SqliteBackend {
    fn write(&self, f: &mut TxFn<'_>) -> Result<()> {
        self.run(TransactionBehavior::Immediate, true, f)
    }

    fn read(&self, f: &mut TxFn<'_>) -> Result<()> {
        self.run(TransactionBehavior::Deferred, false, f)
    }
}

struct SqliteTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

fn agent_name(s: String) -> Result<AgentName> {
    AgentName::parse("agent", &s).map_err(|e| corrupt("agent name", e))
}

fn env_name(s: String) -> Result<EnvName> {
    EnvName::parse("environment", &s).map_err(|e| corrupt("environment name", e))
}

fn to_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

const VERSION_COLS: &str =
    "agent, number, upstreams, config, description, author, digest, state, created_at, health, min_healthy, inject";

type VersionRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    Option<String>,
);

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn version_from(row: VersionRow) -> Result<Version> {
    let (
        agent,
        number,
        upstreams,
        config,
        description,
        author,
        digest,
        state,
        created_at,
        health,
        min_healthy,
        inject,
    ) = row;
    Ok(Version {
        agent: agent_name(agent)?,
        number: u32::try_from(number).map_err(|e| corrupt("version number", e))?,
        upstreams: serde_json::from_str(&upstreams).map_err(|e| corrupt("upstreams", e))?,
        config: serde_json::from_str(&config).map_err(|e| corrupt("config", e))?,
        description,
        author,
        digest,
        state: VersionState::parse(&state).ok_or_else(|| corrupt("version state", &state))?,
        created_at,
        health: health
            .map(|h| serde_json::from_str(&h).map_err(|e| corrupt("health", e)))
            .transpose()?,
        min_healthy: u32::try_from(min_healthy).map_err(|e| corrupt("min_healthy", e))?,
        inject: super::inject_from(inject.as_deref()).map_err(|e| corrupt("inject", e))?,
    })
}

const MOVE_COLS: &str = "agent, environment, action, version, previous, actor, reason, revision, at, previous_since, on_behalf_of, forced, weight";

type MoveRow = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    bool,
    Option<i64>,
);

fn move_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MoveRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn move_from(row: MoveRow) -> Result<Move> {
    let (
        agent,
        env,
        action,
        version,
        previous,
        actor,
        reason,
        revision,
        at,
        previous_since,
        on_behalf_of,
        forced,
        weight,
    ) = row;
    Ok(Move {
        agent: agent_name(agent)?,
        environment: env_name(env)?,
        action: Action::parse(&action).ok_or_else(|| corrupt("action", &action))?,
        version: to_u32(version),
        previous: to_u32(previous),
        actor,
        on_behalf_of,
        reason,
        forced,
        weight: to_u32(weight),
        revision: revision as u64,
        at,
        previous_since,
    })
}

const ADMIN_TOKEN_COLS: &str = "id, hash, name, role, created_by, created_at, revoked_at";

type AdminTokenRow = (String, Vec<u8>, String, String, String, i64, Option<i64>);

fn admin_token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminTokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn admin_token_from(row: AdminTokenRow) -> Result<AdminTokenRecord> {
    let (id, hash, name, role, created_by, created_at, revoked_at) = row;
    Ok(AdminTokenRecord {
        id,
        hash: hash
            .try_into()
            .map_err(|_| corrupt("admin token hash", "not 32 bytes"))?,
        name,
        role: Role::parse("role", &role).map_err(|e| corrupt("admin token role", e))?,
        created_by,
        created_at,
        revoked_at,
    })
}

const TOKEN_COLS: &str =
    "id, hash, agent, environment, name, created_at, expires_at, revoked_at, suspended_at, scopes, created_by, last_used_at";

type TokenRow = (
    String,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    String,
    Option<i64>,
);

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn token_from(row: TokenRow) -> Result<TokenRecord> {
    let (
        id,
        hash,
        agent,
        env,
        name,
        created_at,
        expires_at,
        revoked_at,
        suspended_at,
        scopes,
        created_by,
        last_used_at,
    ) = row;
    Ok(TokenRecord {
        id,
        hash: hash
            .try_into()
            .map_err(|_| corrupt("token hash", "not 32 bytes"))?,
        agent: agent_name(agent)?,
        environment: env_name(env)?,
        name,
        created_at,
        expires_at,
        revoked_at,
        suspended_at,
        scopes: super::scopes_from(&scopes),
        created_by,
        last_used_at,
    })
}

fn pointer_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Pointer> {
    let version: Option<i64> = r.get(at)?;
    let canary: Option<String> = r.get(at + 6)?;
    let canary = match canary {
        Some(c) => Some(serde_json::from_str(&c).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(at + 6, rusqlite::types::Type::Text, e.into())
        })?),
        None => None,
    };
    Ok(Pointer {
        canary,
        version: to_u32(version),
        since: r.get(at + 1)?,
        revision: r.get::<_, i64>(at + 2)? as u64,
        undo: UndoLink {
            depth: r.get::<_, i64>(at + 3)? as u32,
            top: r.get::<_, i64>(at + 4)? as u32,
            next: r.get::<_, i64>(at + 5)? as u64,
        },
    })
}

impl SqliteTx<'_> {
    /// Executes a statement through the connection's statement cache (no re-parse).
    fn exec_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.tx.prepare_cached(sql)?.execute(params)
    }

    fn collect<T, R>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
        convert: impl Fn(R) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.tx.prepare_cached(sql).map_err(backend)?;
        let rows = stmt.query_map(params, row).map_err(backend)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(convert(r.map_err(backend)?)?);
        }
        Ok(out)
    }

    /// The row a query finds, converted; None when it finds none.
    fn one<T, R>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
        convert: impl Fn(R) -> Result<T>,
    ) -> Result<Option<T>> {
        let found = self
            .tx
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row(params, row).optional())
            .map_err(backend)?;
        found.map(convert).transpose()
    }
}

impl Tx for SqliteTx<'_> {
    fn revision(&mut self) -> Result<u64> {
        let v: i64 = self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = 'revision'")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(backend)?;
        Ok(v as u64)
    }

    fn bump_revision(&mut self) -> Result<u64> {
        let v: i64 = self
            .tx
            .prepare_cached(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
            )
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(backend)?;
        Ok(v as u64)
    }

    fn agent(&mut self, name: &AgentName) -> Result<Option<Agent>> {
        let row = self
            .tx
            .prepare_cached("SELECT description, created_at FROM agents WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(backend)?;
        Ok(row.map(|(description, created_at)| Agent {
            name: name.clone(),
            description,
            created_at,
        }))
    }

    fn agents(&mut self) -> Result<Vec<Agent>> {
        self.collect(
            "SELECT name, description, created_at FROM agents ORDER BY name",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            |(name, description, created_at): (String, String, i64)| {
                Ok(Agent {
                    name: agent_name(name)?,
                    description,
                    created_at,
                })
            },
        )
    }

    fn insert_agent(&mut self, a: &Agent) -> Result<()> {
        self.exec_cached(
            "INSERT INTO agents (name, description, created_at) VALUES (?1, ?2, ?3)",
            params![a.name.as_str(), a.description, a.created_at],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn next_version_number(&mut self, agent: &AgentName) -> Result<u32> {
        let n: i64 = self
            .tx
            .prepare_cached(
                "UPDATE agents SET last_version = last_version + 1 WHERE name = ?1 RETURNING last_version",
            )
            .and_then(|mut st| st.query_row([agent.as_str()], |r| r.get(0)))
            .map_err(backend)?;
        u32::try_from(n).map_err(|e| corrupt("version counter", e))
    }

    fn version(&mut self, agent: &AgentName, number: u32) -> Result<Option<Version>> {
        let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE agent = ?1 AND number = ?2");
        let row = self
            .tx
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(params![agent.as_str(), number], version_row)
                    .optional()
            })
            .map_err(backend)?;
        row.map(version_from).transpose()
    }

    fn versions(&mut self, agent: &AgentName) -> Result<Vec<Version>> {
        let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE agent = ?1 ORDER BY number");
        self.collect(&sql, [agent.as_str()], version_row, version_from)
    }

    fn insert_version(&mut self, v: &Version) -> Result<()> {
        let upstreams =
            serde_json::to_string(&v.upstreams).map_err(|e| Error::Backend(e.to_string()))?;
        let config = serde_json::to_string(&v.config).map_err(|e| Error::Backend(e.to_string()))?;
        let health = super::health_json(v)?;
        let inject = super::inject_json(v)?;
        self.exec_cached(
            &format!(
                "INSERT INTO versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                v.agent.as_str(),
                v.number,
                upstreams,
                config,
                v.description,
                v.author,
                v.digest,
                v.state.as_str(),
                v.created_at,
                health,
                v.min_healthy,
                inject
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn set_version_state(
        &mut self,
        agent: &AgentName,
        number: u32,
        state: VersionState,
    ) -> Result<()> {
        self.exec_cached(
            "UPDATE versions SET state = ?3 WHERE agent = ?1 AND number = ?2",
            params![agent.as_str(), number, state.as_str()],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn pointer(&mut self, agent: &AgentName, env: &EnvName) -> Result<Pointer> {
        let p = self
            .tx
            .prepare_cached(
                "SELECT version, since, revision, undo_depth, undo_top, undo_next, canary
                 FROM pointers WHERE agent = ?1 AND environment = ?2",
            )
            .and_then(|mut s| {
                s.query_row([agent.as_str(), env.as_str()], |r| pointer_from(r, 0))
                    .optional()
            })
            .map_err(backend)?;
        Ok(p.unwrap_or_default())
    }

    fn pointers(
        &mut self,
        agent: Option<&AgentName>,
    ) -> Result<Vec<(AgentName, EnvName, Pointer)>> {
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, pointer_from(r, 2)?));
        let convert = |(a, e, p): (String, String, Pointer)| Ok((agent_name(a)?, env_name(e)?, p));
        const COLS: &str =
            "agent, environment, version, since, revision, undo_depth, undo_top, undo_next, canary";
        match agent {
            Some(a) => self.collect(
                &format!("SELECT {COLS} FROM pointers WHERE agent = ?1"),
                [a.as_str()],
                row,
                convert,
            ),
            None => self.collect(&format!("SELECT {COLS} FROM pointers"), [], row, convert),
        }
    }

    fn undo_at(&mut self, agent: &AgentName, env: &EnvName, revision: u64) -> Result<UndoLink> {
        let link = self
            .tx
            .prepare_cached(
                "SELECT undo_depth, undo_top, undo_next FROM history
                 WHERE revision = ?1 AND agent = ?2 AND environment = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![revision as i64, agent.as_str(), env.as_str()],
                    |r| {
                        Ok(UndoLink {
                            depth: r.get::<_, i64>(0)? as u32,
                            top: r.get::<_, i64>(1)? as u32,
                            next: r.get::<_, i64>(2)? as u64,
                        })
                    },
                )
                .optional()
            })
            .map_err(backend)?;
        link.ok_or_else(|| corrupt("history", format!("no row at revision {revision}")))
    }

    fn has_served(&mut self, agent: &AgentName, env: &EnvName, number: u32) -> Result<bool> {
        self.tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM history
                 WHERE agent = ?1 AND environment = ?2 AND version = ?3)",
            )
            .and_then(|mut s| {
                s.query_row(params![agent.as_str(), env.as_str(), number], |r| r.get(0))
            })
            .map_err(backend)
    }

    fn record_move(&mut self, mv: &Move, p: &Pointer) -> Result<()> {
        self.exec_cached(
            "INSERT INTO history (revision, agent, environment, action, version, previous,
                     previous_since, actor, reason, at, undo_depth, undo_top, undo_next,
                     on_behalf_of, forced, weight)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                mv.revision as i64,
                mv.agent.as_str(),
                mv.environment.as_str(),
                mv.action.as_str(),
                mv.version,
                mv.previous,
                mv.previous_since,
                mv.actor,
                mv.reason,
                mv.at,
                p.undo.depth,
                p.undo.top,
                p.undo.next as i64,
                mv.on_behalf_of,
                mv.forced,
                mv.weight
            ],
        )
        .map_err(backend)?;
        self.exec_cached(
            "INSERT INTO pointers (agent, environment, version, since, revision,
                     undo_depth, undo_top, undo_next, canary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (agent, environment) DO UPDATE SET
                     version = excluded.version, since = excluded.since,
                     revision = excluded.revision, undo_depth = excluded.undo_depth,
                     undo_top = excluded.undo_top, undo_next = excluded.undo_next,
                     canary = excluded.canary",
            params![
                mv.agent.as_str(),
                mv.environment.as_str(),
                p.version,
                p.since,
                p.revision as i64,
                p.undo.depth,
                p.undo.top,
                p.undo.next as i64,
                super::canary_json(p)?
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn release(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        version: u32,
        revision: u64,
    ) -> Result<()> {
        self.exec_cached(
            "INSERT INTO releases (agent, environment, version, revision) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (agent, environment, version) DO UPDATE SET revision = excluded.revision",
            params![agent.as_str(), env.as_str(), version, revision as i64],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn releases(&mut self, agent: &AgentName, env: &EnvName) -> Result<Vec<(u32, u64)>> {
        self.collect(
            "SELECT version, revision FROM releases WHERE agent = ?1 AND environment = ?2",
            [agent.as_str(), env.as_str()],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            |(v, rev)| Ok((u32::try_from(v).unwrap_or(0), rev as u64)),
        )
    }

    fn served(&mut self, agent: &AgentName, env: &EnvName, limit: u32) -> Result<Vec<u32>> {
        self.collect(
            "SELECT version FROM history WHERE agent = ?1 AND environment = ?2
                 AND version IS NOT NULL
             GROUP BY version ORDER BY MAX(revision) DESC LIMIT ?3",
            params![agent.as_str(), env.as_str(), limit],
            |r| r.get::<_, i64>(0),
            |v| u32::try_from(v).map_err(|e| corrupt("history version", e)),
        )
    }

    fn policy(&mut self, agent: &AgentName, env: &EnvName) -> Result<Option<Policy>> {
        self.one(
            "SELECT policy FROM policies WHERE agent = ?1 AND environment = ?2",
            [agent.as_str(), env.as_str()],
            |r| r.get::<_, String>(0),
            |p| serde_json::from_str(&p).map_err(|e| corrupt("policy", e)),
        )
    }

    fn set_policy(&mut self, c: &PolicyChange) -> Result<()> {
        let json = |p: &Policy| serde_json::to_string(p).map_err(|e| Error::Backend(e.to_string()));
        let after = json(&c.after)?;
        self.exec_cached(
            "INSERT INTO policies (agent, environment, policy) VALUES (?1, ?2, ?3)
             ON CONFLICT (agent, environment) DO UPDATE SET policy = excluded.policy",
            params![c.agent.as_str(), c.environment.as_str(), after],
        )
        .map_err(backend)?;
        self.exec_cached(
            "INSERT INTO policy_history (revision, agent, environment, actor, at, before, after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.revision as i64,
                c.agent.as_str(),
                c.environment.as_str(),
                c.actor,
                c.at,
                json(&c.before)?,
                after
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn policy_history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
    ) -> Result<Vec<PolicyChange>> {
        let (a, e) = (agent.clone(), env.clone());
        self.collect(
            "SELECT revision, actor, at, before, after FROM policy_history
             WHERE agent = ?1 AND environment = ?2 ORDER BY revision DESC LIMIT ?3",
            params![agent.as_str(), env.as_str(), limit],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
            |(revision, actor, at, before, after)| {
                let parse = |s: &str| serde_json::from_str(s).map_err(|e| corrupt("policy", e));
                Ok(PolicyChange {
                    agent: a.clone(),
                    environment: e.clone(),
                    actor,
                    at,
                    revision: revision as u64,
                    before: parse(&before)?,
                    after: parse(&after)?,
                })
            },
        )
    }

    fn pin_key(&mut self) -> Result<Option<Vec<u8>>> {
        self.one(
            "SELECT value FROM settings WHERE key = 'pin_key'",
            [],
            |r| r.get::<_, Vec<u8>>(0),
            Ok,
        )
    }

    fn history(
        &mut self,
        agent: &AgentName,
        env: &EnvName,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<Move>> {
        let sql = format!(
            "SELECT {MOVE_COLS} FROM history WHERE agent = ?1 AND environment = ?2 AND revision < ?3
             ORDER BY revision DESC LIMIT ?4"
        );
        let before = before
            .map(|b| b.min(i64::MAX as u64) as i64)
            .unwrap_or(i64::MAX);
        self.collect(
            &sql,
            params![agent.as_str(), env.as_str(), before, limit],
            move_row,
            move_from,
        )
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<()> {
        self.exec_cached(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                t.id,
                &t.hash[..],
                t.agent.as_str(),
                t.environment.as_str(),
                t.name,
                t.created_at,
                t.expires_at,
                t.revoked_at,
                t.suspended_at,
                t.scopes.join(","),
                t.created_by,
                t.last_used_at
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn token(&mut self, id: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1");
        self.one(&sql, [id], token_row, token_from)
    }

    fn set_token_suspended(&mut self, id: &str, at: Option<Millis>) -> Result<()> {
        self.exec_cached(
            "UPDATE tokens SET suspended_at = ?2 WHERE id = ?1",
            params![id, at],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn revoke_token(&mut self, id: &str, at: Millis) -> Result<()> {
        self.exec_cached(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn insert_admin_token(&mut self, t: &AdminTokenRecord) -> Result<()> {
        self.exec_cached(
            &format!(
                "INSERT INTO admin_tokens ({ADMIN_TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                t.id,
                &t.hash[..],
                t.name,
                t.role.as_str(),
                t.created_by,
                t.created_at,
                t.revoked_at
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn admin_token(&mut self, id: &str) -> Result<Option<AdminTokenRecord>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens WHERE id = ?1");
        self.one(&sql, [id], admin_token_row, admin_token_from)
    }

    fn admin_token_by_hash(&mut self, hash: &TokenHash) -> Result<Option<AdminTokenRecord>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens WHERE hash = ?1");
        self.one(&sql, [&hash[..]], admin_token_row, admin_token_from)
    }

    fn admin_tokens(&mut self) -> Result<Vec<AdminTokenRecord>> {
        self.collect(
            &format!("SELECT {ADMIN_TOKEN_COLS} FROM admin_tokens ORDER BY created_at, id"),
            [],
            admin_token_row,
            admin_token_from,
        )
    }

    fn revoke_admin_token(&mut self, id: &str, at: Millis) -> Result<()> {
        self.exec_cached(
            "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn tokens(&mut self, scope: Option<(&AgentName, &EnvName)>) -> Result<Vec<TokenRecord>> {
        match scope {
            Some((a, e)) => self.collect(
                &format!(
                    "SELECT {TOKEN_COLS} FROM tokens WHERE agent = ?1 AND environment = ?2
                     ORDER BY created_at, id"
                ),
                [a.as_str(), e.as_str()],
                token_row,
                token_from,
            ),
            None => self.collect(
                &format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id"),
                [],
                token_row,
                token_from,
            ),
        }
    }

    fn touch_tokens(&mut self, used: &[(String, Millis)]) -> Result<()> {
        for (id, at) in used {
            self.exec_cached(
                "UPDATE tokens SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id, at],
            )
            .map_err(backend)?;
        }
        Ok(())
    }

    fn secrets(&mut self, agent: Option<&AgentName>) -> Result<Vec<SecretRecord>> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        };
        let from = |(agent, name, env, key_id, nonce, ciphertext, updated_at, updated_by): (
            String,
            String,
            String,
            String,
            Vec<u8>,
            Vec<u8>,
            i64,
            String,
        )| {
            Ok(SecretRecord {
                agent: agent_name(agent)?,
                name,
                environment: scope_from(env)?,
                sealed: Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                },
                updated_at,
                updated_by,
            })
        };
        const COLS: &str =
            "agent, name, environment, key_id, nonce, ciphertext, updated_at, updated_by";
        match agent {
            Some(a) => self.collect(
                &format!("SELECT {COLS} FROM secrets WHERE agent = ?1 ORDER BY name, environment"),
                [a.as_str()],
                row,
                from,
            ),
            None => self.collect(
                &format!("SELECT {COLS} FROM secrets ORDER BY agent, name, environment"),
                [],
                row,
                from,
            ),
        }
    }

    fn put_secret(&mut self, s: &SecretRecord) -> Result<()> {
        self.exec_cached(
            "INSERT INTO secrets (agent, name, environment, key_id, nonce, ciphertext, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (agent, name, environment) DO UPDATE SET key_id = excluded.key_id,
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![
                s.agent.as_str(),
                s.name,
                scope_of(s.environment.as_ref()),
                s.sealed.key_id,
                s.sealed.nonce,
                s.sealed.ciphertext,
                s.updated_at,
                s.updated_by
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn delete_secret(
        &mut self,
        agent: &AgentName,
        name: &str,
        env: Option<&EnvName>,
    ) -> Result<bool> {
        let n = self
            .exec_cached(
                "DELETE FROM secrets WHERE agent = ?1 AND name = ?2 AND environment = ?3",
                params![agent.as_str(), name, scope_of(env)],
            )
            .map_err(backend)?;
        Ok(n > 0)
    }

    fn audit_secret(&mut self, agent: &AgentName, a: &SecretAudit) -> Result<()> {
        self.exec_cached(
            "INSERT INTO secret_audit (revision, agent, name, environment, action, actor, on_behalf_of, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                a.revision as i64,
                agent.as_str(),
                a.name,
                scope_of(a.environment.as_ref()),
                a.action,
                a.actor,
                a.on_behalf_of,
                a.at
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn secret_audit(&mut self, agent: &AgentName, limit: u32) -> Result<Vec<SecretAudit>> {
        self.collect(
            "SELECT revision, name, environment, action, actor, on_behalf_of, at
             FROM secret_audit WHERE agent = ?1 ORDER BY revision DESC LIMIT ?2",
            params![agent.as_str(), limit],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
            |(revision, name, env, action, actor, on_behalf_of, at)| {
                Ok(SecretAudit {
                    revision: revision as u64,
                    name,
                    environment: scope_from(env)?,
                    action,
                    actor,
                    on_behalf_of,
                    at,
                })
            },
        )
    }
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
