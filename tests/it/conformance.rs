//! One store conformance suite, run against SQLite and PostgreSQL alike: every rule,
//! the revision race, history order, tokens, the snapshot and the change feed.

use crate::support::*;
use std::sync::Arc;
use switchyard::domain::token::mint;
use switchyard::domain::{
    AgentName, Change, DomainError, EnvName, MoveKind, MoveRequest, Pipeline, VersionRef,
    VersionSpec, VersionState,
};
use switchyard::store::{Command, Error, FeedRead, Outcome, Store};

/// The stores under test: a SQLite file always, PostgreSQL when configured.
async fn stores(test: &str) -> Vec<(&'static str, Store, Option<String>, tempfile::TempDir)> {
    let pipeline = Arc::new(Pipeline::default());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(
        &format!("sqlite://{}", dir.path().join("c.db").display()),
        Arc::clone(&pipeline),
    )
    .unwrap();
    let mut out = vec![("sqlite", sqlite, None, dir)];
    if let Some(url) = postgres_db(&format!("{test} [PostgreSQL half]")).await {
        let pg = Store::open(&url, pipeline).unwrap();
        out.push(("postgres", pg, Some(url), tempfile::tempdir().unwrap()));
    }
    out
}

fn agent(s: &str) -> AgentName {
    AgentName::parse("agent", s).unwrap()
}

fn env(s: &str) -> EnvName {
    EnvName::parse("environment", s).unwrap()
}

fn mv(a: &str, e: &str, kind: MoveKind) -> Command {
    Command::Move(MoveRequest {
        agent: agent(a),
        environment: env(e),
        kind,
        actor: "test".into(),
        on_behalf_of: Some("ci".into()),
        reason: None,
        confirm: true,
        expected_revision: None,
        force: false,
        expect_version: None,
    })
}

fn deploy(a: &str, e: &str, v: u32) -> Command {
    mv(
        a,
        e,
        MoveKind::Deploy {
            version: VersionRef {
                agent: None,
                number: v,
            },
        },
    )
}

fn rollback(a: &str, e: &str) -> Command {
    mv(a, e, MoveKind::Rollback { to_version: None })
}

async fn setup(s: &Store, name: &str, versions: u16) {
    s.execute(Command::CreateAgent {
        name: agent(name),
        description: String::new(),
    })
    .await
    .unwrap();
    for i in 0..versions {
        s.execute(Command::CreateVersion {
            agent: agent(name),
            spec: VersionSpec {
                upstreams: vec![format!("http://127.0.0.1:{}", 9000 + i)],
                ..Default::default()
            },
            author: "t".into(),
        })
        .await
        .unwrap();
    }
}

