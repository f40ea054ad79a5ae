//! The routing table the data plane reads: token hash → (agent, environment) slot, and
//! per slot one `ArcSwap` holding the live route.
//!
//! Costs: a request does one `DashMap` read of the token index (a shard read lock held
//! only while an `Arc` is cloned, never across an `.await`) and one `ArcSwap::load`.
//! Neither grows with the number of agents, versions, environments or tokens. A pointer
//! move replaces one slot's route in O(1): it never rebuilds or copies the table.
//!
//! Writers are the control plane (after a store commit) and, in a fleet, the change
//! listener. Routes carry the store revision they were built at; a slot only ever moves
//! forward in revision, so two racing writers cannot leave an older route in place.
//!
//! This module knows no HTTP server or client, no connection pool and no SQL: an
//! endpoint's connection pool is an opaque handle that the proxy made
//! ([`Endpoints`]) and reads back; from the `http` crate it takes only `HeaderValue`
//! and `HeaderName`, for the header fields built once per route (labels, and the
//! headers a version injects from its secrets, opened with the node's key when the
//! route is built).

use crate::domain::{
    now_ms, AgentName, Change, EnvName, Millis, TokenHash, TokenRecord, Version, VersionState,
};
use crate::telemetry::{Metrics, RouteMetrics};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::HeaderValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod checks;
pub mod health;
pub mod release;
pub mod streams;
mod verified;

pub use release::{Bake, Choice, PinEntry, PinKey, Pinned, Which};

pub use health::{EndpointState, HealthState, Replicas, RetryBudget, UpstreamPolicy};

/// What the data plane keeps for one upstream address — the proxy's connection pool —
/// opaque to the table: the proxy made it and the proxy reads it back.
pub type EndpointHandle = Arc<dyn std::any::Any + Send + Sync>;

/// Turns a version's upstream URL into its address and handle when a route is built.
/// The same address gives the same handle, so routes naming it share it.
pub trait Endpoints: Send + Sync + std::fmt::Debug {
    /// `host:port` and the handle of `url`; None for a URL the data plane cannot use.
    fn endpoint(&self, url: &str) -> Option<(Arc<str>, EndpointHandle)>;

    /// Whether `url` answers within `timeout`: `GET path` below 500 when a path is
    /// given, else a connection (TLS included for `https://`). Why not, when it fails.
    fn probe<'a>(&'a self, url: &'a str, path: Option<&'a str>, timeout: Duration) -> Probe<'a>;
}

/// A probe's outcome, when it comes: `Err` says why the endpoint did not pass.
pub type Probe<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Endpoints for a table that never forwards (tests, tools): the address alone.
#[derive(Debug, Default)]
pub struct NoEndpoints;

impl Endpoints for NoEndpoints {
    fn endpoint(&self, url: &str) -> Option<(Arc<str>, EndpointHandle)> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let addr = rest.split('/').next().unwrap_or(rest);
        Some((Arc::from(addr), Arc::new(())))
    }

    /// A TCP connect to the address (no HTTP: this table forwards nothing).
    fn probe<'a>(&'a self, url: &'a str, _path: Option<&'a str>, timeout: Duration) -> Probe<'a> {
        Box::pin(async move {
            let (addr, _) = self.endpoint(url).ok_or("not a URL")?;
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_ref())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect failed: {e}")),
                Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
            }
        })
    }
}

/// One upstream endpoint of a version, resolved once when the route is built.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, for logs.
    pub addr: Arc<str>,
    /// What the data plane keeps for this address (see [`Endpoints`]).
    pub handle: EndpointHandle,
    /// This node's view of it for this version: load, failures, ejection.
    pub state: Arc<EndpointState>,
}

/// Headers a target sets from secrets: (name, value marked sensitive).
pub type Injected = Box<[(http::HeaderName, HeaderValue)]>;

/// The version a slot routes to, with everything the proxy needs pre-built.
#[derive(Debug)]
pub struct Target {
    pub version: u32,
    /// `v3`, ready to be sent as a header value.
    pub label: HeaderValue,
    pub endpoints: Vec<Endpoint>,
    pub stopped: bool,
    /// Retries of this version on this node ([`health`]).
    pub budget: Arc<RetryBudget>,
    /// The version's active health check, run while it is live ([`checks`]).
    pub health: Option<crate::domain::HealthSpec>,
    /// Headers set from secrets on every request to it, values marked sensitive.
    pub inject: Injected,
    /// Secrets it injects that this node cannot supply (none set, or sealed with
    /// another key): requests to it are refused rather than sent without them.
    pub inject_missing: Option<Box<str>>,
}

