//! The command-line client: every subcommand but `serve` is a thin client of the admin
//! API, with human tables by default and `--json` for scripts. One file per command
//! group: [`catalog`] (pipeline, agents, versions, diff, stop/start), [`moves`]
//! (deploy, promote, rollback, undeploy, status, history), [`tokens`] (deployment and
//! admin tokens, whoami); [`http`] calls the API and [`output`] prints.

mod catalog;
mod declarative;
pub mod http;
mod moves;
pub mod output;
mod secrets;
mod tokens;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use http::{admin_token, AdminClient};
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Admin API base URL.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:9901"
    )]
    pub admin: String,
    /// Admin token (default: the file below).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the admin token, as written by `serve` when it has none.
    #[arg(long, global = true, default_value = "data/admin.token")]
    pub admin_token_file: PathBuf,
    /// Who this change is made for, recorded in history beside the admin token's
    /// name (default: $USER).
    #[arg(long, global = true, alias = "actor")]
    pub on_behalf_of: Option<String>,
    /// Print the admin API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Confirm moves of protected environments without asking.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

#[derive(Subcommand)]
pub enum ClientCmd {
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
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// The version (vN).
        version: String,
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Refuse the move unless the environment is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show the plan (what would move, whether it would be allowed) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move even if the version's endpoints do not answer the health gate (the
        /// history says forced).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Move the version live in an environment to the next stage (or --to).
    Promote {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// The environment to promote into (default: the next stage).
        #[arg(long)]
        to: Option<String>,
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Refuse the move unless the environment is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show the plan (what would move, whether it would be allowed) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move even if the version's endpoints do not answer the health gate (the
        /// history says forced).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Return an environment to the version before its last forward move (or --to).
    Rollback {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// A version that served the environment before (default: the one before the last forward move).
        #[arg(long = "to")]
        to_version: Option<String>,
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Refuse the move unless the environment is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show the plan (what would move, whether it would be allowed) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Empty an environment: it serves 503 not_deployed until the next deploy.
    Undeploy {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Refuse the move unless the environment is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show the plan (what would move, whether it would be allowed) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Start a canary beside an environment's version or change its weight
    /// (`canary AGENT ENV VERSION --weight W`); `canary complete AGENT ENV` makes it
    /// the environment's version, `canary abort AGENT ENV` removes it.
    Canary {
        /// AGENT ENV VERSION, or complete|abort AGENT ENV.
        #[arg(num_args = 3, value_names = ["AGENT", "ENV", "VERSION"])]
        args: Vec<String>,
        /// Percent of sessions (0-100, two decimals) the canary serves.
        #[arg(long)]
        weight: Option<f64>,
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Refuse the move unless the environment is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start even if the version's endpoints do not answer the health gate.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Show an environment's policy, or change it: session affinity, stream drain,
    /// automatic rollback (admin role).
    Policy {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// Sessions keep the version they started on (signed pins).
        #[arg(long, conflicts_with = "follow")]
        sticky: bool,
        /// Every request follows the environment's pointer.
        #[arg(long)]
        follow: bool,
        /// How long a session pin holds after its last use: 90s, 30m, 2h.
        #[arg(long)]
        ttl: Option<String>,
        /// How long streams of a version taken out go on: 60s, 5m.
        #[arg(long)]
        drain: Option<String>,
        /// Roll back by itself on a breach:
        /// window=30s,errors=5%,min=20,p99=800ms,bake=10m (each part optional).
        #[arg(long, conflicts_with = "no_auto_rollback")]
        auto_rollback: Option<String>,
        /// Turn automatic rollback off.
        #[arg(long)]
        no_auto_rollback: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Which version is live in each environment, since when, and its traffic.
    Status {
        /// The agent's name.
        agent: Option<String>,
        /// Seconds between the two samples the request and error rates come from.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// The moves of one environment, newest first.
    History {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// How many entries, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Compare two versions field by field.
    Diff {
        /// The agent's name.
        agent: String,
        /// The version compared from (vN).
        from: String,
        /// The version compared to (vN).
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
    /// Secrets injected as headers into requests to an agent's versions.
    Secret {
        #[command(subcommand)]
        action: SecretCmd,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Stop a version: environments pointing at it answer 503 version_stopped.
    Stop {
        /// The agent's name.
        agent: String,
        /// The version (vN).
        version: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Start a stopped version again.
    Start {
        /// The agent's name.
        agent: String,
        /// The version (vN).
        version: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// The environment pipeline.
    Environments {
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Named admin tokens with a role (viewer, deployer, admin).
    AdminToken {
        #[command(subcommand)]
        action: AdminTokenCmd,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// The name and role of the admin token in use.
    Whoami {
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Write the deployment state as one JSON document (never secrets or tokens).
    Export {
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Make the store match a document `export` wrote: prints the plan, then applies it.
    Apply {
        /// The document (- for stdin).
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move past the health gate, as --force does for a deploy.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
}

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Create an agent.
    Create {
        /// A name for it.
        name: String,
        /// A line saying what it is.
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum VersionsCmd {
    /// List the versions of an agent.
    List {
        /// The agent's name.
        agent: String,
    },
    /// Show one version.
    Show {
        /// The agent's name.
        agent: String,
        /// The version (vN).
        version: String,
    },
    /// Publish a new immutable version.
    Create {
        /// The agent's name.
        agent: String,
        /// Upstream URL (http://host:port); repeat for several.
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        /// Config document: JSON text, or @FILE.
        #[arg(long)]
        config: Option<String>,
        /// A line saying what it is.
        #[arg(long)]
        description: Option<String>,
        /// A header set from a secret on every request: HEADER=SECRET, or
        /// HEADER=SECRET:FORMAT with {} where the value goes ("authorization=KEY:Bearer {}").
        #[arg(long = "inject")]
        inject: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Mint a token for one agent in one environment; the secret is shown once.
    Create {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
        /// A name for it.
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 time, e.g. 2030-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
        /// What the token may do beyond its environment: pin (send
        /// x-switchyard-pin-version). Repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List the tokens of an environment (never their secrets).
    List {
        /// The agent's name.
        agent: String,
        /// The environment (a stage of the pipeline).
        environment: String,
    },
    /// Revoke a token; it stops working for the next request.
    Revoke {
        /// Its id (as listed).
        id: String,
    },
    /// Suspend a token: it answers 403 token_suspended until resumed.
    Suspend {
        /// Its id (as listed).
        id: String,
    },
    /// Resume a suspended token.
    Resume {
        /// Its id (as listed).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Set a secret's value, read from stdin (or a prompt that does not echo).
    Set {
        /// The agent's name.
        agent: String,
        /// The secret's name: A-Z, 0-9 and _, starting with a letter.
        name: String,
        /// Set it for this environment only (it wins over the agent-wide value there).
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// List an agent's secrets: names, scopes and when they changed (never values).
    List {
        /// The agent's name.
        agent: String,
    },
    /// Delete a secret; refused while a live version needs it.
    Delete {
        /// The agent's name.
        agent: String,
        /// The secret's name.
        name: String,
        /// Delete the value of this environment (default: the agent-wide one).
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Who set or deleted which secret, and when.
    Audit {
        /// The agent's name.
        agent: String,
    },
}

#[derive(Subcommand)]
pub enum AdminTokenCmd {
    /// Mint a named admin token with a role; the secret is shown once.
    Create {
        /// A name for it.
        name: String,
        /// viewer (every read), deployer (reads and moves), admin (everything).
        #[arg(long)]
        role: String,
    },
    /// List the admin tokens (never their secrets).
    List,
    /// Revoke an admin token; it stops working for the next call on every node.
    Revoke {
        /// Its id (as listed).
        id: String,
    },
}

impl ClientCmd {
    fn opts(&self) -> &ClientOpts {
        match self {
            Self::Agents { c, .. }
            | Self::Versions { c, .. }
            | Self::Deploy { c, .. }
            | Self::Promote { c, .. }
            | Self::Rollback { c, .. }
            | Self::Undeploy { c, .. }
            | Self::Canary { c, .. }
            | Self::Policy { c, .. }
            | Self::Status { c, .. }
            | Self::History { c, .. }
            | Self::Diff { c, .. }
            | Self::Token { c, .. }
            | Self::Secret { c, .. }
            | Self::Stop { c, .. }
            | Self::Start { c, .. }
            | Self::Environments { c }
            | Self::AdminToken { c, .. }
            | Self::Export { c, .. }
            | Self::Apply { c, .. }
            | Self::Whoami { c } => c,
        }
    }
}

/// Runs one client subcommand against the admin API.
pub fn run(cmd: ClientCmd) -> Result<()> {
    let c = cmd.opts().clone();
    let api = AdminClient {
        base: c.admin.clone(),
        token: admin_token(c.admin_token.clone(), &c.admin_token_file),
        on_behalf_of: c
            .on_behalf_of
            .clone()
            .or_else(|| std::env::var("USER").ok()),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(dispatch(cmd, &c, &api))
}

async fn dispatch(cmd: ClientCmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    use ClientCmd as C;
    match cmd {
        C::Environments { .. }
        | C::Agents { .. }
        | C::Versions { .. }
        | C::Diff { .. }
        | C::Stop { .. }
        | C::Start { .. } => catalog::run(cmd, c, api).await,
        C::Deploy { .. }
        | C::Promote { .. }
        | C::Rollback { .. }
        | C::Undeploy { .. }
        | C::Canary { .. }
        | C::Policy { .. }
        | C::Status { .. }
        | C::History { .. } => moves::run(cmd, c, api).await,
        C::Token { .. } | C::AdminToken { .. } | C::Whoami { .. } => tokens::run(cmd, c, api).await,
        C::Secret { action, .. } => secrets::run(action, c, api).await,
        C::Export { agent, .. } => declarative::export(agent, api).await,
        C::Apply {
            file,
            dry_run,
            force,
            ..
        } => declarative::apply(&file, dry_run, c.yes, force, c, api).await,
    }
}
