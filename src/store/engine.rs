//! The rules of every command, written once against [`Tx`] and shared by all backends.
//!
//! Each function runs inside one transaction: it reads the current state, checks it
//! with the domain's rules, and only then writes. An error leaves nothing behind (the
//! backend rolls the transaction back).

use super::{Applied, Command, Error, EventKey, FeedRead, Outcome, Result, Snapshot, Tx};
use crate::domain::moves::{check_guard, plan_rollback};
use crate::domain::names::version_label;
use crate::domain::release;
use crate::domain::secret::{self, SecretAudit, SecretRecord};
use crate::domain::token::SCOPES;
use crate::domain::{
    Action, AdminTokenRecord, Agent, AgentName, Canary, Change, DomainError, EnvName, EnvSpec,
    Millis, Move, MoveKind, MoveRequest, Pipeline, Pointer, PolicyChange, RouteExtra, TokenRecord,
    UndoLink, Version, VersionRef, VersionState,
};

/// Longest free-text field (reason, token name, actor) kept, in bytes.
pub const MAX_TEXT: usize = 1024;

pub fn require_agent(tx: &mut dyn Tx, agent: &AgentName) -> Result<Agent> {
    tx.agent(agent)?
        .ok_or_else(|| DomainError::AgentNotFound(agent.to_string()).into())
}

pub fn require_version(tx: &mut dyn Tx, agent: &AgentName, r: &VersionRef) -> Result<Version> {
    require_agent(tx, agent)?;
    let n = r.for_agent(agent, "version")?;
    tx.version(agent, n)?.ok_or_else(|| {
        DomainError::VersionNotFound {
            agent: agent.to_string(),
            version: version_label(n),
        }
        .into()
    })
}

fn check_text(field: &'static str, s: &str) -> Result<()> {
    if s.len() > MAX_TEXT {
        return Err(DomainError::Invalid {
            field,
            message: format!("longer than {MAX_TEXT} bytes"),
        }
        .into());
    }
    Ok(())
}

