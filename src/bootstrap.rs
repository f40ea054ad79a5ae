//! What `serve` does around the gateway: find or generate the bootstrap admin token,
//! print the demo's banner, wait for the stop signal, and keep passwords out of
//! messages. Errors carry the setting they concern.

use crate::config::Config;
use crate::sealing::SecretKey;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// The admin token: the environment, else the configured file, else a token file next
/// to the SQLite database (generated on first start, mode 0600).
pub fn resolve_admin_token(cfg: &Config) -> Result<(String, Option<PathBuf>)> {
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

/// The key that seals secrets: `SWITCHYARD_SECRET_KEY`, else a key file next to the
/// SQLite database (generated on first start, mode 0600); None for a PostgreSQL store
/// without the variable (secrets cannot be set there until it is given).
pub fn resolve_secret_key(cfg: &Config) -> Result<Option<(SecretKey, Option<PathBuf>)>> {
    if let Ok(t) = std::env::var("SWITCHYARD_SECRET_KEY") {
        if !t.trim().is_empty() {
            let k =
                SecretKey::from_base64(&t).map_err(|e| anyhow!("SWITCHYARD_SECRET_KEY: {e}"))?;
            return Ok(Some((k, None)));
        }
    }
    let Some(db) = cfg.store.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let dir = Path::new(db)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = dir.join("secret.key");
    match std::fs::read_to_string(&file) {
        Ok(t) => {
            let k = SecretKey::from_base64(&t)
                .map_err(|e| anyhow!("secret key file {}: {e}", file.display()))?;
            return Ok(Some((k, Some(file))));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("secret key file {}: {e}", file.display()),
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("store: cannot create {}", dir.display()))?;
    let text = SecretKey::generate().map_err(|e| anyhow!("{e}"))?;
    write_private(&file, &text)
        .with_context(|| format!("cannot write the secret key to {}", file.display()))?;
    let k = SecretKey::from_base64(&text).map_err(|e| anyhow!("{e}"))?;
    Ok(Some((k, Some(file))))
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

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
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

pub fn print_demo(client: &std::net::SocketAddr, admin: &std::net::SocketAddr, token: &str) {
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
         cargo run -q -- history demo-agent production{admin_flag}\n\n         Or open the console at http://{admin}/ui/ and sign in with the admin token\n         (SWITCHYARD_ADMIN_TOKEN, or the admin.token file beside the store).\n"
    );
}

pub async fn shutdown_signal() {
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