fn domain(e: Error) -> DomainError {
    match e {
        Error::Domain(d) => d,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

fn moved_to(o: &Outcome) -> Option<u32> {
    match o {
        Outcome::Move(m) => m.version,
        other => panic!("not a move: {other:?}"),
    }
}

#[tokio::test]
async fn agents_versions_and_their_rules() {
    let _pg = PG_LOCK.read().await;
    for (name, s, _, _dir) in stores("conformance::agents_versions_and_their_rules").await {
        setup(&s, "bot", 2).await;
        let e = domain(
            s.execute(Command::CreateAgent {
                name: agent("bot"),
                description: String::new(),
            })
            .await
            .unwrap_err(),
        );
        assert!(matches!(e, DomainError::AgentExists(_)), "{name}");
        let bad = VersionSpec {
            upstreams: vec!["nope".into()],
            ..Default::default()
        };
        let e = domain(
            s.execute(Command::CreateVersion {
                agent: agent("bot"),
                spec: bad,
                author: "t".into(),
            })
            .await
            .unwrap_err(),
        );
        assert!(matches!(e, DomainError::InvalidVersion { .. }), "{name}");
        let ok = VersionSpec {
            upstreams: vec!["http://h:1".into(), "https://h:2".into()],
            health: Some(switchyard::domain::HealthSpec {
                path: "/healthz".into(),
                interval_ms: 500,
                timeout_ms: 200,
                healthy_threshold: 2,
                unhealthy_threshold: 4,
            }),
            min_healthy: Some(2),
            ..Default::default()
        };
        let expected_health = ok.health.clone();
        let a = s
            .execute(Command::CreateVersion {
                agent: agent("bot"),
                spec: ok,
                author: "t".into(),
            })
            .await
            .unwrap();
        match a.outcome {
            Outcome::Version(v) => {
                assert_eq!(v.number, 3, "{name}: no gap after a refused version")
            }
            o => panic!("{o:?}"),
        }
        let vs = s.versions(agent("bot")).await.unwrap();
        assert_eq!(
            vs.iter().map(|v| v.number).collect::<Vec<_>>(),
            [1, 2, 3],
            "{name}"
        );
        // the health rules and an https:// upstream come back as they were made
        assert_eq!(vs[2].health, expected_health, "{name}");
        assert_eq!(vs[2].min_healthy, 2, "{name}");
        assert_eq!(vs[2].upstreams[1], "https://h:2", "{name}");
        assert_eq!(
            (vs[0].health.as_ref(), vs[0].min_healthy),
            (None, 1),
            "{name}"
        );
        let before = vs[0].clone();
        s.execute(Command::SetVersionState {
            agent: agent("bot"),
            version: VersionRef {
                agent: None,
                number: 1,
            },
            state: VersionState::Stopped,
        })
        .await
        .unwrap();
        let after = s
            .version(
                agent("bot"),
                VersionRef {
                    agent: None,
                    number: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(after.state, VersionState::Stopped);
        assert_eq!(
            (after.digest, after.upstreams, after.config),
            (before.digest, before.upstreams, before.config),
            "{name}: immutable"
        );
        let e = domain(s.execute(deploy("bot", "staging", 1)).await.unwrap_err());
        assert!(matches!(e, DomainError::VersionStopped { .. }), "{name}");
        let e = domain(s.execute(deploy("nobody", "staging", 1)).await.unwrap_err());
        assert!(matches!(e, DomainError::AgentNotFound(_)), "{name}");
        let e = domain(s.execute(deploy("bot", "qa", 2)).await.unwrap_err());
        assert!(matches!(e, DomainError::EnvironmentNotFound(_)), "{name}");
    }
}

#[tokio::test]
async fn moves_history_and_rollback() {
    let _pg = PG_LOCK.read().await;
    for (name, s, _, _dir) in stores("conformance::moves_history_and_rollback").await {
        setup(&s, "bot", 3).await;
        // the gate checked another version than the one that would go live: refused
        let mut changed = deploy("bot", "staging", 1);
        if let Command::Move(r) = &mut changed {
            r.expect_version = Some(2);
        }
        let e = domain(s.execute(changed).await.unwrap_err());
        assert!(matches!(e, DomainError::CandidateChanged(_)), "{name}");
        for v in 1..=3 {
            let mut d = deploy("bot", "staging", v);
            if let Command::Move(r) = &mut d {
                // the third past the gate, and checked: the history keeps both
                r.force = v == 3;
                r.expect_version = Some(v);
            }
            s.execute(d).await.unwrap();
        }
        assert_eq!(
            moved_to(&s.execute(rollback("bot", "staging")).await.unwrap().outcome),
            Some(2),
            "{name}"
        );
        assert_eq!(
            moved_to(&s.execute(rollback("bot", "staging")).await.unwrap().outcome),
            Some(1),
            "{name}"
        );
        let e = domain(s.execute(rollback("bot", "staging")).await.unwrap_err());
        assert!(matches!(e, DomainError::NothingToRollBack(_)), "{name}");

        let mut unconfirmed = mv("bot", "staging", MoveKind::Promote { to: None });
        if let Command::Move(r) = &mut unconfirmed {
            r.confirm = false;
        }
        let e = domain(s.execute(unconfirmed).await.unwrap_err());
        assert!(
            matches!(e, DomainError::ConfirmationRequired { .. }),
            "{name}"
        );
        let p = s
            .execute(mv("bot", "staging", MoveKind::Promote { to: None }))
            .await
            .unwrap();
        match &p.outcome {
            Outcome::Move(m) => assert_eq!(
                (m.environment.as_str(), m.version),
                ("production", Some(1)),
                "{name}"
            ),
            o => panic!("{o:?}"),
        }
        let h = s
            .history(agent("bot"), env("staging"), 100, None)
            .await
            .unwrap();
        let seq: Vec<_> = h.iter().map(|m| (m.action.as_str(), m.version)).collect();
        assert_eq!(
            seq,
            [
                ("rollback", Some(1)),
                ("rollback", Some(2)),
                ("deploy", Some(3)),
                ("deploy", Some(2)),
                ("deploy", Some(1))
            ],
            "{name}"
        );
        assert!(
            h.windows(2).all(|w| w[0].revision > w[1].revision),
            "{name}: newest first"
        );
        let forced: Vec<_> = h.iter().map(|m| m.forced).collect();
        assert_eq!(forced, [false, false, true, false, false], "{name}");
        let page = s
            .history(agent("bot"), env("staging"), 2, Some(h[1].revision))
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|m| m.revision).collect::<Vec<_>>(),
            [h[2].revision, h[3].revision],
            "{name}"
        );

        let d = s.deployment(agent("bot")).await.unwrap();
        let staging = d
            .environments
            .iter()
            .find(|(e, _)| e.as_str() == "staging")
            .unwrap()
            .1;
        assert_eq!(
            (staging.version, staging.revision),
            (Some(1), h[0].revision),
            "{name}"
        );
        s.execute(mv("bot", "staging", MoveKind::Undeploy))
            .await
            .unwrap();
        let e = domain(
            s.execute(mv("bot", "staging", MoveKind::Undeploy))
                .await
                .unwrap_err(),
        );
        assert!(matches!(e, DomainError::NotDeployed(_)), "{name}");
    }
}

#[tokio::test]
async fn expected_revision_race_has_one_winner() {
    let _pg = PG_LOCK.read().await;
    for (name, s, url, dir) in stores("conformance::expected_revision_race_has_one_winner").await {
        setup(&s, "bot", 2).await;
        s.execute(deploy("bot", "staging", 1)).await.unwrap();
        let rev = s.deployment(agent("bot")).await.unwrap().environments[1]
            .1
            .revision;
        // the racers hold two store handles on one database (PostgreSQL: two nodes;
        // SQLite: two connections to one file, as two processes would), so the race
        // is settled by the database's own locking, not by one handle's mutex
        let second_url = match &url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", dir.path().join("c.db").display()),
        };
        let other = Store::open(&second_url, Arc::new(Pipeline::default())).unwrap();
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { s.clone() } else { other.clone() };
                tokio::spawn(async move {
                    let mut cmd = deploy("bot", "staging", 2);
                    if let Command::Move(r) = &mut cmd {
                        r.expected_revision = Some(rev);
                    }
                    store.execute(cmd).await
                })
            })
            .collect();
        let mut wins = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert!(
                    matches!(domain(e), DomainError::RevisionConflict { .. }),
                    "{name}"
                ),
            }
        }
        assert_eq!(wins, 1, "{name}: exactly one racer wins");
        assert_eq!(
            s.history(agent("bot"), env("staging"), 10, None)
                .await
                .unwrap()
                .len(),
            2,
            "{name}"
        );
    }
}

