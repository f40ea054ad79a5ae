//! The TOML configuration file: listeners, TLS, store, environments, limits, logs.
//!
//! Every table and key has a default; unknown keys are an error (a typo in a gateway
//! config must not pass silently). [`Config::validate`] names the setting at fault.
//! Command-line flags override the file in `main.rs`.

use crate::domain::{EnvName, EnvSpec, Pipeline};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem: which setting, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

fn err(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client traffic listener.
    pub listen: String,
    /// Admin API and /metrics listener.
    pub admin_listen: String,
    /// `sqlite://PATH` or `postgres://…`.
    pub store: String,
    /// Threads serving client traffic, each with its own runtime and upstream
    /// connections; 0 = one per CPU.
    pub workers: usize,
    /// A file holding the admin token (`SWITCHYARD_ADMIN_TOKEN` takes precedence).
    pub admin_token_file: Option<PathBuf>,
    pub tls: TlsConfig,
    pub environments: Vec<EnvironmentConfig>,
    pub limits: Limits,
    pub proxy: ProxyConfig,
    pub routing: RoutingConfig,
    pub upstream: UpstreamConfig,
    pub upstream_tls: UpstreamTlsConfig,
    pub fleet: FleetConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub demo: DemoConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9901".into(),
            store: "sqlite://data/switchyard.db".into(),
            workers: 0,
            admin_token_file: None,
            tls: TlsConfig::default(),
            environments: Pipeline::default()
                .stages()
                .iter()
                .map(|s| EnvironmentConfig {
                    name: s.name.to_string(),
                    protected: s.protected,
                })
                .collect(),
            limits: Limits::default(),
            proxy: ProxyConfig::default(),
            routing: RoutingConfig::default(),
            upstream: UpstreamConfig::default(),
            upstream_tls: UpstreamTlsConfig::default(),
            fleet: FleetConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            demo: DemoConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS client listener; off when empty.
    pub listen: Option<String>,
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// How often the two files are checked for a change, ms (0: only on SIGHUP).
    pub watch_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            cert: None,
            key: None,
            watch_interval_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    pub name: String,
    #[serde(default)]
    pub protected: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes → 431.
    pub max_header_bytes: usize,
    /// Largest request body, bytes → 413.
    pub max_body_bytes: u64,
    /// Time a client has to send the whole request head, ms.
    pub header_read_timeout_ms: u64,
    /// Time to open a connection to an upstream, ms → 504.
    pub upstream_connect_timeout_ms: u64,
    /// Time for an upstream to send its response head, ms → 504.
    pub upstream_response_timeout_ms: u64,
    /// Open client connections at most; one more is answered 503 `overloaded` and
    /// closed (up to `max_connections / 8 + 16` such answers at once; beyond that,
    /// closed at once).
    pub max_connections: usize,
    /// Client requests open at most, from head to the end of the response body;
    /// one more is answered 503 `overloaded`. Divided among the workers (rounded
    /// up), each enforcing its share, like nginx's `worker_connections`: no count
    /// is shared by every request.
    pub max_in_flight: usize,
    /// Longest wait for the next piece of a request body, ms → 408 and the
    /// connection closed.
    pub body_read_timeout_ms: u64,
    /// Longest a write to a client may make no progress (a client that stops
    /// reading), ms → the connection is closed.
    pub send_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream.
    pub upstream_idle_per_host: usize,
    /// How long in-flight requests may take to finish after SIGTERM, ms.
    pub drain_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            upstream_connect_timeout_ms: 2_000,
            upstream_response_timeout_ms: 30_000,
            max_connections: 10_000,
            max_in_flight: 10_000,
            body_read_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            upstream_idle_per_host: 512,
            drain_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    pub fn upstream_response_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_response_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
    /// Over-limit connections that may be waiting for their 503 at once.
    pub fn reject_slots(&self) -> usize {
        self.max_connections / 8 + 16
    }
}