/// Validates and applies one command. The caller commits on Ok.
pub fn execute(tx: &mut dyn Tx, p: &Pipeline, cmd: Command, now: Millis) -> Result<Applied> {
    match cmd {
        Command::CreateAgent { name, description } => {
            check_text("description", &description)?;
            if tx.agent(&name)?.is_some() {
                return Err(DomainError::AgentExists(name.to_string()).into());
            }
            let agent = Agent {
                name,
                description,
                created_at: now,
            };
            tx.insert_agent(&agent)?;
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::Agent(agent),
                revision,
                changes: vec![],
            })
        }
        Command::CreateVersion {
            agent,
            spec,
            author,
        } => {
            require_agent(tx, &agent)?;
            check_text("author", &author)?;
            // validate before reserving a number, so a bad spec leaves no gap
            spec.clone().build(agent.clone(), 1, author.clone(), now)?;
            let n = tx.next_version_number(&agent)?;
            let version = spec.build(agent, n, author, now)?;
            tx.insert_version(&version)?;
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::Version(version),
                revision,
                changes: vec![],
            })
        }
        Command::SetVersionState {
            agent,
            version,
            state,
        } => {
            let mut v = require_version(tx, &agent, &version)?;
            if v.state == state {
                // idempotent: starting a running version changes nothing
                let revision = tx.revision()?;
                return Ok(Applied {
                    outcome: Outcome::Version(v),
                    revision,
                    changes: vec![],
                });
            }
            tx.set_version_state(&agent, v.number, state)?;
            v.state = state;
            let revision = tx.bump_revision()?;
            if state == VersionState::Stopped {
                // a stop releases the version's pins everywhere; a start does not
                // revive them
                for s in p.stages() {
                    tx.release(&agent, &s.name, v.number, revision)?;
                }
            }
            let mut changes = Vec::new();
            for (agent, environment, _) in tx.pointers(Some(&agent))? {
                if p.get(environment.as_str()).is_ok() {
                    changes.push(route_change(tx, agent, environment, revision)?);
                }
            }
            Ok(Applied {
                outcome: Outcome::Version(v),
                revision,
                changes,
            })
        }
        Command::Move(req) => execute_move(tx, p, req, now),
        Command::CreateToken {
            agent,
            environment,
            name,
            expires_at,
            id,
            hash,
            mut scopes,
            created_by,
        } => {
            require_agent(tx, &agent)?;
            p.get(environment.as_str())?;
            check_text("name", &name)?;
            if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
                return Err(DomainError::Invalid {
                    field: "scopes",
                    message: format!(
                        "unknown scope {:?}; known: {}",
                        crate::domain::names::truncate(bad, 40),
                        SCOPES.join(", ")
                    ),
                }
                .into());
            }
            scopes.sort();
            scopes.dedup();
            if let Some(exp) = expires_at {
                if exp <= now {
                    return Err(DomainError::Invalid {
                        field: "expires_at",
                        message: "expires_at is in the past".into(),
                    }
                    .into());
                }
            }
            let record = TokenRecord {
                id,
                agent,
                environment,
                name,
                created_at: now,
                expires_at,
                revoked_at: None,
                suspended_at: None,
                scopes,
                created_by,
                last_used_at: None,
                hash,
            };
            tx.insert_token(&record)?;
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::Token(record.clone()),
                revision,
                changes: vec![Change::Token(record)],
            })
        }
        Command::CreateAdminToken {
            id,
            name,
            role,
            hash,
            created_by,
        } => {
            crate::domain::identity::check_admin_name(&name)?;
            check_text("created_by", &created_by)?;
            if tx
                .admin_tokens()?
                .iter()
                .any(|t| t.name == name && t.revoked_at.is_none())
            {
                return Err(DomainError::AdminTokenExists(name).into());
            }
            let record = AdminTokenRecord {
                id,
                name,
                role,
                created_at: now,
                revoked_at: None,
                created_by,
                hash,
            };
            tx.insert_admin_token(&record)?;
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::AdminToken(record),
                revision,
                changes: vec![],
            })
        }
        Command::RevokeAdminToken { id } => {
            let mut record = tx
                .admin_token(&id)?
                .ok_or_else(|| DomainError::AdminTokenNotFound(id.clone()))?;
            if record.revoked_at.is_none() {
                tx.revoke_admin_token(&id, now)?;
                record.revoked_at = Some(now);
            }
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::AdminToken(record),
                revision,
                changes: vec![],
            })
        }
        Command::SuspendToken { id, suspend } => {
            let mut record = tx
                .token(&id)?
                .ok_or_else(|| DomainError::TokenNotFound(id.clone()))?;
            if record.revoked_at.is_some() {
                return Err(DomainError::TokenRevoked(id).into());
            }
            // suspending again keeps the first time; resuming an active token is a no-op
            let at = match (suspend, record.suspended_at) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
                (false, _) => None,
            };
            if at != record.suspended_at {
                tx.set_token_suspended(&id, at)?;
                record.suspended_at = at;
            }
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::Token(record.clone()),
                revision,
                changes: vec![Change::Token(record)],
            })
        }
        Command::SetPolicy {
            agent,
            environment,
            patch,
            actor,
        } => {
            require_agent(tx, &agent)?;
            p.get(environment.as_str())?;
            check_text("actor", &actor)?;
            let before = tx.policy(&agent, &environment)?.unwrap_or_default();
            let after = before.merge(&patch)?;
            let revision = tx.bump_revision()?;
            tx.set_policy(&PolicyChange {
                agent: agent.clone(),
                environment: environment.clone(),
                actor,
                at: now,
                revision,
                before,
                after,
            })?;
            let change = route_change(tx, agent, environment, revision)?;
            Ok(Applied {
                outcome: Outcome::Policy(after),
                revision,
                changes: vec![change],
            })
        }
        Command::SetSecret {
            agent,
            name,
            environment,
            sealed,
            actor,
            on_behalf_of,
        } => {
            check_secret_write(
                tx,
                p,
                &agent,
                &name,
                environment.as_ref(),
                &actor,
                &on_behalf_of,
            )?;
            let revision = tx.bump_revision()?;
            let record = SecretRecord {
                agent: agent.clone(),
                name: name.clone(),
                environment: environment.clone(),
                sealed,
                updated_at: now,
                updated_by: actor.clone(),
            };
            tx.put_secret(&record)?;
            let audit = SecretAudit {
                revision,
                name,
                environment: environment.clone(),
                action: "set".into(),
                actor,
                on_behalf_of,
                at: now,
            };
            tx.audit_secret(&agent, &audit)?;
            let changes = secret_routes(tx, p, &agent, environment.as_ref(), revision)?;
            Ok(Applied {
                outcome: Outcome::Secret(record.info()),
                revision,
                changes,
            })
        }
        Command::DeleteSecret {
            agent,
            name,
            environment,
            actor,
            on_behalf_of,
        } => {
            check_secret_write(
                tx,
                p,
                &agent,
                &name,
                environment.as_ref(),
                &actor,
                &on_behalf_of,
            )?;
            let all = tx.secrets(Some(&agent))?;
            if !all
                .iter()
                .any(|s| s.name == name && s.environment == environment)
            {
                let scope = environment.as_ref().map_or("agent-wide", |e| e.as_str());
                return Err(DomainError::SecretNotFound(format!("{name} ({scope})")).into());
            }
            let users = secret_users(tx, p, &agent, &name, environment.as_ref(), &all)?;
            if !users.is_empty() {
                return Err(DomainError::SecretInUse {
                    name,
                    users: users.join(", "),
                }
                .into());
            }
            tx.delete_secret(&agent, &name, environment.as_ref())?;
            let revision = tx.bump_revision()?;
            let audit = SecretAudit {
                revision,
                name,
                environment: environment.clone(),
                action: "delete".into(),
                actor,
                on_behalf_of,
                at: now,
            };
            tx.audit_secret(&agent, &audit)?;
            let changes = secret_routes(tx, p, &agent, environment.as_ref(), revision)?;
            Ok(Applied {
                outcome: Outcome::Deleted,
                revision,
                changes,
            })
        }
        Command::RevokeToken { id } => {
            let mut record = tx
                .token(&id)?
                .ok_or_else(|| DomainError::TokenNotFound(id.clone()))?;
            if record.revoked_at.is_none() {
                tx.revoke_token(&id, now)?;
                record.revoked_at = Some(now);
            }
            let revision = tx.bump_revision()?;
            Ok(Applied {
                outcome: Outcome::Token(record.clone()),
                revision,
                changes: vec![Change::Token(record)],
            })
        }
    }
}