impl Target {
    /// The endpoint for the next attempt, none of those in `tried` ([`health::pick`]).
    pub fn pick(&self, tried: u32, no_healthy: &mut bool) -> Option<usize> {
        health::pick(self, tried, no_healthy)
    }
}

impl Replicas for Target {
    fn count(&self) -> usize {
        self.endpoints.len()
    }

    fn state(&self, i: usize) -> &Arc<EndpointState> {
        &self.endpoints[i].state
    }
}

/// What a slot serves right now.
#[derive(Debug)]
pub struct Route {
    /// Store revision this route was built at.
    pub revision: u64,
    /// None: the environment has no version deployed.
    pub target: Option<Target>,
    /// Metric handles labelled with this route's agent, environment and version.
    pub metrics: RouteMetrics,
    /// The revision of the pointer's last move (what an automatic rollback names as
    /// its expected revision).
    pub pointer_revision: u64,
    /// The canary (first, when open) and the other versions valid pins may name.
    pub alts: Vec<Alt>,
    /// Every version a valid pin may name, and where its target is.
    pub pins: Vec<PinEntry>,
    /// The canary split and session affinity; None for a route with neither.
    pub choice: Option<Box<Choice>>,
    /// The outcome window of the version under watch after a forward move.
    pub bake: Option<Arc<Bake>>,
    /// How long streams on a version this route took out go on (`stream_drain_s`).
    pub stream_drain: Duration,
}

/// A version a route can serve besides its own: the canary or a pinned version.
#[derive(Debug)]
pub struct Alt {
    pub target: Target,
    /// Made on first use: a pinned version's series appear only when it serves.
    metrics: std::sync::OnceLock<RouteMetrics>,
}

impl Route {
    /// A route that serves nothing (a slot before its first move).
    fn empty() -> Self {
        Route {
            revision: 0,
            target: None,
            metrics: RouteMetrics::noop(),
            pointer_revision: 0,
            alts: Vec::new(),
            pins: Vec::new(),
            choice: None,
            bake: None,
            stream_drain: Duration::from_secs(
                crate::domain::Policy::default().stream_drain_s.into(),
            ),
        }
    }

    /// The target `w` names.
    pub fn served(&self, w: Which) -> Option<&Target> {
        match w {
            Which::Main => self.target.as_ref(),
            Which::Alt(i) => self.alts.get(usize::from(i)).map(|a| &a.target),
        }
    }

    /// The metric handles of the target `w` names, made on first use for a pinned one.
    pub fn metrics_of(&self, w: Which, metrics: &Metrics, slot: &Slot) -> &RouteMetrics {
        match w {
            Which::Main => &self.metrics,
            Which::Alt(i) => match self.alts.get(usize::from(i)) {
                Some(a) => a.metrics.get_or_init(|| {
                    let label = a.target.label.to_str().unwrap_or("unknown");
                    metrics.route(slot.agent.as_str(), slot.environment.as_str(), label)
                }),
                None => &self.metrics,
            },
        }
    }

    /// Where version `n` is served, if a valid pin may name it.
    pub fn pin(&self, n: u32) -> Option<&PinEntry> {
        self.pins.iter().find(|p| p.version == n)
    }

    /// The bake counting requests served by `w`, while it is active.
    pub fn bake_of(&self, w: Which) -> Option<&Bake> {
        let b = self.bake.as_deref()?;
        let watched = if b.canary { Which::Alt(0) } else { Which::Main };
        (w == watched).then_some(b)
    }
}

/// One (agent, environment): its names as header values and its live route.
#[derive(Debug)]
pub struct Slot {
    pub agent: AgentName,
    pub environment: EnvName,
    pub agent_header: HeaderValue,
    pub environment_header: HeaderValue,
    /// Requests answered for this slot and how many of them were 5xx, whatever the
    /// version (read by the admin API for `switchyard status`).
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// The SSE and WebSocket streams open on this slot.
    pub streams: streams::Streams,
    route: ArcSwap<Route>,
}

