//! Pointer moves: deploy, promote, rollback, undeploy — and the undo stack that makes
//! repeated rollbacks walk back through history.
//!
//! The undo stack is persistent: every history row stores the stack as it stood after
//! that move as `(depth, top, next)`, where `next` is the revision of the row whose stack
//! is the rest. A forward move pushes the version it replaced; a rollback pops. Both
//! are O(1) reads of the store, however long the history grows.

use super::names::version_label;
use super::VersionRef;
use super::{ser_opt_time, ser_time, AgentName, DomainError, EnvName, EnvSpec, Millis, Result};
use serde::{Serialize, Serializer};

/// What a move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deploy,
    Promote,
    Rollback,
    Undeploy,
    CanaryStart,
    CanaryWeight,
    CanaryComplete,
    CanaryAbort,
    AutoRollback,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Self::Deploy,
        Self::Promote,
        Self::Rollback,
        Self::Undeploy,
        Self::CanaryStart,
        Self::CanaryWeight,
        Self::CanaryComplete,
        Self::CanaryAbort,
        Self::AutoRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Undeploy => "undeploy",
            Self::CanaryStart => "canary_start",
            Self::CanaryWeight => "canary_weight",
            Self::CanaryComplete => "canary_complete",
            Self::CanaryAbort => "canary_abort",
            Self::AutoRollback => "auto_rollback",
        }
    }

    /// A move forward (what a rollback undoes): deploy, promote, canary completion.
    pub fn is_forward(self) -> bool {
        matches!(self, Self::Deploy | Self::Promote | Self::CanaryComplete)
    }

    /// A move that changes only the canary, never the environment's version.
    pub fn is_canary_only(self) -> bool {
        matches!(
            self,
            Self::CanaryStart | Self::CanaryWeight | Self::CanaryAbort
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The undo stack after a move (see the module docs). `depth == 0` is the empty stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UndoLink {
    pub depth: u32,
    /// The version a rollback returns to (meaningful when `depth > 0`).
    pub top: u32,
    /// Revision of the history row whose stack is the rest; 0 for the empty stack.
    pub next: u64,
}

impl UndoLink {
    pub const EMPTY: UndoLink = UndoLink {
        depth: 0,
        top: 0,
        next: 0,
    };

    /// The stack after a forward move away from `previous` (an empty environment
    /// pushes nothing: there is nothing to return to).
    pub fn push(self, head_revision: u64, previous: Option<u32>) -> UndoLink {
        match previous {
            Some(v) => UndoLink {
                depth: self.depth.saturating_add(1),
                top: v,
                next: head_revision,
            },
            None => self,
        }
    }
}

/// One (agent, environment) pointer: which version serves it, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pointer {
    pub version: Option<u32>,
    pub since: Millis,
    /// Revision of the last move of this pointer; 0 if it never moved.
    pub revision: u64,
    pub undo: UndoLink,
    /// The canary open beside the version, if any.
    pub canary: Option<super::Canary>,
}

/// What the client asked to do, before it is checked against the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveKind {
    Deploy {
        version: VersionRef,
    },
    Promote {
        to: Option<EnvName>,
    },
    Rollback {
        to_version: Option<VersionRef>,
    },
    Undeploy,
    /// Starts a canary of `version` or changes its weight (hundredths of a percent).
    Canary {
        version: VersionRef,
        weight: u32,
    },
    CanaryComplete,
    CanaryAbort,
    /// The gateway's own rollback of `watched`, which breached its policy: the
    /// environment rolls back, or the canary is aborted when `watched` is the canary.
    AutoRollback {
        watched: u32,
    },
}

impl MoveKind {
    /// The action as asked for (the plan may record another: a rollback while a
    /// canary is open aborts the canary).
    pub fn action(&self) -> Action {
        match self {
            Self::Deploy { .. } => Action::Deploy,
            Self::Promote { .. } => Action::Promote,
            Self::Rollback { .. } => Action::Rollback,
            Self::Undeploy => Action::Undeploy,
            Self::Canary { .. } => Action::CanaryStart,
            Self::CanaryComplete => Action::CanaryComplete,
            Self::CanaryAbort => Action::CanaryAbort,
            Self::AutoRollback { .. } => Action::AutoRollback,
        }
    }

    /// Moves the promotion gate checks first: deploy, promote, a canary.
    pub fn is_gated(&self) -> bool {
        matches!(
            self,
            Self::Deploy { .. } | Self::Promote { .. } | Self::Canary { .. }
        )
    }
}