/// What every secret write checks: the agent exists, the name is one, the scope is a
/// stage of the pipeline, and the free texts fit.
fn check_secret_write(
    tx: &mut dyn Tx,
    p: &Pipeline,
    agent: &AgentName,
    name: &str,
    scope: Option<&EnvName>,
    actor: &str,
    on_behalf_of: &Option<String>,
) -> Result<()> {
    require_agent(tx, agent)?;
    secret::check_name("name", name)?;
    if let Some(e) = scope {
        p.get(e.as_str())?;
    }
    check_text("actor", actor)?;
    check_text("on_behalf_of", on_behalf_of.as_deref().unwrap_or(""))
}

/// The routes a secret write in `scope` (None: agent-wide) changes: those of every
/// environment of `agent` in that scope that has a pointer.
fn secret_routes(
    tx: &mut dyn Tx,
    p: &Pipeline,
    agent: &AgentName,
    scope: Option<&EnvName>,
    revision: u64,
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for (agent, environment, _) in tx.pointers(Some(agent))? {
        if p.get(environment.as_str()).is_ok() && scope.is_none_or(|s| *s == environment) {
            changes.push(route_change(tx, agent, environment, revision)?);
        }
    }
    Ok(changes)
}

/// The live versions (`v3 in production`) that would lose secret `name` if its value
/// in `scope` were deleted: those that inject it where no other value is left.
fn secret_users(
    tx: &mut dyn Tx,
    p: &Pipeline,
    agent: &AgentName,
    name: &str,
    scope: Option<&EnvName>,
    all: &[SecretRecord],
) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for stage in p.stages() {
        let env = &stage.name;
        if scope.is_some_and(|s| s != env) {
            continue;
        }
        let left = all.iter().any(|s| {
            s.name == name
                && s.environment.as_ref() != scope
                && s.environment.as_ref().is_none_or(|e| e == env)
        });
        if left {
            continue;
        }
        let ptr = tx.pointer(agent, env)?;
        for n in ptr.version.into_iter().chain(ptr.canary.map(|c| c.version)) {
            let needs = tx
                .version(agent, n)?
                .is_some_and(|v| v.inject.iter().any(|i| i.secret == name));
            if needs {
                users.push(format!("{} in {env}", version_label(n)));
            }
        }
    }
    Ok(users)
}