impl Slot {
    fn new(agent: AgentName, environment: EnvName) -> Self {
        let hv =
            |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"));
        Self {
            agent_header: hv(agent.as_str()),
            environment_header: hv(environment.as_str()),
            agent,
            environment,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            streams: streams::Streams::default(),
            route: ArcSwap::from_pointee(Route::empty()),
        }
    }

    /// The live route: one atomic load and a reference-count increment, no lock. The
    /// caller keeps its `Arc` for the whole request, so a move never changes the
    /// version a request in flight is served by.
    pub fn route(&self) -> Arc<Route> {
        self.route.load_full()
    }

    /// Installs `route` unless the slot already holds a newer one. Returns whether
    /// it was installed.
    fn install(&self, route: Route) -> bool {
        let route = Arc::new(route);
        let mut installed = false;
        let old = self.route.rcu(|cur| {
            if cur.revision <= route.revision {
                installed = true;
                Arc::clone(&route)
            } else {
                installed = false;
                Arc::clone(cur)
            }
        });
        if installed {
            let told = self.streams.moved(&old, &route);
            if told > 0 {
                tracing::info!(agent = %self.agent, environment = %self.environment, streams = told, drain_s = route.stream_drain.as_secs(), "streams on a version that left will end after the drain");
            }
        }
        installed
    }
}

/// A token as the data plane knows it. Replaced whole when its record changes; the
/// replaced entry is marked stale for the workers that cached it ([`verified`]).
#[derive(Debug)]
pub struct TokenEntry {
    pub slot: Arc<Slot>,
    /// May send `x-switchyard-pin-version` (the `pin` scope).
    pub may_pin: bool,
    pub expires_at: Option<Millis>,
    pub revoked: bool,
    pub suspended: bool,
    /// A newer record of this token is in the table.
    stale: AtomicBool,
    /// The token's id, for its use record.
    id: Box<str>,
    /// The table's minute when it last let a request through ([`RoutingTable::minute`]).
    used_minute: AtomicU64,
}

impl TokenEntry {
    /// The slot, unless the token is revoked or expired (read at every request).
    fn check(&self) -> Result<Arc<Slot>, AuthError> {
        if self.revoked {
            return Err(AuthError::Revoked);
        }
        if self.suspended {
            return Err(AuthError::Suspended);
        }
        if let Some(exp) = self.expires_at {
            if now_ms() >= exp {
                return Err(AuthError::Expired);
            }
        }
        Ok(Arc::clone(&self.slot))
    }
}

/// Hashes a token index key. The keys are SHA-256 digests, already uniform, so their
/// first eight bytes are the hash; only tokens the gateway minted are ever inserted,
/// so a client choosing what to present cannot crowd a bucket.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

type DigestMap<V> = DashMap<TokenHash, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// The key of a slot: `agent/environment` (neither name can contain `/`).
fn slot_key<'a>(buf: &'a mut [u8; 128], agent: &AgentName, env: &EnvName) -> &'a str {
    let (a, e) = (agent.as_str().as_bytes(), env.as_str().as_bytes());
    let n = a.len() + 1 + e.len();
    if n > buf.len() {
        return "";
    }
    buf[..a.len()].copy_from_slice(a);
    buf[a.len()] = b'/';
    buf[a.len() + 1..n].copy_from_slice(e);
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// Why a presented token does not let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Unknown,
    Revoked,
    Suspended,
    Expired,
}