/// A move request on `environment` (for promote: the source environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    pub agent: AgentName,
    pub environment: EnvName,
    pub kind: MoveKind,
    pub actor: String,
    /// Who the caller acts for (`x-switchyard-on-behalf-of`), kept beside the actor.
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    pub confirm: bool,
    pub expected_revision: Option<u64>,
    /// The gate was skipped on request (`"force": true`); the history says so.
    pub force: bool,
    /// The version the gate checked: the move is refused if another would go live.
    pub expect_version: Option<u32>,
}

/// A recorded move: one row of an environment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub agent: AgentName,
    pub environment: EnvName,
    pub action: Action,
    #[serde(serialize_with = "ser_opt_version")]
    pub version: Option<u32>,
    #[serde(serialize_with = "ser_opt_version")]
    pub previous: Option<u32>,
    /// The admin identity that made the move (`switchyard` for the gateway's own).
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    /// Moved with `"force": true`, past the health gate.
    pub forced: bool,
    /// A canary's weight after the move, in hundredths of a percent (canary moves).
    #[serde(
        serialize_with = "ser_opt_weight",
        skip_serializing_if = "Option::is_none"
    )]
    pub weight: Option<u32>,
    pub revision: u64,
    #[serde(serialize_with = "ser_time")]
    pub at: Millis,
    /// When the environment's previous version went live (None if it was empty).
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_since: Option<Millis>,
}

pub(crate) fn ser_opt_version<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_str(&version_label(*n)),
        None => s.serialize_none(),
    }
}

fn ser_opt_weight<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(w) => s.serialize_f64(super::release::weight_percent(*w)),
        None => s.serialize_none(),
    }
}

/// Checks the preconditions every move shares: the expected revision, then the
/// confirmation a protected environment needs. Nothing has changed when this fails.
pub fn check_guard(
    target: &EnvSpec,
    pointer: &Pointer,
    confirm: bool,
    expected_revision: Option<u64>,
) -> Result<()> {
    if let Some(expected) = expected_revision {
        if expected != pointer.revision {
            return Err(DomainError::RevisionConflict {
                environment: target.name.to_string(),
                expected,
                current: pointer.revision,
            });
        }
    }
    if target.protected && !confirm {
        return Err(DomainError::ConfirmationRequired {
            environment: target.name.to_string(),
        });
    }
    Ok(())
}

/// How far an explicit `rollback --to` searches the undo stack before treating the
/// move as a jump.
pub const MAX_UNDO_WALK: u32 = 1000;

/// Plans a rollback of `env`, currently at `cur`.
///
/// Without `to`, the target is the top of the undo stack: the version that served the
/// environment before the current version's most recent forward move; the stack is
/// popped, so the next rollback goes one step further back. With `to` (already checked
/// to have served `env` before), the stack is popped down to that version if it is on
/// it; otherwise the move is a jump and pushes the current version like a deploy would.
///
/// `rest_of(revision)` reads the undo stack stored with a history row (0: empty).
pub fn plan_rollback<E: From<DomainError>>(
    env: &EnvName,
    cur: &Pointer,
    to: Option<u32>,
    mut rest_of: impl FnMut(u64) -> Result<UndoLink, E>,
) -> Result<(u32, UndoLink), E> {
    let mut link = cur.undo;
    match to {
        None => loop {
            if link.depth == 0 {
                return Err(DomainError::NothingToRollBack(format!(
                    "nothing to roll back to: no earlier version served {env} before the current one"
                ))
                .into());
            }
            let rest = rest_of(link.next)?;
            if Some(link.top) != cur.version {
                return Ok((link.top, rest));
            }
            link = rest;
        },
        Some(n) => {
            if cur.version == Some(n) {
                return Err(DomainError::AlreadyLive {
                    environment: env.to_string(),
                    version: version_label(n),
                }
                .into());
            }
            let mut walked = 0;
            while link.depth > 0 && walked < MAX_UNDO_WALK {
                let rest = rest_of(link.next)?;
                if link.top == n {
                    return Ok((n, rest));
                }
                link = rest;
                walked += 1;
            }
            Ok((n, cur.undo.push(cur.revision, cur.version)))
        }
    }
}

