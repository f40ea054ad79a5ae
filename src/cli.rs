//! The command-line client: the admin subcommands are a thin client of the admin API,
//! with human tables by default and `--json` for scripts.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// How to reach the admin API.
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    pub actor: Option<String>,
}

/// Finds the admin token: the flag or `SWITCHYARD_ADMIN_TOKEN`, else the token file.
pub fn admin_token(explicit: Option<String>, file: &PathBuf) -> Option<String> {
    explicit.filter(|t| !t.is_empty()).or_else(|| {
        std::fs::read_to_string(file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

impl AdminClient {
    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// Calls the admin API; a non-2xx answer becomes an error with its code and
    /// message, an unreachable gateway a one-line explanation.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("{}{}", self.base.trim_end_matches('/'), path);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(a) = &self.actor {
            req = req.header("x-switchyard-actor", a);
        }
        let bytes = match &body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| anyhow!("bad admin URL {url:?}: {e}"))?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
            .await
            .map_err(|_| anyhow!("the admin API at {} did not answer within 30 s", self.base))?
            .map_err(|e| {
                anyhow!(
                    "cannot reach the gateway's admin API at {} ({}); is `switchyard serve` running? (--admin or SWITCHYARD_ADMIN_URL)",
                    self.base,
                    root_cause(&e)
                )
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the admin API's answer")?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            bail!("the admin token was refused: set SWITCHYARD_ADMIN_TOKEN or --admin-token (the gateway writes one to data/admin.token when it has none)");
        }
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&body) }))
        };
        if !status.is_success() {
            let code = v["error"]["code"].as_str().unwrap_or("error");
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or("the admin API refused the request");
            bail!("{code}: {msg} (HTTP {})", status.as_u16());
        }
        Ok(v)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// Asks before a protected move, unless `--yes`. Without a terminal and without
/// `--yes` it refuses rather than hang.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: this environment is protected; pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

/// Renders the array `v[key]` as a table with the given (header, field) columns.
pub fn rows_table(v: &Value, key: &str, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| columns.iter().map(|(_, f)| cell(&item[*f])).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    table(&header, &rows)
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!("v1")), "v1");
        assert_eq!(cell(&json!(3)), "3");
    }
}
