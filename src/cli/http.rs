//! The admin API client the subcommands share: one call, its errors as one line.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::path::PathBuf;

/// How to reach the admin API.
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    /// Sent as `x-switchyard-on-behalf-of`: who the caller acts for.
    pub on_behalf_of: Option<String>,
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
        if let Some(a) = &self.on_behalf_of {
            req = req.header("x-switchyard-on-behalf-of", a);
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

/// `only` when given, else the name of every agent the API lists.
pub async fn agent_names(api: &AdminClient, only: Option<String>) -> Result<Vec<String>> {
    Ok(match only {
        Some(a) => vec![a],
        None => api.get("/v1/agents").await?["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect(),
    })
}