#[tokio::test]
async fn tokens_snapshot_and_change_feed() {
    let _pg = PG_LOCK.read().await;
    for (name, s, url, _dir) in stores("conformance::tokens_snapshot_and_change_feed").await {
        setup(&s, "bot", 1).await;
        let start = s.revision().await.unwrap();
        s.execute(deploy("bot", "staging", 1)).await.unwrap();
        let m = mint().unwrap();
        let created = s
            .execute(Command::CreateToken {
                created_by: "conformance".into(),
                agent: agent("bot"),
                environment: env("staging"),
                name: "ci".into(),
                expires_at: None,
                id: m.id.clone(),
                hash: m.hash,
                scopes: vec![],
            })
            .await
            .unwrap();
        assert_eq!(created.changes.len(), 1, "{name}");
        let revoked = s
            .execute(Command::RevokeToken { id: m.id.clone() })
            .await
            .unwrap();
        match &revoked.outcome {
            Outcome::Token(t) => assert!(t.revoked_at.is_some()),
            o => panic!("{o:?}"),
        }
        let listed = s.tokens(agent("bot"), env("staging")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].hash, m.hash, "{name}: the hash round-trips");
        assert!(listed[0].revoked_at.is_some());
        let e = domain(
            s.execute(Command::RevokeToken {
                id: "tok_none".into(),
            })
            .await
            .unwrap_err(),
        );
        assert!(matches!(e, DomainError::TokenNotFound(_)), "{name}");

        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.revision, s.revision().await.unwrap());
        assert!(
            snap.changes
                .iter()
                .any(|c| matches!(c, Change::Token(t) if t.id == m.id && t.revoked_at.is_some())),
            "{name}"
        );
        assert!(
            snap.changes
                .iter()
                .any(|c| matches!(c, Change::Route { version: Some(v), .. } if v.number == 1)),
            "{name}"
        );

        let feed = |r: FeedRead| match r {
            FeedRead::Changes {
                changes,
                last,
                committed_at,
            } => (changes, last, committed_at),
            FeedRead::Pruned { floor } => panic!("{name}: pruned at {floor}"),
        };
        let (changes, last, committed_at) = feed(s.changes_since(start).await.unwrap());
        if url.is_some() {
            assert_eq!(last, snap.revision, "{name}: the feed reaches the head");
            assert!(changes.iter().any(|c| matches!(c, Change::Route { .. })));
            assert!(changes
                .iter()
                .any(|c| matches!(c, Change::Token(t) if t.revoked_at.is_some())));
            let now = switchyard::domain::now_ms();
            assert!(
                !committed_at.is_empty()
                    && committed_at
                        .iter()
                        .all(|&at| at > now - 60_000 && at <= now),
                "{name}: commit times {committed_at:?}"
            );
            let (none, same, _) = feed(s.changes_since(last).await.unwrap());
            assert!(none.is_empty() && same == last);
            // pruned: a cursor below the floor is told so; one at the head is not
            let floor = s.prune_feed(std::time::Duration::ZERO).await.unwrap();
            assert!(floor >= last - 1 && floor <= last, "{name}: floor {floor}");
            assert!(
                matches!(
                    s.changes_since(start).await.unwrap(),
                    FeedRead::Pruned { .. }
                ),
                "{name}"
            );
            let (none, _, _) = feed(s.changes_since(floor).await.unwrap());
            assert!(none.is_empty(), "{name}");
        } else {
            assert!(changes.is_empty(), "a single-node store has no feed");
        }
    }
}