/// A fleet on one PostgreSQL: how long the change feed keeps its events.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Change events older than this are pruned (seconds, at least 1). A node
    /// stopped or cut off for longer reloads the whole state when it comes back.
    pub feed_retention_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            feed_retention_s: 86_400,
        }
    }
}

impl FleetConfig {
    pub fn feed_retention(&self) -> Duration {
        Duration::from_secs(self.feed_retention_s)
    }
}

/// How a version's endpoints are chosen, ejected and retried, and how a candidate is
/// checked before a move.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Connect errors, timeouts or 5xx answers in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts, ms; each further one in a row doubles it.
    pub ejection_base_ms: u64,
    /// The longest an ejection lasts, ms.
    pub ejection_max_ms: u64,
    /// Further endpoints tried for one request at most.
    pub retries: u32,
    /// Retries started in the last 10 s may be this share (%) of the requests
    /// started in the last 10 s of the version on this node …
    pub retry_budget_percent: u32,
    /// … plus this many per second.
    pub retry_budget_min_per_s: u32,
    /// The time each endpoint of a candidate has to pass the gate's probe, ms.
    pub gate_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_base_ms: 30_000,
            ejection_max_ms: 300_000,
            retries: 1,
            retry_budget_percent: 20,
            retry_budget_min_per_s: 3,
            gate_timeout_ms: 2_000,
        }
    }
}

impl UpstreamConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(err("upstream.consecutive_failures", "must be at least 1"));
        }
        if self.ejection_base_ms == 0 {
            return Err(err("upstream.ejection_base_ms", "must be greater than 0"));
        }
        if self.ejection_max_ms < self.ejection_base_ms {
            return Err(err(
                "upstream.ejection_max_ms",
                "must be at least upstream.ejection_base_ms",
            ));
        }
        if self.retries > 15 {
            return Err(err("upstream.retries", "at most 15"));
        }
        if self.retry_budget_percent > 100 {
            return Err(err(
                "upstream.retry_budget_percent",
                "a percentage, 0 to 100",
            ));
        }
        if self.gate_timeout_ms == 0 || self.gate_timeout_ms > 60_000 {
            return Err(err("upstream.gate_timeout_ms", "between 1 and 60000"));
        }
        Ok(())
    }

    pub fn gate_timeout(&self) -> Duration {
        Duration::from_millis(self.gate_timeout_ms)
    }
}

/// How `https://` upstreams are verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM certificates to trust instead of the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// How requests are passed on: body buffering and field rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// A request body of at most this many bytes is read whole before any upstream
    /// is contacted (a broken or stalled one never reaches an upstream); a larger one
    /// is streamed. 0 streams every body.
    pub request_buffer_bytes: usize,
    /// Request fields with `_` in their name that are dropped before forwarding.
    pub underscore_fields: UnderscoreFields,
    /// Whether the client is a proxy whose forwarding fields are believed: `false`
    /// (default) replaces the client's `x-forwarded-*` and `forwarded` with this
    /// hop's view; `true` appends this hop to `x-forwarded-for` and `forwarded` and
    /// keeps the client's `x-forwarded-proto` and `x-forwarded-host`.
    pub trust_forwarded: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            request_buffer_bytes: 64 * 1024,
            underscore_fields: UnderscoreFields::default(),
            trust_forwarded: false,
        }
    }
}

/// How requests find their version beyond the pointer: canaries and sessions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The cookie that carries a session key (besides `x-switchyard-session`); empty:
    /// none. With it, session pins travel in a `swy_pin` cookie too.
    pub session_cookie: String,
}

