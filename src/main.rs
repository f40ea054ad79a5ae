//! The `switchyard` binary: `serve` runs the gateway; every other subcommand is a thin
//! client of the admin API. Parses flags, loads and validates the config, binds the
//! listeners and hands them to the library. Errors end as one line on stderr.

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use switchyard::bootstrap::{
    print_demo, redact_url, resolve_admin_token, resolve_secret_key, shutdown_signal,
};
use switchyard::cli::ClientCmd;
use switchyard::config::{parse_addr, Config};
use switchyard::server::tls::CertStore;
use switchyard::server::{run, Gateway, Listeners};
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

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Print a shell completion script: `switchyard completions bash > /etc/bash_completion.d/switchyard`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `switchyard man > switchyard.1`.
    Man,
    #[command(flatten)]
    Client(ClientCmd),
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (default config/switchyard.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client traffic address (HOST:PORT), overriding `listen` of the config.
    #[arg(long)]
    listen: Option<String>,
    /// Admin API and /metrics address (HOST:PORT), overriding `admin_listen`.
    #[arg(long)]
    admin_listen: Option<String>,
    /// sqlite://PATH or postgres://…
    #[arg(long)]
    store: Option<String>,
    /// Client traffic over TLS on this address too (needs --tls-cert and --tls-key).
    #[arg(long)]
    tls_listen: Option<String>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
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
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            // into memory first: the generator panics on a write error (a closed pipe)
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "switchyard", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("writing the completion script")
        }
        Cmd::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")
        }
        Cmd::Client(cmd) => switchyard::cli::run(cmd),
    };
    if let Err(e) = result {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("switchyard: error: {}", chain.join(": "));
        std::process::exit(1);
    }
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

fn serve(args: ServeArgs) -> Result<()> {
    let cfg = load_config(&args)?;
    switchyard::telemetry::init_logging(&cfg.log);
    let (token, token_file) = resolve_admin_token(&cfg)?;
    let secret_key = resolve_secret_key(&cfg)?;
    let pipeline = std::sync::Arc::new(cfg.pipeline()?);
    // the control plane (admin API, store, change feed) runs here; client traffic has
    // worker threads of its own
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchyard-control")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
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
            (Some(l), Some(c), Some(k)) => {
                // reloaded on SIGHUP and when the files change, for the life of the process
                let certs = CertStore::load(c, k)?;
                let acceptor = certs.acceptor()?;
                let every = std::time::Duration::from_millis(cfg.tls.watch_interval_ms);
                tokio::spawn(certs.watch(every));
                Some((bind("tls.listen", l.clone())?, acceptor))
            }
            _ => None,
        };
        let client_addr = client.local_addr()?;
        let admin_addr = admin.local_addr()?;
        tracing::info!(listen = %client_addr, admin = %admin_addr, store = %redact_url(&cfg.store), "switchyard starting");
        if let Some(f) = &token_file {
            tracing::info!(file = %f.display(), "admin token read from or written to this file");
        }
        let secret_key = secret_key.map(|(k, file)| {
            if let Some(f) = file {
                tracing::info!(file = %f.display(), key = k.id(), "secret key read from or written to this file");
            }
            k
        });
        if args.demo {
            let secret = switchyard::demo::start(&store, cfg.demo.ports).await?;
            print_demo(&client_addr, &admin_addr, &secret);
        }
        let gw = Gateway::new(cfg, store, token).with_secret_key(secret_key);
        run(gw, Listeners { client, admin, tls }, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(
                    a.get_action(),
                    clap::ArgAction::Help
                        | clap::ArgAction::HelpShort
                        | clap::ArgAction::HelpLong
                        | clap::ArgAction::Version
                ) {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "switchyard", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn completions_and_the_manual_page_render() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "switchyard",
            &mut out,
        );
        let bash = String::from_utf8(out).unwrap();
        assert!(bash.contains("canary") && bash.contains("--auto-rollback"));
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut man)
            .unwrap();
        assert!(String::from_utf8(man).unwrap().contains(".TH switchyard"));
    }
}