/// The pointer after a move to `target` recorded at `revision`.
pub fn next_pointer(
    cur: &Pointer,
    action: Action,
    target: Option<u32>,
    rollback_undo: Option<UndoLink>,
    revision: u64,
    at: Millis,
) -> Pointer {
    let undo = match (action, rollback_undo) {
        (Action::Rollback, Some(u)) => u,
        _ => cur.undo.push(cur.revision, cur.version),
    };
    Pointer {
        version: target,
        since: at,
        revision,
        undo,
        canary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny history: applies moves the way the store engine does, keeping every
    /// row's undo stack by revision.
    struct Env {
        name: EnvName,
        cur: Pointer,
        rows: HashMap<u64, UndoLink>,
        rev: u64,
    }

    impl Env {
        fn new() -> Self {
            Self {
                name: EnvName::parse("e", "staging").unwrap(),
                cur: Pointer::default(),
                rows: HashMap::new(),
                rev: 0,
            }
        }
        fn apply(&mut self, action: Action, target: Option<u32>, undo: Option<UndoLink>) {
            self.rev += 1;
            self.cur = next_pointer(&self.cur, action, target, undo, self.rev, self.rev as i64);
            self.rows.insert(self.rev, self.cur.undo);
        }
        fn deploy(&mut self, v: u32) {
            self.apply(Action::Deploy, Some(v), None);
        }
        fn rollback(&mut self, to: Option<u32>) -> Result<u32> {
            let rows = &self.rows;
            let (t, undo) = plan_rollback(&self.name, &self.cur, to, |r| {
                Ok::<_, DomainError>(if r == 0 { UndoLink::EMPTY } else { rows[&r] })
            })?;
            self.apply(Action::Rollback, Some(t), Some(undo));
            Ok(t)
        }
    }

    #[test]
    fn repeated_rollbacks_walk_back_like_undo() {
        let mut e = Env::new();
        e.deploy(1);
        e.deploy(2);
        e.deploy(3);
        assert_eq!(e.rollback(None).unwrap(), 2);
        assert_eq!(e.rollback(None).unwrap(), 1);
        assert!(matches!(
            e.rollback(None),
            Err(DomainError::NothingToRollBack(_))
        ));
        assert_eq!(e.cur.version, Some(1), "a refused rollback changes nothing");
    }

    #[test]
    fn a_forward_move_after_rollbacks_starts_a_new_branch() {
        let mut e = Env::new();
        e.deploy(1);
        e.deploy(2);
        e.deploy(3);
        assert_eq!(e.rollback(None).unwrap(), 2);
        e.deploy(4);
        assert_eq!(e.rollback(None).unwrap(), 2);
        assert_eq!(e.rollback(None).unwrap(), 1);
    }

    #[test]
    fn undeploy_can_be_rolled_back_and_empty_is_never_a_target() {
        let mut e = Env::new();
        e.deploy(1);
        e.deploy(2);
        e.apply(Action::Undeploy, None, None);
        e.deploy(3);
        assert_eq!(e.rollback(None).unwrap(), 2);
        assert_eq!(e.rollback(None).unwrap(), 1);
        assert!(e.rollback(None).is_err());
    }

    #[test]
    fn explicit_rollback_pops_down_to_the_version_or_jumps() {
        let mut e = Env::new();
        for v in 1..=4 {
            e.deploy(v);
        }
        assert_eq!(e.rollback(Some(2)).unwrap(), 2);
        assert_eq!(e.rollback(None).unwrap(), 1, "v3 was popped with v2");
        // v4 served before but is not on the stack: a jump, undone by the next rollback
        assert_eq!(e.rollback(Some(4)).unwrap(), 4);
        assert_eq!(e.rollback(None).unwrap(), 1);
        assert!(matches!(
            e.rollback(Some(1)),
            Err(DomainError::AlreadyLive { .. })
        ));
    }

    #[test]
    fn a_redeployed_version_does_not_make_rollback_oscillate() {
        let mut e = Env::new();
        e.deploy(1);
        e.deploy(2);
        e.deploy(3);
        e.deploy(2);
        assert_eq!(e.rollback(None).unwrap(), 3);
        assert_eq!(e.rollback(None).unwrap(), 2);
        assert_eq!(e.rollback(None).unwrap(), 1);
        assert!(e.rollback(None).is_err());
    }

    #[test]
    fn guard_checks_revision_then_confirmation() {
        let prod = EnvSpec {
            name: EnvName::parse("e", "production").unwrap(),
            protected: true,
        };
        let p = Pointer {
            revision: 7,
            ..Pointer::default()
        };
        assert!(matches!(
            check_guard(&prod, &p, true, Some(6)),
            Err(DomainError::RevisionConflict {
                expected: 6,
                current: 7,
                ..
            })
        ));
        assert!(matches!(
            check_guard(&prod, &p, false, Some(7)),
            Err(DomainError::ConfirmationRequired { .. })
        ));
        assert!(check_guard(&prod, &p, true, Some(7)).is_ok());
        assert!(check_guard(&prod, &p, true, None).is_ok());
        let open = EnvSpec {
            protected: false,
            ..prod
        };
        assert!(check_guard(&open, &p, false, None).is_ok());
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("nope"), None);
    }
}