/// The route change of (bot, staging) among a command's changes.
fn extra_of(changes: &[Change]) -> switchyard::domain::RouteExtra {
    changes
        .iter()
        .find_map(|c| match c {
            Change::Route { extra: Some(e), .. } => Some((**e).clone()),
            _ => None,
        })
        .expect("a route change with its extra state")
}

#[tokio::test]
async fn canaries_releases_policies_and_scopes_in_every_store() {
    let _pg = PG_LOCK.read().await;
    for (name, s, _url, _dir) in stores("conformance::canaries_releases_policies_and_scopes").await
    {
        setup(&s, "bot", 3).await;
        s.execute(deploy("bot", "staging", 1)).await.unwrap();
        let canary = |w: u32| {
            mv(
                "bot",
                "staging",
                MoveKind::Canary {
                    version: VersionRef {
                        agent: None,
                        number: 2,
                    },
                    weight: w,
                },
            )
        };
        let started = s.execute(canary(1000)).await.unwrap();
        let e = extra_of(&started.changes);
        let (c, v) = e.canary.clone().expect("the canary");
        assert_eq!((c.version, c.weight, v.number), (2, 1000, 2), "{name}");
        assert_eq!(c.start_revision, started.revision, "{name}");
        assert_eq!(
            e.forward.map(|f| f.1),
            Some(2),
            "{name}: a canary start is watched"
        );
        let grown = s.execute(canary(5000)).await.unwrap();
        let c2 = extra_of(&grown.changes).canary.unwrap().0;
        assert_eq!(
            (c2.weight, c2.start_revision),
            (5000, c.start_revision),
            "{name}"
        );
        // the pointer's own version did not move
        let d = s.deployment(agent("bot")).await.unwrap();
        let p = d
            .environments
            .iter()
            .find(|(e, _)| e.as_str() == "staging")
            .unwrap()
            .1;
        assert_eq!(
            (p.version, p.canary.map(|c| c.version)),
            (Some(1), Some(2)),
            "{name}"
        );
        let blocked = s.execute(deploy("bot", "staging", 3)).await.unwrap_err();
        assert!(
            matches!(blocked, Error::Domain(DomainError::CanaryOpen { .. })),
            "{name}"
        );
        let aborted = s.execute(rollback("bot", "staging")).await.unwrap();
        let Outcome::Move(m) = &aborted.outcome else {
            panic!()
        };
        assert_eq!(
            (m.action.as_str(), m.version),
            ("canary_abort", Some(2)),
            "{name}"
        );
        let e = extra_of(&aborted.changes);
        assert!(e.canary.is_none(), "{name}");
        let pins: Vec<(u32, u64)> = e.pinnable.iter().map(|(v, r)| (v.number, *r)).collect();
        assert_eq!(
            pins,
            [(2, aborted.revision), (1, 0)],
            "{name}: v2 released by the abort"
        );

        // policies merge, are audited, and reach the route
        let patch: switchyard::domain::PolicyPatch =
            serde_json::from_str(r#"{"session_affinity":"sticky","auto_rollback":{"window_s":5}}"#)
                .unwrap();
        let set = s
            .execute(Command::SetPolicy {
                agent: agent("bot"),
                environment: env("staging"),
                patch,
                actor: "ops".into(),
            })
            .await
            .unwrap();
        let e = extra_of(&set.changes);
        assert_eq!(
            e.policy.session_affinity,
            switchyard::domain::Affinity::Sticky,
            "{name}"
        );
        let p = s.policy(agent("bot"), env("staging")).await.unwrap();
        assert_eq!(p.auto_rollback.unwrap().window_s, 5, "{name}");
        let h = s
            .policy_history(agent("bot"), env("staging"), 10)
            .await
            .unwrap();
        assert_eq!((h.len(), h[0].actor.as_str()), (1, "ops"), "{name}");
        assert_eq!(h[0].before, switchyard::domain::Policy::default(), "{name}");

        // a stop releases the version in every environment
        let stopped = s
            .execute(Command::SetVersionState {
                agent: agent("bot"),
                version: VersionRef {
                    agent: None,
                    number: 1,
                },
                state: VersionState::Stopped,
            })
            .await
            .unwrap();
        let e = extra_of(&stopped.changes);
        assert!(
            e.pinnable.iter().all(|(v, _)| v.number != 1),
            "{name}: stopped versions take no pins"
        );

        // scopes round-trip; an unknown one is refused
        let m = mint().unwrap();
        let t = s
            .execute(Command::CreateToken {
                created_by: "conformance".into(),
                agent: agent("bot"),
                environment: env("staging"),
                name: String::new(),
                expires_at: None,
                id: m.id,
                hash: m.hash,
                scopes: vec!["pin".into(), "pin".into()],
            })
            .await
            .unwrap();
        let Outcome::Token(t) = t.outcome else {
            panic!()
        };
        assert_eq!(t.scopes, ["pin"], "{name}");
        let listed = s.tokens(agent("bot"), env("staging")).await.unwrap();
        assert_eq!(listed[0].scopes, ["pin"], "{name}");
        let m = mint().unwrap();
        let bad = s
            .execute(Command::CreateToken {
                created_by: "conformance".into(),
                agent: agent("bot"),
                environment: env("staging"),
                name: String::new(),
                expires_at: None,
                id: m.id,
                hash: m.hash,
                scopes: vec!["admin".into()],
            })
            .await;
        assert!(bad.is_err(), "{name}");
        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.pin_key.map(|k| k.len()), Some(32), "{name}");
    }
}