/// The secrets `v` injects that have no value for `env`, sorted.
fn missing_secrets(tx: &mut dyn Tx, v: &Version, env: &EnvName) -> Result<Vec<String>> {
    if v.inject.is_empty() {
        return Ok(Vec::new());
    }
    let all = tx.secrets(Some(&v.agent))?;
    let have = secret::resolve(&all, env);
    let names: Vec<&str> = have.keys().copied().collect();
    Ok(secret::missing(&v.inject, &names)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

fn running(v: Version) -> Result<Version> {
    if v.state == VersionState::Stopped {
        return Err(DomainError::VersionStopped {
            agent: v.agent.to_string(),
            version: v.label(),
        }
        .into());
    }
    Ok(v)
}

/// Version `n` of `agent`, which must exist and be running.
fn require_running(tx: &mut dyn Tx, agent: &AgentName, n: u32) -> Result<Version> {
    running(require_version(
        tx,
        agent,
        &VersionRef {
            agent: None,
            number: n,
        },
    )?)
}

/// What a move would do, worked out from the store without writing: the environment it
/// moves, from which version to which, and the first reason the real move would be
/// refused. Shared by the move itself and by its dry run.
#[derive(Debug)]
pub struct MovePlan {
    /// What the history will record (a rollback while a canary is open is recorded
    /// as the canary's abort).
    pub action: Action,
    /// The environment that moves (for a promote: the next one, or `to`).
    pub environment: EnvSpec,
    pub from: Option<u32>,
    /// The version the move is about: the new live version, or the canary for a canary
    /// move. None when undeployed, or when the target could not be resolved (refused).
    pub to: Option<u32>,
    /// The environment's revision now (what `expected_revision` must name).
    pub revision: u64,
    /// Why the real move would be refused, the first reason it would give.
    pub refusal: Option<Error>,
    /// The canary open now, and the one after the move.
    pub canary_before: Option<Canary>,
    pub canary_after: Option<Canary>,
    /// Versions whose session pins the move releases (0: every version).
    pub releases: Vec<u32>,
    /// Secrets the version moved to injects that have no value in the environment.
    pub missing_secrets: Vec<String>,
    cur: Pointer,
    rollback_undo: Option<UndoLink>,
}

/// Refusals a plan reports as `allowed: false`; any other error (unknown agent,
/// environment or version, invalid input) is the answer itself.
fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::Domain(
            DomainError::ConfirmationRequired { .. }
                | DomainError::RevisionConflict { .. }
                | DomainError::VersionStopped { .. }
                | DomainError::NotDeployed(_)
                | DomainError::NothingToRollBack(_)
                | DomainError::AlreadyLive { .. }
                | DomainError::CandidateChanged(_)
                | DomainError::CanaryOpen { .. }
                | DomainError::NoCanary(_)
                | DomainError::MissingSecret { .. }
        )
    )
}

