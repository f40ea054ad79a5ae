//! The `switchyard` binary: `serve` runs the gateway; every other subcommand is a thin
//! client of the admin API. Parses flags, loads and validates the config, binds the
//! listeners and hands them to the library. Errors end as one line on stderr.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use switchyard::cli::{admin_token, cell, confirm, rows_table, table, AdminClient};
use switchyard::config::{parse_addr, Config};
use switchyard::server::{run, tls_acceptor, Gateway, Listeners};
use switchyard::store::Store;

const DEFAULT_CONFIG: &str = "config/switchyard.toml";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Edge gateway for agent deployments"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// Admin API base URL.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:9901"
    )]
    admin: String,
    /// Admin token (default: the file below).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// File holding the admin token, as written by `serve` when it has none.
    #[arg(long, global = true, default_value = "data/admin.token")]
    admin_token_file: PathBuf,
    /// Who is making the change, recorded in history (default: $USER).
    #[arg(long, global = true)]
    actor: Option<String>,
    /// Print the admin API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Confirm moves of protected environments without asking.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve(ServeArgs),
    /// List agents, or create one.
    Agents {
        #[command(subcommand)]
        action: Option<AgentsCmd>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// List an agent's versions, show one, or create one.
    Versions {
        #[command(subcommand)]
        action: VersionsCmd,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Point an environment at a version.
    Deploy {
        agent: String,
        environment: String,
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        expected_revision: Option<u64>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Move the version live in an environment to the next stage (or --to).
    Promote {
        agent: String,
        environment: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        expected_revision: Option<u64>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Return an environment to the version before its last forward move (or --to).
    Rollback {
        agent: String,
        environment: String,
        #[arg(long = "to")]
        to_version: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        expected_revision: Option<u64>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Empty an environment: it serves 503 not_deployed until the next deploy.
    Undeploy {
        agent: String,
        environment: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        expected_revision: Option<u64>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Which version is live in each environment, since when, and its traffic.
    Status {
        agent: Option<String>,
        /// Seconds between the two samples the request and error rates come from.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// The moves of one environment, newest first.
    History {
        agent: String,
        environment: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Compare two versions field by field.
    Diff {
        agent: String,
        from: String,
        to: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Deployment tokens.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Stop a version: environments pointing at it answer 503 version_stopped.
    Stop {
        agent: String,
        version: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Start a stopped version again.
    Start {
        agent: String,
        version: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// The environment pipeline.
    Environments {
        #[command(flatten)]
        c: ClientOpts,
    },
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// Create an agent.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum VersionsCmd {
    /// List the versions of an agent.
    List { agent: String },
    /// Show one version.
    Show { agent: String, version: String },
    /// Publish a new immutable version.
    Create {
        agent: String,
        /// Upstream URL (http://host:port); repeat for several.
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        /// Config document: JSON text, or @FILE.
        #[arg(long)]
        config: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a token for one agent in one environment; the secret is shown once.
    Create {
        agent: String,
        environment: String,
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 time, e.g. 2030-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the tokens of an environment (never their secrets).
    List { agent: String, environment: String },
    /// Revoke a token; it stops working for the next request.
    Revoke { id: String },
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (default config/switchyard.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    admin_listen: Option<String>,
    /// sqlite://PATH or postgres://…
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    tls_listen: Option<String>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Start the bundled demo agent and its two upstreams.
    #[arg(long)]
    demo: bool,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve(args) => serve(args),
        other => client(other),
    };
    if let Err(e) = result {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("switchyard: error: {}", chain.join(": "));
        std::process::exit(1);
    }
}

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        // the control plane (admin API, store, change feed) runs here; client traffic
        // has worker threads of its own
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1).thread_name("switchyard-control");
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().context("starting the async runtime")
}

fn load_config(args: &ServeArgs) -> Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG))?,
        None => Config::default(),
    };
    if let Some(v) = &args.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = &args.admin_listen {
        cfg.admin_listen = v.clone();
    }
    if let Some(v) = &args.store {
        cfg.store = v.clone();
    }
    if let Some(v) = &args.tls_listen {
        cfg.tls.listen = Some(v.clone());
    }
    if let Some(v) = &args.tls_cert {
        cfg.tls.cert = Some(v.clone());
    }
    if let Some(v) = &args.tls_key {
        cfg.tls.key = Some(v.clone());
    }
    Ok(cfg.validate()?)
}

/// The admin token: the environment, else the configured file, else a token file next
/// to the SQLite database (generated on first start, mode 0600).
fn resolve_admin_token(cfg: &Config) -> Result<(String, Option<PathBuf>)> {
    if let Ok(t) = std::env::var("SWITCHYARD_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_owned(), None));
        }
    }
    if let Some(f) = &cfg.admin_token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("admin_token_file: cannot read {}", f.display()))?;
        let t = t.trim().to_owned();
        if t.is_empty() {
            bail!("admin_token_file: {} is empty", f.display());
        }
        return Ok((t, None));
    }
    let Some(db) = cfg.store.strip_prefix("sqlite://") else {
        bail!("admin token: set SWITCHYARD_ADMIN_TOKEN or admin_token_file for a postgres store");
    };
    let dir = Path::new(db)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_owned(), Some(file)));
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("store: cannot create {}", dir.display()))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("no randomness from the OS: {e}"))?;
    let token = format!("swya_{}", hex::encode(raw));
    write_private(&file, &token)
        .with_context(|| format!("cannot write the admin token to {}", file.display()))?;
    Ok((token, Some(file)))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()
}