#[tokio::test]
async fn secrets_token_uses_and_injections_in_both_stores() {
    use switchyard::domain::{Inject, Sealed};
    for (name, s, _, _dir) in stores("secrets_token_uses_and_injections").await {
        s.execute(Command::CreateAgent {
            name: agent("bot"),
            description: String::new(),
        })
        .await
        .unwrap();
        let spec = VersionSpec {
            upstreams: vec!["http://127.0.0.1:9".into()],
            inject: vec![Inject {
                header: "X-Key".into(),
                secret: "KEY".into(),
                format: "k={}".into(),
            }],
            ..Default::default()
        };
        s.execute(Command::CreateVersion {
            agent: agent("bot"),
            spec,
            author: "t".into(),
        })
        .await
        .unwrap();
        let v = s
            .version(
                agent("bot"),
                VersionRef {
                    agent: None,
                    number: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(v.inject[0].header, "x-key", "{name}");
        assert_eq!(v.inject[0].format, "k={}", "{name}");
        let sealed = |tag: u8| Sealed {
            key_id: "kabc".into(),
            nonce: vec![tag; 12],
            ciphertext: vec![tag, 0, 255],
        };
        let set = |environment: Option<EnvName>, tag: u8| Command::SetSecret {
            agent: agent("bot"),
            name: "KEY".into(),
            environment,
            sealed: sealed(tag),
            actor: "alice".into(),
            on_behalf_of: Some("ci".into()),
        };
        // missing: the deploy is refused naming it
        let e = s.execute(deploy("bot", "staging", 1)).await.unwrap_err();
        assert!(
            matches!(&e, Error::Domain(DomainError::MissingSecret { names, .. }) if names == &["KEY"]),
            "{name}: {e:?}"
        );
        s.execute(set(None, 1)).await.unwrap();
        s.execute(set(Some(env("staging")), 2)).await.unwrap();
        s.execute(set(Some(env("staging")), 3)).await.unwrap();
        let applied = s.execute(deploy("bot", "staging", 1)).await.unwrap();
        // the route carries the staging value, sealed as written
        let Change::Route { extra, .. } = &applied.changes[0] else {
            panic!("{name}")
        };
        let secrets = &extra.as_ref().unwrap().secrets;
        assert_eq!(secrets.len(), 1, "{name}");
        assert_eq!(secrets[0].sealed, sealed(3), "{name}");
        assert_eq!(secrets[0].updated_by, "alice", "{name}");
        let all = s.secrets(agent("bot")).await.unwrap();
        assert_eq!(all.len(), 2, "{name}");
        assert_eq!(
            s.secret_key_ids().await.unwrap(),
            ["kabc".to_owned()],
            "{name}"
        );
        // the staging value may go (the agent-wide one stays); the last may not
        let del = |environment: Option<EnvName>| Command::DeleteSecret {
            agent: agent("bot"),
            name: "KEY".into(),
            environment,
            actor: "bob".into(),
            on_behalf_of: None,
        };
        s.execute(del(Some(env("staging")))).await.unwrap();
        let e = s.execute(del(None)).await.unwrap_err();
        assert!(
            matches!(e, Error::Domain(DomainError::SecretInUse { .. })),
            "{name}: {e:?}"
        );
        let audit = s.secret_audit(agent("bot"), 10).await.unwrap();
        let seen: Vec<(&str, &str, Option<&str>)> = audit
            .iter()
            .map(|a| {
                (
                    a.action.as_str(),
                    a.actor.as_str(),
                    a.environment.as_ref().map(|e| e.as_str()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("delete", "bob", Some("staging")),
                ("set", "alice", Some("staging")),
                ("set", "alice", Some("staging")),
                ("set", "alice", None),
            ],
            "{name}"
        );
        assert_eq!(audit[3].on_behalf_of.as_deref(), Some("ci"), "{name}");

        // a token's minter and last use; a use only moves it forward
        let m = mint().unwrap();
        s.execute(Command::CreateToken {
            created_by: "carol".into(),
            agent: agent("bot"),
            environment: env("staging"),
            name: String::new(),
            expires_at: None,
            id: m.id.clone(),
            hash: m.hash,
            scopes: vec![],
        })
        .await
        .unwrap();
        let rev = s.revision().await.unwrap();
        s.touch_tokens(vec![(m.id.clone(), 2000), ("tok_gone".into(), 5)])
            .await
            .unwrap();
        s.touch_tokens(vec![(m.id.clone(), 1000)]).await.unwrap();
        let t = &s.tokens(agent("bot"), env("staging")).await.unwrap()[0];
        assert_eq!(
            (t.created_by.as_str(), t.last_used_at),
            ("carol", Some(2000)),
            "{name}"
        );
        assert_eq!(
            s.revision().await.unwrap(),
            rev,
            "{name}: a use is no revision"
        );
    }
}
