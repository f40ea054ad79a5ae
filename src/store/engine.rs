//! The rules of every command, written once against [`Tx`] and shared by all backends.
//!
//! Each function runs inside one transaction: it reads the current state, checks it
//! with the domain's rules, and only then writes. An error leaves nothing behind (the
//! backend rolls the transaction back).

use super::{Applied, Command, Error, EventKey, FeedRead, Outcome, Result, Snapshot, Tx};
use crate::domain::moves::{check_guard, next_pointer, plan_rollback};
use crate::domain::names::version_label;
use crate::domain::{
    Action, AdminTokenRecord, Agent, AgentName, Change, DomainError, EnvName, EnvSpec, Millis,
    Move, MoveKind, MoveRequest, Pipeline, Pointer, TokenRecord, UndoLink, Version, VersionRef,
    VersionState,
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
            let changes = tx
                .pointers(Some(&agent))?
                .into_iter()
                .filter(|(_, env, ptr)| {
                    ptr.version == Some(v.number) && p.get(env.as_str()).is_ok()
                })
                .map(|(agent, environment, _)| Change::Route {
                    agent,
                    environment,
                    revision,
                    version: Some(v.clone()),
                })
                .collect();
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
        } => {
            require_agent(tx, &agent)?;
            p.get(environment.as_str())?;
            check_text("name", &name)?;
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
    pub action: Action,
    /// The environment that moves (for a promote: the next one, or `to`).
    pub environment: EnvSpec,
    pub from: Option<u32>,
    /// None when undeployed, or when the target could not be resolved (refused).
    pub to: Option<u32>,
    /// The environment's revision now (what `expected_revision` must name).
    pub revision: u64,
    /// Why the real move would be refused, the first reason it would give.
    pub refusal: Option<Error>,
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
        )
    )
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
    let (target, rollback_undo, mut refusal) = match (guard, resolved) {
        (Some(g), Ok((t, u))) => (t, u, Some(g)),
        (Some(g), Err(_)) => (None, None, Some(g)),
        (None, Ok((t, u))) => (t, u, None),
        (None, Err(e)) if is_refusal(&e) => (None, None, Some(e)),
        (None, Err(e)) => return Err(e),
    };
    if refusal.is_none() && req.expect_version.is_some() && req.expect_version != target {
        refusal = Some(DomainError::CandidateChanged(source.name.to_string()).into());
    }
    if let (None, Some(t), Some(c)) = (&refusal, target, cur.version) {
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
    Ok(MovePlan {
        action: req.kind.action(),
        revision: cur.revision,
        from: cur.version,
        to: target,
        environment: target_env,
        refusal,
        cur,
        rollback_undo,
    })
}

/// The version `req` would make live in `target_env` (None: undeploy), and for a
/// rollback the undo link it leaves.
fn resolve_target(
    tx: &mut dyn Tx,
    req: &MoveRequest,
    source: &EnvSpec,
    target_env: &EnvSpec,
    cur: &Pointer,
) -> Result<(Option<u32>, Option<UndoLink>)> {
    match &req.kind {
        MoveKind::Deploy { version } => {
            let v = running(require_version(tx, &req.agent, version)?)?;
            Ok((Some(v.number), None))
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
            Ok((Some(require_running(tx, &req.agent, n)?.number), None))
        }
        MoveKind::Rollback { to_version } => {
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
            let (agent, env) = (req.agent.clone(), target_env.name.clone());
            let (n, undo) = plan_rollback(&env, cur, to, |rev| {
                if rev == 0 {
                    Ok(UndoLink::EMPTY)
                } else {
                    tx.undo_at(&agent, &env, rev)
                }
            })?;
            require_running(tx, &req.agent, n)?;
            Ok((Some(n), Some(undo)))
        }
        MoveKind::Undeploy => {
            if cur.version.is_none() {
                return Err(DomainError::NotDeployed(target_env.name.to_string()).into());
            }
            Ok((None, None))
        }
    }
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
        ..
    } = plan;
    let revision = tx.bump_revision()?;
    let pointer = next_pointer(&cur, action, target, rollback_undo, revision, now);
    let mv = Move {
        agent: req.agent.clone(),
        environment: target_env.name.clone(),
        action,
        version: target,
        previous: cur.version,
        actor: req.actor,
        on_behalf_of: req.on_behalf_of,
        reason: req.reason,
        forced: req.force,
        revision,
        at: now,
        previous_since: cur.version.map(|_| cur.since),
    };
    tx.record_move(&mv, &pointer)?;
    let version = match target {
        Some(n) => tx.version(&req.agent, n)?,
        None => None,
    };
    Ok(Applied {
        outcome: Outcome::Move(mv),
        revision,
        changes: vec![Change::Route {
            agent: req.agent,
            environment: target_env.name,
            revision,
            version,
        }],
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
        let version = match ptr.version {
            Some(n) => tx.version(&agent, n)?,
            None => None,
        };
        changes.push(Change::Route {
            agent,
            environment,
            revision: ptr.revision.max(1),
            version,
        });
    }
    for t in tx.tokens(None)? {
        changes.push(Change::Token(t));
    }
    Ok(Snapshot { revision, changes })
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
                let ptr = tx.pointer(&agent, &environment)?;
                let version = match ptr.version {
                    Some(n) => tx.version(&agent, n)?,
                    None => None,
                };
                changes.push(Change::Route {
                    agent,
                    environment,
                    revision: e.revision.max(ptr.revision),
                    version,
                });
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