fn serve(args: ServeArgs) -> Result<()> {
    let cfg = load_config(&args)?;
    switchyard::telemetry::init_logging(&cfg.log);
    let (token, token_file) = resolve_admin_token(&cfg)?;
    let pipeline = std::sync::Arc::new(cfg.pipeline()?);
    let rt = runtime(true)?;
    rt.block_on(async move {
        let store = Store::open(&cfg.store, pipeline)
            .map_err(|e| anyhow!("store {}: {e}", redact_url(&cfg.store)))?;
        let bind = |setting: &'static str, addr: String| -> Result<tokio::net::TcpListener> {
            let a = parse_addr(setting, &addr)?;
            switchyard::server::bind(a)
                .with_context(|| format!("{setting}: cannot listen on {addr}"))
        };
        let client = bind("listen", cfg.listen.clone())?;
        let admin = bind("admin_listen", cfg.admin_listen.clone())?;
        let tls = match (&cfg.tls.listen, &cfg.tls.cert, &cfg.tls.key) {
            (Some(l), Some(c), Some(k)) => Some((bind("tls.listen", l.clone())?, tls_acceptor(c, k)?)),
            _ => None,
        };
        let client_addr = client.local_addr()?;
        let admin_addr = admin.local_addr()?;
        tracing::info!(listen = %client_addr, admin = %admin_addr, store = %redact_url(&cfg.store), "switchyard starting");
        if let Some(f) = &token_file {
            tracing::info!(file = %f.display(), "admin token read from or written to this file");
        }
        if args.demo {
            let [p1, p2] = cfg.demo.ports;
            for (port, label) in [(p1, "v1"), (p2, "v2")] {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .with_context(|| format!("demo.ports: cannot listen on 127.0.0.1:{port}"))?;
                switchyard::demo::spawn_upstream(l, label);
            }
            let secret = switchyard::demo::seed(&store, cfg.demo.ports).await?;
            print_demo(&client_addr, &admin_addr, &secret);
        }
        let gw = Gateway::new(cfg, store, token);
        run(gw, Listeners { client, admin, tls }, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// A store URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn print_demo(client: &std::net::SocketAddr, admin: &std::net::SocketAddr, token: &str) {
    let admin_flag = if admin.port() == 9901 && admin.ip().is_loopback() {
        String::new()
    } else {
        format!(" --admin http://{admin}")
    };
    println!(
        "\nSwitchyard demo is up. demo-agent's production runs v2; v1 is one rollback away.\n\n\
         Try it:\n  curl -s http://{client}/hello -H 'Authorization: Bearer {token}'\n  \
         curl -sN http://{client}/stream -H 'Authorization: Bearer {token}'   # server-sent events\n\n\
         Roll production back (from another terminal, in this directory), then curl again:\n  \
         cargo run -q -- rollback demo-agent production --yes{admin_flag}\n\n\
         See what is live and how it got there:\n  \
         cargo run -q -- status demo-agent{admin_flag}\n  \
         cargo run -q -- history demo-agent production{admin_flag}\n"
    );
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn opts_of(cmd: &Cmd) -> Option<&ClientOpts> {
    Some(match cmd {
        Cmd::Serve(_) => return None,
        Cmd::Agents { c, .. }
        | Cmd::Versions { c, .. }
        | Cmd::Deploy { c, .. }
        | Cmd::Promote { c, .. }
        | Cmd::Rollback { c, .. }
        | Cmd::Undeploy { c, .. }
        | Cmd::Status { c, .. }
        | Cmd::History { c, .. }
        | Cmd::Diff { c, .. }
        | Cmd::Token { c, .. }
        | Cmd::Stop { c, .. }
        | Cmd::Start { c, .. }
        | Cmd::Environments { c } => c,
    })
}

fn client(cmd: Cmd) -> Result<()> {
    let c = opts_of(&cmd)
        .cloned()
        .ok_or_else(|| anyhow!("not a client command"))?;
    let api = AdminClient {
        base: c.admin.clone(),
        token: admin_token(c.admin_token.clone(), &c.admin_token_file),
        actor: c.actor.clone().or_else(|| std::env::var("USER").ok()),
    };
    runtime(false)?.block_on(client_cmd(cmd, &c, &api))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The answer as JSON (`--json`) or as a table of `v[key]`.
fn show(c: &ClientOpts, v: &Value, key: &str, columns: &[(&str, &str)]) {
    if c.json {
        print_json(v);
    } else {
        print!("{}", rows_table(v, key, columns));
    }
}

fn move_line(v: &Value) -> String {
    format!(
        "{} {}/{}: {} → {} (revision {})",
        cell(&v["action"]),
        cell(&v["agent"]),
        cell(&v["environment"]),
        cell(&v["previous"]),
        cell(&v["version"]),
        cell(&v["revision"])
    )
}

/// Whether moving `target` needs confirmation, from the pipeline the gateway serves.
async fn protected(api: &AdminClient, target: &str) -> Result<bool> {
    let envs = api.get("/v1/environments").await?;
    Ok(envs["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == target && e["protected"] == true))
}

async fn next_stage(api: &AdminClient, env: &str) -> Result<Option<String>> {
    let envs = api.get("/v1/environments").await?;
    Ok(envs["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == env)
        .and_then(|e| e["next"].as_str().map(str::to_owned)))
}

/// One pointer move: `op` on `env`, which moves `target_env` (differs for promote).
struct MoveCall<'a> {
    agent: &'a str,
    env: &'a str,
    op: &'a str,
    target_env: &'a str,
    what: String,
}

async fn do_move(
    api: &AdminClient,
    c: &ClientOpts,
    m: MoveCall<'_>,
    mut body: Value,
) -> Result<()> {
    let MoveCall {
        agent,
        env,
        op,
        target_env,
        what,
    } = m;
    if protected(api, target_env).await? {
        if !confirm(
            &format!("{what} in protected environment {target_env} of {agent}?"),
            c.yes,
        )? {
            bail!("not confirmed; nothing changed");
        }
        body["confirm"] = json!(true);
    }
    let v = api
        .call(
            Method::POST,
            &format!("/v1/agents/{agent}/environments/{env}/{op}"),
            Some(body),
        )
        .await?;
    if c.json {
        print_json(&v);
    } else {
        println!("{}", move_line(&v));
    }
    Ok(())
}

fn with_common(mut body: Value, reason: &Option<String>, expected: Option<u64>) -> Value {
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    if let Some(e) = expected {
        body["expected_revision"] = json!(e);
    }
    body
}

async fn client_cmd(cmd: Cmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    match cmd {
        Cmd::Serve(_) => unreachable!("handled in main"),
        Cmd::Environments { .. } => {
            let v = api.get("/v1/environments").await?;
            show(
                c,
                &v,
                "environments",
                &[
                    ("ENVIRONMENT", "name"),
                    ("PROTECTED", "protected"),
                    ("NEXT", "next"),
                ],
            );
        }
        Cmd::Agents { action: None, .. } => {
            let v = api.get("/v1/agents").await?;
            show(
                c,
                &v,
                "agents",
                &[
                    ("AGENT", "name"),
                    ("CREATED", "created_at"),
                    ("DESCRIPTION", "description"),
                ],
            );
        }
        Cmd::Agents {
            action: Some(AgentsCmd::Create { name, description }),
            ..
        } => {
            let v = api
                .call(
                    Method::POST,
                    "/v1/agents",
                    Some(json!({"name": name, "description": description})),
                )
                .await?;
            if c.json {
                print_json(&v);
            } else {
                println!("created agent {}", cell(&v["name"]));
            }
        }
        Cmd::Versions { action, .. } => match action {
            VersionsCmd::List { agent } => {
                let v = api.get(&format!("/v1/agents/{agent}/versions")).await?;
                if c.json {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = v["versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            let ups: Vec<String> = x["upstreams"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(cell)
                                .collect();
                            vec![
                                cell(&x["version"]),
                                cell(&x["state"]),
                                cell(&x["created_at"]),
                                cell(&x["author"]),
                                ups.join(","),
                                cell(&x["description"]),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "VERSION",
                                "STATE",
                                "CREATED",
                                "AUTHOR",
                                "UPSTREAMS",
                                "DESCRIPTION"
                            ],
                            &rows
                        )
                    );
                }
            }
            VersionsCmd::Show { agent, version } => {
                let v = api
                    .get(&format!("/v1/agents/{agent}/versions/{version}"))
                    .await?;
                print_json(&v);
            }
            VersionsCmd::Create {
                agent,
                upstreams,
                config,
                description,
            } => {
                let config: Option<Value> = match config {
                    Some(s) => {
                        let text = match s.strip_prefix('@') {
                            Some(path) => std::fs::read_to_string(path)
                                .with_context(|| format!("--config: cannot read {path}"))?,
                            None => s,
                        };
                        Some(serde_json::from_str(&text).context("--config: not valid JSON")?)
                    }
                    None => None,
                };
                let v = api
                    .call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/versions"),
                        Some(json!({"upstreams": upstreams, "config": config, "description": description})),
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "created {} {} ({})",
                        cell(&v["agent"]),
                        cell(&v["version"]),
                        cell(&v["digest"])
                    );
                }
            }
        },
        Cmd::Deploy {
            ref agent,
            ref environment,
            ref version,
            ref reason,
            expected_revision,
            ..
        } => {
            let body = with_common(json!({"version": version}), reason, expected_revision);
            let m = MoveCall {
                agent,
                env: environment,
                op: "deploy",
                target_env: environment,
                what: format!("Deploy {version}"),
            };
            do_move(api, c, m, body).await?;
        }
        Cmd::Promote {
            ref agent,
            ref environment,
            ref to,
            ref reason,
            expected_revision,
            ..
        } => {
            let target = match to {
                Some(t) => t.clone(),
                None => next_stage(api, environment).await?.ok_or_else(|| {
                    anyhow!("{environment} is the last stage; name a target with --to")
                })?,
            };
            let mut body = with_common(json!({}), reason, expected_revision);
            if let Some(t) = to {
                body["to"] = json!(t);
            }
            let m = MoveCall {
                agent,
                env: environment,
                op: "promote",
                target_env: &target,
                what: format!("Promote {environment}'s version"),
            };
            do_move(api, c, m, body).await?;
        }
        Cmd::Rollback {
            ref agent,
            ref environment,
            ref to_version,
            ref reason,
            expected_revision,
            ..
        } => {
            let mut body = with_common(json!({}), reason, expected_revision);
            if let Some(t) = to_version {
                body["to_version"] = json!(t);
            }
            let m = MoveCall {
                agent,
                env: environment,
                op: "rollback",
                target_env: environment,
                what: "Roll back".into(),
            };
            do_move(api, c, m, body).await?;
        }
        Cmd::Undeploy {
            ref agent,
            ref environment,
            ref reason,
            expected_revision,
            ..
        } => {
            let body = with_common(json!({}), reason, expected_revision);
            let m = MoveCall {
                agent,
                env: environment,
                op: "undeploy",
                target_env: environment,
                what: "Undeploy".into(),
            };
            do_move(api, c, m, body).await?;
        }
        Cmd::Status {
            agent, interval, ..
        } => {
            let agents: Vec<String> = match agent {
                Some(a) => vec![a],
                None => api.get("/v1/agents").await?["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["name"].as_str().map(str::to_owned))
                    .collect(),
            };
            let sample = |agents: Vec<String>| async move {
                let mut out = Vec::new();
                for a in &agents {
                    out.push(api.get(&format!("/v1/agents/{a}")).await?);
                }
                Ok::<_, anyhow::Error>(out)
            };
            let first = sample(agents.clone()).await?;
            let interval = interval.clamp(0.1, 60.0);
            tokio::time::sleep(std::time::Duration::from_secs_f64(interval)).await;
            let snapshots = sample(agents).await?;
            let rate = |i: usize, env: &str, key: &str| {
                let now = snapshots[i]["traffic"][env][key].as_u64().unwrap_or(0);
                let before = first
                    .get(i)
                    .and_then(|s| s["traffic"][env][key].as_u64())
                    .unwrap_or(now);
                now.saturating_sub(before) as f64 / interval
            };
            if c.json {
                print_json(&json!({ "agents": snapshots, "interval_seconds": interval }));
            } else {
                let order = api.get("/v1/environments").await?;
                let envs: Vec<String> = order["environments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["name"].as_str().map(str::to_owned))
                    .collect();
                let mut rows = Vec::new();
                for (i, s) in snapshots.iter().enumerate() {
                    for e in &envs {
                        let p = &s["environments"][e];
                        rows.push(vec![
                            cell(&s["name"]),
                            e.clone(),
                            cell(&p["version"]),
                            cell(&p["since"]),
                            cell(&p["revision"]),
                            format!("{:.1}", rate(i, e, "requests")),
                            format!("{:.1}", rate(i, e, "errors")),
                        ]);
                    }
                }
                print!(
                    "{}",
                    table(
                        &[
                            "AGENT",
                            "ENVIRONMENT",
                            "VERSION",
                            "SINCE",
                            "REVISION",
                            "REQ/S",
                            "5XX/S"
                        ],
                        &rows
                    )
                );
            }
        }
        Cmd::History {
            agent,
            environment,
            limit,
            ..
        } => {
            let v = api
                .get(&format!(
                    "/v1/agents/{agent}/environments/{environment}/history?limit={limit}"
                ))
                .await?;
            show(
                c,
                &v,
                "entries",
                &[
                    ("REVISION", "revision"),
                    ("AT", "at"),
                    ("ACTION", "action"),
                    ("FROM", "previous"),
                    ("TO", "version"),
                    ("ACTOR", "actor"),
                    ("REASON", "reason"),
                ],
            );
        }
        Cmd::Diff {
            agent, from, to, ..
        } => {
            let v = api
                .get(&format!("/v1/agents/{agent}/versions/{from}/diff/{to}"))
                .await?;
            if !c.json {
                println!("{} → {}", cell(&v["from"]), cell(&v["to"]));
            }
            show(
                c,
                &v,
                "changes",
                &[("PATH", "path"), ("FROM", "from"), ("TO", "to")],
            );
        }
        Cmd::Token { action, .. } => match action {
            TokenCmd::Create {
                agent,
                environment,
                name,
                expires_at,
            } => {
                let v = api
                    .call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{environment}/tokens"),
                        Some(json!({"name": name, "expires_at": expires_at})),
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "token {} for {agent}/{environment} (shown once, store it now):\n{}",
                        cell(&v["id"]),
                        cell(&v["token"])
                    );
                }
            }
            TokenCmd::List { agent, environment } => {
                let v = api
                    .get(&format!(
                        "/v1/agents/{agent}/environments/{environment}/tokens"
                    ))
                    .await?;
                show(
                    c,
                    &v,
                    "tokens",
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("CREATED", "created_at"),
                        ("EXPIRES", "expires_at"),
                        ("REVOKED", "revoked_at"),
                    ],
                );
            }
            TokenCmd::Revoke { id } => {
                api.call(Method::DELETE, &format!("/v1/tokens/{id}"), None)
                    .await?;
                if c.json {
                    print_json(&json!({"revoked": id}));
                } else {
                    println!("revoked {id}");
                }
            }
        },
        Cmd::Stop { agent, version, .. } => state_cmd(api, c, &agent, &version, "stop").await?,
        Cmd::Start { agent, version, .. } => state_cmd(api, c, &agent, &version, "start").await?,
    }
    Ok(())
}

async fn state_cmd(
    api: &AdminClient,
    c: &ClientOpts,
    agent: &str,
    version: &str,
    op: &str,
) -> Result<()> {
    let v = api
        .call(
            Method::POST,
            &format!("/v1/agents/{agent}/versions/{version}/{op}"),
            None,
        )
        .await?;
    if c.json {
        print_json(&v);
    } else {
        println!(
            "{} {} is {}",
            cell(&v["agent"]),
            cell(&v["version"]),
            cell(&v["state"])
        );
    }
    Ok(())
}