/// What resolving a move against the pointer gives.
struct Resolved {
    action: Action,
    to: Option<u32>,
    rollback_undo: Option<UndoLink>,
    canary: Option<Canary>,
    releases: Vec<u32>,
}

/// Plans `req` without writing ([`MovePlan`]).
pub fn plan_move(tx: &mut dyn Tx, p: &Pipeline, req: &MoveRequest) -> Result<MovePlan> {
    require_agent(tx, &req.agent)?;
    check_text("reason", req.reason.as_deref().unwrap_or(""))?;
    check_text("actor", &req.actor)?;
    if let Some(o) = &req.on_behalf_of {
        check_text("on_behalf_of", o)?;
    }
    let source = p.get(req.environment.as_str())?.clone();
    let target_env = match &req.kind {
        MoveKind::Promote { to: Some(to) } => p.get(to.as_str())?.clone(),
        MoveKind::Promote { to: None } => p
            .next(&source.name)
            .ok_or_else(|| DomainError::NoNextStage(source.name.to_string()))?
            .clone(),
        _ => source.clone(),
    };
    let cur = tx.pointer(&req.agent, &target_env.name)?;
    // the guard's refusal comes first, as the real move gives it
    let guard = check_guard(&target_env, &cur, req.confirm, req.expected_revision)
        .err()
        .map(Error::from);
    let resolved = resolve_target(tx, req, &source, &target_env, &cur);
    let unresolved = |action| Resolved {
        action,
        to: None,
        rollback_undo: None,
        canary: cur.canary,
        releases: vec![],
    };
    let (r, mut refusal) = match (guard, resolved) {
        (Some(g), Ok(r)) => (r, Some(g)),
        (Some(g), Err(_)) => (unresolved(req.kind.action()), Some(g)),
        (None, Ok(r)) => (r, None),
        (None, Err(e)) if is_refusal(&e) => (unresolved(req.kind.action()), Some(e)),
        (None, Err(e)) => return Err(e),
    };
    if refusal.is_none() && req.expect_version.is_some() && req.expect_version != r.to {
        refusal = Some(DomainError::CandidateChanged(source.name.to_string()).into());
    }
    if let (None, Some(t), Some(c), false) =
        (&refusal, r.to, cur.version, r.action.is_canary_only())
    {
        if t == c {
            refusal = Some(
                DomainError::AlreadyLive {
                    environment: target_env.name.to_string(),
                    version: version_label(t),
                }
                .into(),
            );
        }
    }
    let checked = matches!(
        r.action,
        Action::Deploy
            | Action::Promote
            | Action::Rollback
            | Action::CanaryStart
            | Action::CanaryComplete
    );
    let mut missing = Vec::new();
    if let (true, Some(t)) = (checked, r.to) {
        if let Some(v) = tx.version(&req.agent, t)? {
            missing = missing_secrets(tx, &v, &target_env.name)?;
        }
        if refusal.is_none() && !missing.is_empty() {
            refusal = Some(
                DomainError::MissingSecret {
                    environment: target_env.name.to_string(),
                    version: version_label(t),
                    names: missing.clone(),
                }
                .into(),
            );
        }
    }
    Ok(MovePlan {
        missing_secrets: missing,
        action: r.action,
        revision: cur.revision,
        from: cur.version,
        to: r.to,
        environment: target_env,
        refusal,
        canary_before: cur.canary,
        canary_after: r.canary,
        releases: r.releases,
        cur,
        rollback_undo: r.rollback_undo,
    })
}

/// A canary move refused because the environment has another canary open.
fn canary_open(env: &EnvSpec, c: &Canary) -> Error {
    DomainError::CanaryOpen {
        environment: env.name.to_string(),
        version: version_label(c.version),
    }
    .into()
}