/// The table. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct RoutingTable {
    metrics: Arc<Metrics>,
    endpoints: Arc<dyn Endpoints>,
    slots: DashMap<String, Arc<Slot>>,
    /// Endpoint states by `agent/vN/url` and retry budgets by `agent/vN`: kept for
    /// the life of the node, so a version that comes back keeps what was learned.
    replicas: DashMap<String, Arc<EndpointState>>,
    budgets: DashMap<String, Arc<RetryBudget>>,
    policy: UpstreamPolicy,
    tokens: DigestMap<Arc<TokenEntry>>,
    /// This table's identity and key in the workers' verified-token caches.
    cache_key: verified::CacheKey,
    /// Highest store revision applied.
    revision: AtomicU64,
    /// The change feed's revision this table has applied, in order (fleet nodes).
    feed_revision: AtomicU64,
    /// The key that signs session pins (from the store).
    pin_key: arc_swap::ArcSwapOption<PinKey>,
    /// The bake of each slot (`agent/environment`), kept across rebuilds of its route.
    bakes: DashMap<String, Arc<Bake>>,
    /// The key that opens secret values (None: this node has none).
    secret_key: arc_swap::ArcSwapOption<crate::sealing::SecretKey>,
    /// The current minute (ms / 60000) as the usage task last set it; 0 until then.
    minute: AtomicU64,
    /// Tokens used in a minute they had not been used in yet, with when: drained in
    /// batches by the usage task ([`Self::take_used`]).
    used: std::sync::Mutex<Vec<(String, Millis)>>,
}

impl Default for RoutingTable {
    fn default() -> Self {
        Self::with_metrics(Arc::new(Metrics::disabled()))
    }
}