/// Which request fields with an underscore in their name are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreFields {
    /// Those that, with `_` read as `-`, name a framing, hop-by-hop, credential or
    /// forwarding field (`transfer_encoding`, `x_forwarded_for`, …).
    #[default]
    DropLookalikes,
    /// Every one (nginx's default, `underscores_in_headers off`).
    DropAll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `switchyard=debug`); `RUST_LOG` takes precedence.
    pub level: String,
    /// One access-log event per request.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Record request metrics (the state series on /metrics are always there).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Loopback ports of the two built-in demo upstreams (`serve --demo`).
    pub ports: [u16; 2],
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            ports: [18101, 18102],
        }
    }
}

impl Config {
    /// The number of client worker threads this config asks for.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// Parses a TOML document; unknown keys and wrong types name the setting.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    err(format!("line {line}"), message)
                }
                None => err("config", message),
            }
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| err(format!("{}: {}", path.display(), e.setting), e.message))
    }

    /// Checks every value; the first problem is returned, naming its setting.
    pub fn validate(self) -> Result<Self, ConfigError> {
        parse_addr("listen", &self.listen)?;
        parse_addr("admin_listen", &self.admin_listen)?;
        if let Some(l) = &self.tls.listen {
            parse_addr("tls.listen", l)?;
            if self.tls.cert.is_none() {
                return Err(err(
                    "tls.cert",
                    "tls.listen is set but no certificate is given",
                ));
            }
            if self.tls.key.is_none() {
                return Err(err(
                    "tls.key",
                    "tls.listen is set but no private key is given",
                ));
            }
        }
        if !(self.store.starts_with("sqlite://")
            || self.store.starts_with("postgres://")
            || self.store.starts_with("postgresql://"))
        {
            return Err(err(
                "store",
                format!(
                    "{:?} is not a store URL: use sqlite://PATH or postgres://…",
                    self.store
                ),
            ));
        }
        self.pipeline()?;
        let c = &self.routing.session_cookie;
        if !c.is_empty()
            && (c.len() > 64
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || c == "swy_pin")
        {
            return Err(err(
                "routing.session_cookie",
                "a cookie name of letters, digits, '-', '_' and '.', at most 64, not swy_pin",
            ));
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            (
                "limits.upstream_connect_timeout_ms",
                l.upstream_connect_timeout_ms,
            ),
            (
                "limits.upstream_response_timeout_ms",
                l.upstream_response_timeout_ms,
            ),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.body_read_timeout_ms", l.body_read_timeout_ms),
            ("limits.send_timeout_ms", l.send_timeout_ms),
            ("fleet.feed_retention_s", self.fleet.feed_retention_s),
        ] {
            if v == 0 {
                return Err(err(name, "must be greater than 0"));
            }
        }
        if l.max_header_bytes < 1024 || l.max_header_bytes > 1024 * 1024 {
            return Err(err(
                "limits.max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.proxy.request_buffer_bytes > 16 * 1024 * 1024 {
            // every request in flight may hold this much: keep a typo from being a gigabyte
            return Err(err(
                "proxy.request_buffer_bytes",
                "at most 16777216 (bodies larger than the buffer are streamed)",
            ));
        }
        self.upstream.check()?;
        if let Some(ca) = &self.upstream_tls.ca_file {
            crate::proxy::stream::load_pem_certs(ca).map_err(|e| err("upstream_tls.ca_file", e))?;
        }
        if self.workers > 1024 {
            return Err(err("workers", "at most 1024 (0 = one per CPU)"));
        }
        if l.max_connections == 0 {
            return Err(err("limits.max_connections", "must be greater than 0"));
        }
        if l.max_in_flight == 0 {
            return Err(err("limits.max_in_flight", "must be greater than 0"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            err(
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            )
        })?;
        if self.demo.ports.contains(&0) || self.demo.ports[0] == self.demo.ports[1] {
            return Err(err("demo.ports", "two different non-zero ports"));
        }
        Ok(self)
    }

    /// The environment pipeline the config describes.
    pub fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        let mut stages = Vec::with_capacity(self.environments.len());
        for (i, e) in self.environments.iter().enumerate() {
            let name = EnvName::parse("name", &e.name)
                .map_err(|d| err(format!("environments[{i}].name"), d.to_string()))?;
            stages.push(EnvSpec {
                name,
                protected: e.protected,
            });
        }
        Pipeline::new(stages).map_err(|d| err("environments", d.to_string()))
    }
}

/// Parses a listen address; the setting is named on failure.
pub fn parse_addr(setting: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        err(
            setting,
            format!("{s:?} is not an address like 127.0.0.1:8080"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("").unwrap().validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.admin_listen, "127.0.0.1:9901");
        assert_eq!(c.store, "sqlite://data/switchyard.db");
        let p = c.pipeline().unwrap();
        assert_eq!(p.stages().len(), 3);
        assert!(p.get("production").unwrap().protected);
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../config/switchyard.toml");
        Config::parse(text).unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_setting() {
        let e = Config::parse("listn = \"x\"").unwrap_err();
        assert!(e.message.contains("listn"), "{e}");
        let e = Config::parse("[limits]\nmax_body_bytes = \"big\"").unwrap_err();
        assert_eq!(e.setting, "line 2", "{e}");
        let e = Config::parse("[limits]\nmax_bodybytes = 1").unwrap_err();
        assert!(e.message.contains("max_bodybytes"), "{e}");
    }

    #[test]
    fn validation_names_the_setting() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("admin_listen = \"1.2.3.4\"", "admin_listen"),
            ("store = \"mysql://x\"", "store"),
            (
                "[limits]\nupstream_connect_timeout_ms = 0",
                "limits.upstream_connect_timeout_ms",
            ),
            ("[limits]\nmax_header_bytes = 10", "limits.max_header_bytes"),
            ("[tls]\nlisten = \"127.0.0.1:8443\"", "tls.cert"),
            ("[[environments]]\nname = \"Prod\"", "environments[0].name"),
            ("environments = []", "environments"),
            ("[log]\nlevel = \"[[[\"", "log.level"),
            (
                "[proxy]\nrequest_buffer_bytes = 1073741824",
                "proxy.request_buffer_bytes",
            ),
            ("[fleet]\nfeed_retention_s = 0", "fleet.feed_retention_s"),
            (
                "[upstream]\nconsecutive_failures = 0",
                "upstream.consecutive_failures",
            ),
            (
                "[upstream]\nejection_base_ms = 10\nejection_max_ms = 5",
                "upstream.ejection_max_ms",
            ),
            (
                "[upstream]\nretry_budget_percent = 101",
                "upstream.retry_budget_percent",
            ),
            (
                "[upstream]\ngate_timeout_ms = 0",
                "upstream.gate_timeout_ms",
            ),
        ];
        for (text, setting) in cases {
            let e = Config::parse(text).unwrap().validate().unwrap_err();
            assert_eq!(e.setting, setting, "{text}: {e}");
        }
    }

    #[test]
    fn proxy_and_fleet_sections() {
        let c = Config::parse(
            "[proxy]\nrequest_buffer_bytes = 0\nunderscore_fields = \"drop_all\"\ntrust_forwarded = true\n[fleet]\nfeed_retention_s = 60\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(c.proxy.request_buffer_bytes, 0);
        assert_eq!(c.proxy.underscore_fields, UnderscoreFields::DropAll);
        assert!(c.proxy.trust_forwarded);
        assert_eq!(c.fleet.feed_retention(), Duration::from_secs(60));
        let e = Config::parse("[proxy]\nunderscore_fields = \"keep\"").unwrap_err();
        assert!(e.message.contains("keep"), "{e}");
    }

    #[test]
    fn custom_pipeline() {
        let c = Config::parse(
            "[[environments]]\nname = \"dev\"\n[[environments]]\nname = \"live\"\nprotected = true\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let p = c.pipeline().unwrap();
        let names: Vec<_> = p.stages().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dev", "live"]);
    }
}