/// What `req` would do to the pointer of `target_env`: the action recorded, the
/// version it is about (None: undeploy), the undo link a rollback leaves, the canary
/// after it and the versions whose pins it releases.
fn resolve_target(
    tx: &mut dyn Tx,
    req: &MoveRequest,
    source: &EnvSpec,
    target_env: &EnvSpec,
    cur: &Pointer,
) -> Result<Resolved> {
    let moved = |action, to| Resolved {
        action,
        to,
        rollback_undo: None,
        canary: None,
        releases: vec![],
    };
    let abort = |c: &Canary| Resolved {
        action: Action::CanaryAbort,
        to: Some(c.version),
        rollback_undo: None,
        canary: None,
        releases: vec![c.version],
    };
    match &req.kind {
        MoveKind::Deploy { version } => {
            let v = running(require_version(tx, &req.agent, version)?)?;
            if let Some(c) = &cur.canary {
                return Err(canary_open(target_env, c));
            }
            Ok(moved(Action::Deploy, Some(v.number)))
        }
        MoveKind::Promote { .. } => {
            if source.name == target_env.name {
                return Err(DomainError::Invalid {
                    field: "to",
                    message: format!("cannot promote {} into itself", source.name),
                }
                .into());
            }
            let from = tx.pointer(&req.agent, &source.name)?;
            let n = from
                .version
                .ok_or_else(|| DomainError::NotDeployed(source.name.to_string()))?;
            let n = require_running(tx, &req.agent, n)?.number;
            if let Some(c) = &cur.canary {
                return Err(canary_open(target_env, c));
            }
            Ok(moved(Action::Promote, Some(n)))
        }
        MoveKind::Rollback { to_version } => {
            // a rollback while a canary is open aborts the canary only
            if let Some(c) = &cur.canary {
                return Ok(abort(c));
            }
            let to = match to_version {
                Some(r) => {
                    let v = require_version(tx, &req.agent, r)?;
                    if !tx.has_served(&req.agent, &target_env.name, v.number)? {
                        return Err(DomainError::NothingToRollBack(format!(
                            "{} has never served {}; roll back only to a version that did",
                            v.label(),
                            target_env.name
                        ))
                        .into());
                    }
                    Some(v.number)
                }
                None => None,
            };
            rollback(tx, req, target_env, cur, to, Action::Rollback)
        }
        MoveKind::AutoRollback { watched } => match (&cur.canary, cur.version) {
            (Some(c), _) if c.version == *watched => Ok(abort(c)),
            (None, Some(v)) if v == *watched => {
                rollback(tx, req, target_env, cur, None, Action::AutoRollback)
            }
            _ => Err(DomainError::CandidateChanged(target_env.name.to_string()).into()),
        },
        MoveKind::Undeploy => {
            if cur.version.is_none() {
                return Err(DomainError::NotDeployed(target_env.name.to_string()).into());
            }
            let mut r = moved(Action::Undeploy, None);
            r.releases = vec![0];
            Ok(r)
        }
        MoveKind::Canary { version, weight } => {
            let v = running(require_version(tx, &req.agent, version)?)?;
            if cur.version.is_none() {
                return Err(DomainError::NotDeployed(target_env.name.to_string()).into());
            }
            if cur.version == Some(v.number) {
                return Err(DomainError::AlreadyLive {
                    environment: target_env.name.to_string(),
                    version: v.label(),
                }
                .into());
            }
            let (action, canary) = match cur.canary {
                Some(c) if c.version != v.number => return Err(canary_open(target_env, &c)),
                Some(c) => (
                    Action::CanaryWeight,
                    Canary {
                        weight: *weight,
                        ..c
                    },
                ),
                None => (
                    Action::CanaryStart,
                    Canary {
                        version: v.number,
                        weight: *weight,
                        since: 0,
                        start_revision: 0,
                        moved_at: 0,
                    },
                ),
            };
            let mut r = moved(action, Some(v.number));
            r.canary = Some(canary);
            Ok(r)
        }
        MoveKind::CanaryComplete | MoveKind::CanaryAbort => {
            let c = cur
                .canary
                .ok_or_else(|| DomainError::NoCanary(target_env.name.to_string()))?;
            if req.kind == MoveKind::CanaryAbort {
                return Ok(abort(&c));
            }
            let n = require_running(tx, &req.agent, c.version)?.number;
            Ok(moved(Action::CanaryComplete, Some(n)))
        }
    }
}