impl RoutingTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self::with(metrics, Arc::new(NoEndpoints))
    }

    /// A table whose routes record into `metrics` and reach their upstreams through
    /// the handles `endpoints` gives.
    pub fn with(metrics: Arc<Metrics>, endpoints: Arc<dyn Endpoints>) -> Self {
        Self {
            metrics,
            endpoints,
            slots: DashMap::new(),
            replicas: DashMap::new(),
            budgets: DashMap::new(),
            policy: UpstreamPolicy::default(),
            tokens: DigestMap::default(),
            cache_key: verified::CacheKey::new(),
            revision: AtomicU64::new(0),
            feed_revision: AtomicU64::new(0),
            pin_key: arc_swap::ArcSwapOption::empty(),
            bakes: DashMap::new(),
            secret_key: arc_swap::ArcSwapOption::empty(),
            minute: AtomicU64::new(0),
            used: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sets the key that signs and verifies session pins.
    pub fn set_pin_key(&self, key: &[u8]) {
        self.pin_key.store(Some(Arc::new(PinKey::new(key))));
    }

    pub fn pin_key(&self) -> Option<Arc<PinKey>> {
        self.pin_key.load_full()
    }

    /// Whether the token `token` (its text) may send an evaluation pin. Off the
    /// common path: only a request that sends one asks.
    pub fn token_may_pin(&self, token: &[u8]) -> bool {
        let hash = crate::domain::token::hash_token(token);
        self.token_entry(&hash).is_some_and(|e| e.may_pin)
    }

    /// Tells every open stream to end at `deadline` with `reason` (shutdown).
    pub fn end_streams(&self, reason: streams::EndReason, deadline: tokio::time::Instant) {
        for s in self.slots.iter() {
            let version = streams::new_version(&s.route());
            s.streams.end_all(reason, version, deadline);
        }
    }

    /// Every slot's live route, for the background tasks that read them.
    pub fn routes(&self) -> Vec<(Arc<Slot>, Arc<Route>)> {
        self.slots
            .iter()
            .map(|s| (Arc::clone(s.value()), s.route()))
            .collect()
    }

    /// Ejection and retry rules (`[upstream]`); set before any route is installed.
    pub fn with_policy(mut self, policy: UpstreamPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// Probes one upstream URL ([`Endpoints::probe`]).
    pub async fn probe(
        &self,
        url: &str,
        path: Option<&str>,
        timeout: Duration,
    ) -> Result<(), String> {
        self.endpoints.probe(url, path, timeout).await
    }

    /// Notes that `e` let a request through: once per token per minute it is queued
    /// for the store; otherwise this is two relaxed loads.
    #[inline]
    fn note_use(&self, e: &TokenEntry) {
        let m = self.minute.load(Ordering::Relaxed);
        if e.used_minute.load(Ordering::Relaxed) != m {
            self.queue_use(e, m);
        }
    }

    #[cold]
    fn queue_use(&self, e: &TokenEntry, m: u64) {
        // one request of the minute wins the swap and queues it
        if e.used_minute.swap(m, Ordering::Relaxed) == m {
            return;
        }
        if let Ok(mut q) = self.used.lock() {
            q.push((e.id.to_string(), now_ms()));
        }
    }

    /// Advances the minute tokens' uses are recorded by (the usage task calls it) and
    /// takes the uses queued so far.
    pub fn take_used(&self, now: Millis) -> Vec<(String, Millis)> {
        self.minute
            .store(u64::try_from(now / 60_000).unwrap_or(0), Ordering::Relaxed);
        self.used
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Sets the key that opens secret values; set before any route is installed.
    pub fn set_secret_key(&self, key: Arc<crate::sealing::SecretKey>) {
        self.secret_key.store(Some(key));
    }

    pub fn secret_key(&self) -> Option<Arc<crate::sealing::SecretKey>> {
        self.secret_key.load_full()
    }

    /// The headers `v` injects, from `secrets` (resolved for the route's environment),
    /// or the names this node cannot supply. Never logs a value.
    fn injections(
        &self,
        v: &Version,
        secrets: &[crate::domain::SecretRecord],
    ) -> (Injected, Option<Box<str>>) {
        use crate::domain::secret::binding;
        if v.inject.is_empty() {
            return (Box::new([]), None);
        }
        let key = self.secret_key();
        let mut out = Vec::with_capacity(v.inject.len());
        let mut missing = Vec::new();
        for i in &v.inject {
            let value = secrets.iter().find(|s| s.name == i.secret).and_then(|s| {
                let key = key.as_ref()?;
                let b = binding(&s.agent, s.environment.as_ref(), &s.name);
                match key.open(&b, &s.sealed) {
                    Ok(plain) => String::from_utf8(plain).ok(),
                    Err(e) => {
                        tracing::error!(agent = %v.agent, secret = %s.name, reason = %e, "a secret cannot be opened");
                        None
                    }
                }
            });
            let header = value.and_then(|value| {
                let name = http::HeaderName::from_bytes(i.header.as_bytes()).ok()?;
                let mut hv = HeaderValue::from_str(&i.render(&value)).ok()?;
                hv.set_sensitive(true);
                Some((name, hv))
            });
            match header {
                Some(h) => out.push(h),
                None => missing.push(i.secret.as_str()),
            }
        }
        let missing = (!missing.is_empty()).then(|| missing.join(", ").into_boxed_str());
        (out.into_boxed_slice(), missing)
    }

    /// Builds what a slot serves for `v`: its endpoints with their pools and states,
    /// and the headers it injects from `secrets`.
    fn target(&self, v: &Version, secrets: &[crate::domain::SecretRecord]) -> Target {
        let label = v.label();
        let endpoints = v
            .upstreams
            .iter()
            .filter_map(|u| {
                let (addr, handle) = self.endpoints.endpoint(u)?;
                let key = format!("{}/{label}/{u}", v.agent);
                let state = Arc::clone(
                    self.replicas
                        .entry(key)
                        .or_insert_with(|| Arc::new(EndpointState::new(u)))
                        .value(),
                );
                Some(Endpoint {
                    addr,
                    handle,
                    state,
                })
            })
            .collect();
        let budget = Arc::clone(
            self.budgets
                .entry(format!("{}/{label}", v.agent))
                .or_default()
                .value(),
        );
        let (inject, inject_missing) = self.injections(v, secrets);
        Target {
            inject,
            inject_missing,
            version: v.number,
            label: HeaderValue::from_str(&label)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            endpoints,
            stopped: v.state == VersionState::Stopped,
            budget,
            health: v.health.clone(),
        }
    }

    /// This node's states of the endpoints of `agent`'s version `label` (`v3`), in
    /// the order of `upstreams`; None for those it never routed to.
    pub fn endpoint_states(
        &self,
        agent: &AgentName,
        label: &str,
        upstreams: &[String],
    ) -> Vec<Option<Arc<EndpointState>>> {
        upstreams
            .iter()
            .map(|u| {
                self.replicas
                    .get(&format!("{agent}/{label}/{u}"))
                    .map(|s| Arc::clone(s.value()))
            })
            .collect()
    }

    /// The last revision of the change feed applied in order.
    pub fn feed_revision(&self) -> u64 {
        self.feed_revision.load(Ordering::Acquire)
    }

    pub fn set_feed_revision(&self, revision: u64) {
        self.feed_revision.store(revision, Ordering::Release);
        self.note_revision(revision);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Authenticates a token hash and returns its slot. The caller loads the route.
    /// (The data plane presents the token's text: [`Self::authenticate_token`].)
    pub fn authenticate(&self, hash: &TokenHash) -> Result<Arc<Slot>, AuthError> {
        self.token_entry(hash).ok_or(AuthError::Unknown)?.check()
    }

    fn token_entry(&self, hash: &TokenHash) -> Option<Arc<TokenEntry>> {
        self.tokens.get(hash).map(|e| Arc::clone(e.value()))
    }

    /// The slot of (agent, environment), created empty if needed.
    pub fn slot(&self, agent: &AgentName, environment: &EnvName) -> Arc<Slot> {
        let mut buf = [0u8; 128];
        let key = slot_key(&mut buf, agent, environment);
        if let Some(s) = self.slots.get(key) {
            return Arc::clone(s.value());
        }
        Arc::clone(
            self.slots
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Slot::new(agent.clone(), environment.clone())))
                .value(),
        )
    }

    /// The slot of (agent, environment) if it exists.
    pub fn find_slot(&self, agent: &AgentName, environment: &EnvName) -> Option<Arc<Slot>> {
        let mut buf = [0u8; 128];
        self.slots
            .get(slot_key(&mut buf, agent, environment))
            .map(|s| Arc::clone(s.value()))
    }

    /// Applies one change from the control plane. O(1) in the size of the table.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::Route {
                agent,
                environment,
                revision,
                version,
                extra,
            } => {
                let label = version.as_ref().map(|v| v.label());
                let metrics = self.metrics.route(
                    agent.as_str(),
                    environment.as_str(),
                    label.as_deref().unwrap_or("none"),
                );
                let secrets = extra.as_ref().map_or(&[][..], |e| &e.secrets[..]);
                let mut route = Route {
                    revision: *revision,
                    target: version.as_ref().map(|v| self.target(v, secrets)),
                    metrics,
                    pointer_revision: *revision,
                    ..Route::empty()
                };
                if let Some(e) = extra {
                    self.release_state(&mut route, agent, environment, version.as_ref(), e);
                }
                self.slot(agent, environment).install(route);
                self.note_revision(*revision);
            }
            Change::Token(t) => self.put_token(t),
        }
    }

    /// Fills in a route's canary, pins, choice and bake from the store's account.
    fn release_state(
        &self,
        route: &mut Route,
        agent: &AgentName,
        environment: &EnvName,
        version: Option<&Version>,
        e: &crate::domain::RouteExtra,
    ) {
        use crate::domain::Affinity;
        route.pointer_revision = e.pointer_revision;
        route.stream_drain = Duration::from_secs(e.policy.stream_drain_s.into());
        let main = version.map(|v| v.number);
        let canary = e.canary.as_ref().map(|(c, _)| *c);
        if let Some((_, v)) = &e.canary {
            route.alts.push(Alt {
                target: self.target(v, &e.secrets),
                metrics: std::sync::OnceLock::from(self.metrics.route(
                    agent.as_str(),
                    environment.as_str(),
                    &v.label(),
                )),
            });
        }
        for (v, released_at) in &e.pinnable {
            let which = if Some(v.number) == main {
                Which::Main
            } else if canary.is_some_and(|c| c.version == v.number) {
                Which::Alt(0)
            } else {
                let Ok(i) = u16::try_from(route.alts.len()) else {
                    continue;
                };
                let target = self.target(v, &e.secrets);
                if target.inject_missing.is_some() {
                    // a version that cannot get its secrets is not pinnable
                    continue;
                }
                route.alts.push(Alt {
                    target,
                    metrics: std::sync::OnceLock::new(),
                });
                Which::Alt(i)
            };
            route.pins.push(PinEntry {
                version: v.number,
                released_at: *released_at,
                which,
            });
        }
        let sticky = (e.policy.session_affinity == Affinity::Sticky)
            .then(|| i64::from(e.policy.session_ttl_s) * 1000);
        if canary.is_some() || sticky.is_some() {
            route.choice = Some(Box::new(Choice {
                canary: canary.map(|c| (c.weight, c.start_revision)),
                sticky_ttl_ms: sticky,
            }));
        }
        let mut buf = [0u8; 128];
        let key = slot_key(&mut buf, agent, environment).to_owned();
        let watch = match (e.policy.auto_rollback, e.forward) {
            (Some(spec), Some((at, n))) => {
                let on_canary = canary.is_some_and(|c| c.version == n);
                (on_canary || main == Some(n)).then_some((spec, at, n, on_canary))
            }
            _ => None,
        };
        match watch {
            Some((spec, at, n, on_canary)) if now_ms() < at + i64::from(spec.bake_s) * 1000 => {
                let bake = self
                    .bakes
                    .get(&key)
                    .map(|b| Arc::clone(b.value()))
                    .filter(|b| b.same_watch(n, on_canary, at, &spec))
                    .unwrap_or_else(|| Arc::new(Bake::new(n, on_canary, at, spec)));
                self.bakes.insert(key, Arc::clone(&bake));
                route.bake = Some(bake);
            }
            _ => {
                self.bakes.remove(&key);
            }
        }
    }

    fn put_token(&self, t: &TokenRecord) {
        let entry = TokenEntry {
            may_pin: t.scopes.iter().any(|s| s == "pin"),
            slot: self.slot(&t.agent, &t.environment),
            expires_at: t.expires_at,
            revoked: t.revoked_at.is_some(),
            suspended: t.suspended_at.is_some(),
            stale: AtomicBool::new(false),
            id: t.id.as_str().into(),
            // never: its first use is recorded
            used_minute: AtomicU64::new(u64::MAX),
        };
        if let Some(old) = self.tokens.insert(t.hash, Arc::new(entry)) {
            old.stale.store(true, Ordering::Release);
        }
    }

    /// Records that the table reflects the store up to `revision`.
    pub fn note_revision(&self, revision: u64) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// (agent, version, endpoint address, up) of every endpoint of a live version,
    /// sorted and once each; for `switchyard_upstream_endpoint_up`.
    pub fn endpoint_health(&self) -> Vec<(String, String, String, bool)> {
        let now = now_ms();
        let mut out = std::collections::BTreeSet::new();
        for s in self.slots.iter() {
            let r = s.route();
            let Some(t) = r.target.as_ref() else { continue };
            let label = t.label.to_str().unwrap_or("unknown");
            for ep in &t.endpoints {
                let up = !matches!(
                    ep.state.state(now),
                    HealthState::Ejected | HealthState::Unhealthy
                );
                out.insert((
                    s.agent.to_string(),
                    label.to_owned(),
                    ep.addr.to_string(),
                    up,
                ));
            }
        }
        out.into_iter().collect()
    }

    /// (agent, environment, version) of every live pointer, sorted; for metrics.
    pub fn deployments(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<_> = self
            .slots
            .iter()
            .filter_map(|s| {
                let r = s.route();
                let t = r.target.as_ref()?;
                Some((
                    s.agent.to_string(),
                    s.environment.to_string(),
                    t.label.to_str().unwrap_or("unknown").to_owned(),
                ))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::hash_token;
    use crate::domain::VersionSpec;

    fn names(a: &str, e: &str) -> (AgentName, EnvName) {
        (
            AgentName::parse("a", a).unwrap(),
            EnvName::parse("e", e).unwrap(),
        )
    }

    fn version(agent: &AgentName, n: u32, port: u16) -> Version {
        VersionSpec {
            upstreams: vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://127.0.0.2:{port}"),
            ],
            ..Default::default()
        }
        .build(agent.clone(), n, "t".into(), 0)
        .unwrap()
    }

    fn token(agent: &AgentName, env: &EnvName, secret: &str) -> TokenRecord {
        TokenRecord {
            created_by: String::new(),
            last_used_at: None,
            id: format!("tok_{secret}"),
            agent: agent.clone(),
            environment: env.clone(),
            name: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            suspended_at: None,
            scopes: vec![],
            hash: hash_token(secret.as_bytes()),
        }
    }

    fn route(agent: &AgentName, env: &EnvName, rev: u64, v: Option<Version>) -> Change {
        Change::Route {
            agent: agent.clone(),
            environment: env.clone(),
            revision: rev,
            version: v,
            extra: None,
        }
    }

    #[test]
    fn token_resolves_to_its_slot_and_the_live_version() {
        let t = RoutingTable::new();
        let (a, e) = names("bot", "staging");
        t.apply(&Change::Token(token(&a, &e, "s1")));
        let slot = t.authenticate(&hash_token(b"s1")).unwrap();
        assert!(slot.route().target.is_none(), "not deployed yet");
        t.apply(&route(&a, &e, 2, Some(version(&a, 1, 9000))));
        let r = slot.route();
        let target = r.target.as_ref().unwrap();
        assert_eq!(target.version, 1);
        assert_eq!(target.label, "v1");
        assert_eq!(target.endpoints[0].addr.as_ref(), "127.0.0.1:9000");
        assert_eq!(t.revision(), 2);
        assert_eq!(
            t.authenticate(&hash_token(b"nope")).unwrap_err(),
            AuthError::Unknown
        );
    }

    #[test]
    fn a_move_swaps_one_slot_and_an_older_revision_never_wins() {
        let t = RoutingTable::new();
        let (a, e) = names("bot", "production");
        let (_, other) = names("bot", "staging");
        t.apply(&route(&a, &other, 1, Some(version(&a, 1, 1))));
        let before = t.find_slot(&a, &other).unwrap().route();
        t.apply(&route(&a, &e, 5, Some(version(&a, 2, 2))));
        t.apply(&route(&a, &e, 4, Some(version(&a, 1, 1))));
        let slot = t.find_slot(&a, &e).unwrap();
        assert_eq!(slot.route().target.as_ref().unwrap().version, 2);
        assert!(
            Arc::ptr_eq(&before, &t.find_slot(&a, &other).unwrap().route()),
            "other slots are untouched"
        );
        t.apply(&route(&a, &e, 6, None));
        assert!(slot.route().target.is_none());
        assert_eq!(t.slot_count(), 2);
    }

    #[test]
    fn in_flight_readers_keep_the_route_they_loaded() {
        let t = RoutingTable::new();
        let (a, e) = names("bot", "staging");
        t.apply(&route(&a, &e, 1, Some(version(&a, 1, 1))));
        let slot = t.slot(&a, &e);
        let held = slot.route();
        t.apply(&route(&a, &e, 2, Some(version(&a, 2, 2))));
        assert_eq!(held.target.as_ref().unwrap().version, 1);
        assert_eq!(slot.route().target.as_ref().unwrap().version, 2);
    }

    #[test]
    fn revoked_and_expired_tokens_are_refused() {
        let t = RoutingTable::new();
        let (a, e) = names("bot", "staging");
        let mut tok = token(&a, &e, "s");
        t.apply(&Change::Token(tok.clone()));
        assert!(t.authenticate(&tok.hash).is_ok());
        tok.revoked_at = Some(1);
        t.apply(&Change::Token(tok.clone()));
        assert_eq!(t.authenticate(&tok.hash).unwrap_err(), AuthError::Revoked);
        let mut old = token(&a, &e, "old");
        old.expires_at = Some(now_ms() - 1);
        t.apply(&Change::Token(old.clone()));
        assert_eq!(t.authenticate(&old.hash).unwrap_err(), AuthError::Expired);
        let mut later = token(&a, &e, "later");
        later.expires_at = Some(now_ms() + 60_000);
        t.apply(&Change::Token(later.clone()));
        assert!(t.authenticate(&later.hash).is_ok());
    }

    #[test]
    fn stopped_versions_and_two_endpoints_both_used() {
        let t = RoutingTable::new();
        let (a, e) = names("bot", "staging");
        let mut v = version(&a, 3, 7);
        t.apply(&route(&a, &e, 1, Some(v.clone())));
        let slot = t.slot(&a, &e);
        let r = slot.route();
        let target = r.target.as_ref().unwrap();
        let mut seen = [false; 2];
        for _ in 0..100 {
            let mut no_healthy = false;
            seen[target.pick(0, &mut no_healthy).unwrap()] = true;
            assert!(!no_healthy);
        }
        assert_eq!(seen, [true, true], "both endpoints are used");
        v.state = VersionState::Stopped;
        t.apply(&route(&a, &e, 2, Some(v)));
        assert!(slot.route().target.as_ref().unwrap().stopped);
    }
}