/// A rollback of `target_env` (to `to`, or down the undo stack), recorded as `action`;
/// it releases the version rolled back from.
fn rollback(
    tx: &mut dyn Tx,
    req: &MoveRequest,
    target_env: &EnvSpec,
    cur: &Pointer,
    to: Option<u32>,
    action: Action,
) -> Result<Resolved> {
    let (agent, env) = (req.agent.clone(), target_env.name.clone());
    let (n, undo) = plan_rollback(&env, cur, to, |rev| {
        if rev == 0 {
            Ok(UndoLink::EMPTY)
        } else {
            tx.undo_at(&agent, &env, rev)
        }
    })?;
    require_running(tx, &req.agent, n)?;
    Ok(Resolved {
        action,
        to: Some(n),
        rollback_undo: Some(undo),
        canary: None,
        releases: cur.version.into_iter().collect(),
    })
}

fn execute_move(tx: &mut dyn Tx, p: &Pipeline, req: MoveRequest, now: Millis) -> Result<Applied> {
    let plan = plan_move(tx, p, &req)?;
    if let Some(e) = plan.refusal {
        return Err(e);
    }
    let MovePlan {
        action,
        environment: target_env,
        to: target,
        cur,
        rollback_undo,
        canary_after,
        releases,
        ..
    } = plan;
    let revision = tx.bump_revision()?;
    let (pointer, version, weight) = if action.is_canary_only() {
        let canary = canary_after.map(|c| match action {
            Action::CanaryStart => Canary {
                since: now,
                start_revision: revision,
                moved_at: now,
                ..c
            },
            _ => Canary { moved_at: now, ..c },
        });
        let pointer = Pointer {
            revision,
            canary,
            ..cur
        };
        (pointer, target, canary.map(|c| c.weight))
    } else {
        let undo = match (action, rollback_undo) {
            (Action::Rollback | Action::AutoRollback, Some(u)) => u,
            _ => cur.undo.push(cur.revision, cur.version),
        };
        let pointer = Pointer {
            version: target,
            since: now,
            revision,
            undo,
            canary: None,
        };
        (pointer, target, None)
    };
    let mv = Move {
        agent: req.agent.clone(),
        environment: target_env.name.clone(),
        action,
        version,
        previous: cur.version,
        actor: req.actor,
        on_behalf_of: req.on_behalf_of,
        reason: req.reason,
        forced: req.force,
        weight,
        revision,
        at: now,
        previous_since: cur.version.map(|_| cur.since),
    };
    tx.record_move(&mv, &pointer)?;
    for v in releases {
        tx.release(&req.agent, &target_env.name, v, revision)?;
    }
    let change = route_change(tx, req.agent, target_env.name, revision)?;
    Ok(Applied {
        outcome: Outcome::Move(mv),
        revision,
        changes: vec![change],
    })
}

/// The state a slot serves after `revision`: the pointer's version, its canary, the
/// versions pins may name, the policy and the last forward move.
pub fn route_change(
    tx: &mut dyn Tx,
    agent: AgentName,
    environment: EnvName,
    revision: u64,
) -> Result<Change> {
    let ptr = tx.pointer(&agent, &environment)?;
    let version = match ptr.version {
        Some(n) => tx.version(&agent, n)?,
        None => None,
    };
    let canary = match ptr.canary {
        Some(c) => tx.version(&agent, c.version)?.map(|v| (c, v)),
        None => None,
    };
    let releases = tx.releases(&agent, &environment)?;
    let released = |n: u32| {
        releases
            .iter()
            .filter(|(v, _)| *v == n || *v == 0)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    };
    let mut pinnable = Vec::new();
    for n in tx.served(&agent, &environment, release::PINNABLE_MAX)? {
        if let Some(v) = tx.version(&agent, n)? {
            if v.state == VersionState::Running {
                pinnable.push((v, released(n)));
            }
        }
    }
    let forward = tx
        .history(&agent, &environment, 1, None)?
        .first()
        .and_then(|m| match m.action {
            a if a.is_forward() => m.version.map(|v| (m.at, v)),
            Action::CanaryStart | Action::CanaryWeight => m.version.map(|v| (m.at, v)),
            _ => None,
        });
    // the values the route's versions inject, resolved for the environment
    let injects = version.iter().chain(canary.as_ref().map(|(_, v)| v));
    let injects = injects.chain(pinnable.iter().map(|(v, _)| v));
    let needed: Vec<&str> = injects
        .flat_map(|v| v.inject.iter().map(|i| i.secret.as_str()))
        .collect();
    let secrets = if needed.is_empty() {
        Vec::new()
    } else {
        let all = tx.secrets(Some(&agent))?;
        secret::resolve(&all, &environment)
            .into_iter()
            .filter(|(n, _)| needed.contains(n))
            .map(|(_, s)| s.clone())
            .collect()
    };
    let extra = RouteExtra {
        secrets,
        pointer_revision: ptr.revision,
        canary,
        pinnable,
        policy: tx.policy(&agent, &environment)?.unwrap_or_default(),
        forward,
    };
    Ok(Change::Route {
        agent,
        environment,
        revision: revision.max(ptr.revision).max(1),
        version,
        extra: Some(Box::new(extra)),
    })
}

/// Every live route and every token.
pub fn snapshot(tx: &mut dyn Tx, p: &Pipeline) -> Result<Snapshot> {
    let revision = tx.revision()?;
    let mut changes = Vec::new();
    for (agent, environment, ptr) in tx.pointers(None)? {
        if p.get(environment.as_str()).is_err() {
            continue; // an environment since removed from the config serves nothing
        }
        changes.push(route_change(tx, agent, environment, ptr.revision)?);
    }
    for t in tx.tokens(None)? {
        changes.push(Change::Token(t));
    }
    Ok(Snapshot {
        revision,
        changes,
        pin_key: tx.pin_key()?,
    })
}

/// An agent with the pointer of each environment of the pipeline, in pipeline order.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub agent: Agent,
    pub environments: Vec<(EnvName, Pointer)>,
}

pub fn deployment(tx: &mut dyn Tx, p: &Pipeline, agent: &AgentName) -> Result<Deployment> {
    let a = require_agent(tx, agent)?;
    let mut environments = Vec::with_capacity(p.stages().len());
    for s in p.stages() {
        environments.push((s.name.clone(), tx.pointer(agent, &s.name)?));
    }
    Ok(Deployment {
        agent: a,
        environments,
    })
}

/// Largest batch of events one catch-up reads.
pub const EVENT_BATCH: u32 = 10_000;

/// Resolves the events after `after` into changes carrying the current state of each
/// changed key, and the revision of the last event read (or `after`).
pub fn changes_since(tx: &mut dyn Tx, p: &Pipeline, after: u64) -> Result<FeedRead> {
    let floor = tx.feed_floor()?;
    if after < floor {
        return Ok(FeedRead::Pruned { floor });
    }
    let events = tx.events_since(after, EVENT_BATCH)?;
    let mut last = after;
    let mut changes = Vec::with_capacity(events.len());
    let committed_at = events.iter().map(|e| e.at).collect();
    for e in events {
        last = last.max(e.revision);
        match e.key {
            EventKey::Route { agent, environment } => {
                if p.get(environment.as_str()).is_err() {
                    continue;
                }
                changes.push(route_change(tx, agent, environment, e.revision)?);
            }
            EventKey::Token { id } => {
                if let Some(t) = tx.token(&id)? {
                    changes.push(Change::Token(t));
                }
            }
        }
    }
    Ok(FeedRead::Changes {
        changes,
        last,
        committed_at,
    })
}
