//! Fixtures: a real gateway on 127.0.0.1:0 with a SQLite file in a temporary
//! directory, real upstream servers, and small HTTP helpers.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard::config::Config;
use switchyard::server::{run, Gateway, Listeners};
use switchyard::store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The secret key of test gateways (base64 of 32 bytes), the same on every node.
pub const SECRET_KEY: &str = "c3dpdGNoeWFyZC10ZXN0LWtleS0zMi1ieXRlcy1sb24=";

pub struct TestGateway {
    pub client: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub store_path: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    _dir: Arc<tempfile::TempDir>,
}

pub struct GatewayBuilder {
    pub config: Config,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    dir: Option<Arc<tempfile::TempDir>>,
    store_url: Option<String>,
    secret_key: Option<String>,
}

impl GatewayBuilder {
    pub fn limits(mut self, f: impl FnOnce(&mut switchyard::config::Limits)) -> Self {
        f(&mut self.config.limits);
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    pub fn proxy(mut self, f: impl FnOnce(&mut switchyard::config::ProxyConfig)) -> Self {
        f(&mut self.config.proxy);
        self
    }

    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Uses this store (a PostgreSQL URL) instead of a SQLite file.
    pub fn store(mut self, url: &str) -> Self {
        self.store_url = Some(url.to_owned());
        self
    }

    /// Seals secrets with this key (base64) instead of [`SECRET_KEY`]; None: no key.
    pub fn secret_key(mut self, key: Option<&str>) -> Self {
        self.secret_key = key.map(str::to_owned);
        self
    }

    /// Reuses the directory (and so the SQLite file) of an earlier gateway.
    pub fn dir(mut self, dir: Arc<tempfile::TempDir>) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestGateway {
        let dir = self
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("temp dir")));
        let store_path = dir.path().join("switchyard.db");
        let mut config = self.config;
        config.store = self
            .store_url
            .unwrap_or_else(|| format!("sqlite://{}", store_path.display()));
        config.log.access_log = false;
        let config = config.validate().expect("valid test config");
        let pipeline = Arc::new(config.pipeline().expect("pipeline"));
        let store = Store::open(&config.store, pipeline).expect("store opens");
        // the gateway's listeners as `serve` opens them
        let loopback = "127.0.0.1:0".parse().expect("addr");
        let client = switchyard::server::bind(loopback).expect("bind");
        let admin = switchyard::server::bind(loopback).expect("bind");
        let client_addr = client.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("addr");
        let (tls, tls_addr) = match self.tls {
            Some(acceptor) => {
                let l = switchyard::server::bind(loopback).expect("bind");
                let a = l.local_addr().expect("addr");
                (Some((l, acceptor)), Some(a))
            }
            None => (None, None),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let key = self
            .secret_key
            .map(|k| switchyard::sealing::SecretKey::from_base64(&k).expect("test key"));
        let mut gw = Gateway::new(config, store, ADMIN_TOKEN.into()).with_secret_key(key);
        gw.usage_flush = Duration::from_millis(200);
        let handle = tokio::spawn(async move {
            run(gw, Listeners { client, admin, tls }, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway runs");
        });
        let g = TestGateway {
            client: client_addr,
            admin: admin_addr,
            tls: tls_addr,
            store_path,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        };
        eventually("gateway ready", || async {
            get(&format!("http://{}/readyz", g.admin), &[]).await.status == 200
        })
        .await;
        g
    }
}

impl TestGateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            config: Config::default(),
            tls: None,
            dir: None,
            store_url: None,
            secret_key: Some(SECRET_KEY.into()),
        }
    }

    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn dir(&self) -> Arc<tempfile::TempDir> {
        Arc::clone(&self._dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    /// An admin call with the admin token; returns status and JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = send(
            method,
            &format!("http://{}{}", self.admin, path),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        )
        .await;
        (r.status, r.json())
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(Method::POST, path, Some(body)).await
    }

    /// An admin call with the given admin token and extra headers.
    pub async fn admin_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        let r = send(
            method,
            &format!("http://{}{}", self.admin, path),
            &headers,
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        )
        .await;
        let status = r.status;
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        (status, v)
    }

    pub async fn get_admin(&self, path: &str) -> (StatusCode, Value) {
        self.admin(Method::GET, path, None).await
    }

    /// Creates an agent with one version per upstream address, in order.
    pub async fn agent_with_versions(&self, agent: &str, upstreams: &[SocketAddr]) {
        let (s, b) = self.post("/v1/agents", json!({"name": agent})).await;
        assert_eq!(s, 201, "{b}");
        for (i, u) in upstreams.iter().enumerate() {
            let (s, b) = self
                .post(
                    &format!("/v1/agents/{agent}/versions"),
                    json!({"upstreams": [format!("http://{u}")], "config": {"n": i + 1}}),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }

    /// Deploys `version` (confirmed, past the health gate: tests of the proxy deploy
    /// upstreams that are meant to fail, or that count connections; the gate has its
    /// own tests in `gate.rs`).
    pub async fn deploy(&self, agent: &str, env: &str, version: &str) -> Value {
        let (s, b) = self
            .post(
                &format!("/v1/agents/{agent}/environments/{env}/deploy"),
                json!({"version": version, "confirm": true, "force": true}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    pub async fn token(&self, agent: &str, env: &str) -> (String, String) {
        let (s, b) = self
            .post(
                &format!("/v1/agents/{agent}/environments/{env}/tokens"),
                json!({}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        (
            b["token"].as_str().expect("token").to_owned(),
            b["id"].as_str().expect("id").to_owned(),
        )
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The envelope's code, asserting the envelope's shape on the way.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"].is_string(),
            "no envelope: {}",
            self.text()
        );
        assert!(
            v["error"]["request_id"].is_string(),
            "no request id: {}",
            self.text()
        );
        assert_eq!(
            self.header("x-request-id"),
            v["error"]["request_id"].as_str(),
            "request id header and body agree"
        );
        v["error"]["code"].as_str().unwrap_or("").to_owned()
    }
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("no answer within 20 s")
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send(Method::GET, url, headers, Bytes::new()).await
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Waits for a fact that becomes true eventually: bounded retries, never a bare sleep.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not true within 5 s");
}

/// What the echo upstream saw, returned as its JSON body.
pub async fn echo_answer(
    label: &'static str,
    req: Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        return Ok(hyper::Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    let mut headers = serde_json::Map::new();
    // a field sent twice shows as its values joined, so a duplicate is visible
    for k in req.headers().keys() {
        let values: Vec<&str> = req
            .headers()
            .get_all(k)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        headers.insert(k.as_str().to_owned(), json!(values.join(", ")));
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = json!({
        "version": label,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().expect("hv"));
    // hop-by-hop fields that must not reach the client
    h.insert("connection", "x-upstream-hop".parse().expect("hv"));
    h.insert("x-upstream-hop", "secret".parse().expect("hv"));
    h.insert("keep-alive", "timeout=5".parse().expect("hv"));
    h.insert("x-upstream-kept", "yes".parse().expect("hv"));
    Ok(resp)
}

/// A real upstream on 127.0.0.1:0 that echoes what it received, labelled `label`.
pub async fn echo_upstream(label: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req| echo_answer(label, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// What a [`counting_upstream`] has seen.
#[derive(Default)]
pub struct Seen {
    /// Connections accepted.
    pub connections: std::sync::atomic::AtomicU64,
    /// Request heads received.
    pub heads: std::sync::atomic::AtomicU64,
    /// Requests whose body arrived complete.
    pub complete: std::sync::atomic::AtomicU64,
    /// Every request head's fields and body, as text (for leak checks).
    pub text: std::sync::Mutex<String>,
}

impl Seen {
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn heads(&self) -> u64 {
        self.heads.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn complete(&self) -> u64 {
        self.complete.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1:0 that answers 200 `label` after reading the
/// whole body (after N ms for `/slow/N`), and counts and records what reached it.
pub async fn counting_upstream(label: &'static str) -> (SocketAddr, Arc<Seen>) {
    use std::sync::atomic::Ordering;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = Arc::clone(&shared);
            seen.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.heads.fetch_add(1, Ordering::SeqCst);
                        if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
                            let ms = ms.parse().unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let mut text = format!("{} {}\n", req.method(), req.uri());
                        for (k, v) in req.headers() {
                            text.push_str(&format!(
                                "{k}: {}\n",
                                String::from_utf8_lossy(v.as_bytes())
                            ));
                        }
                        let body = req.into_body().collect().await;
                        if let Ok(b) = body {
                            seen.complete.fetch_add(1, Ordering::SeqCst);
                            text.push_str(&String::from_utf8_lossy(&b.to_bytes()));
                        }
                        seen.text.lock().expect("lock").push_str(&text);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(label))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A loopback address that accepts connections (and closes them): an upstream that
/// passes the health gate's connect probe.
pub async fn accepting() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move { while l.accept().await.is_ok() {} });
    a
}

/// A loopback address where nothing listens (bound, then closed).
pub async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// The real `switchyard` binary, started with `serve` on loopback ports it picks
/// itself (read back from its JSON log), a SQLite file in `dir`, and the test admin
/// token.
pub struct Binary {
    pub child: std::process::Child,
    pub client: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub async fn start(dir: &std::path::Path, extra_config: &str) -> Binary {
        Self::start_logging(dir, extra_config, "info").await
    }

    /// As [`Binary::start`], with `[log] level` set to `level` (a tracing filter).
    pub async fn start_logging(dir: &std::path::Path, extra_config: &str, level: &str) -> Binary {
        Self::start_wrapped(dir, extra_config, level, &[]).await
    }

    /// As [`Binary::start_logging`], run under `wrapper` (a command and its arguments,
    /// such as strace) when it is not empty.
    pub async fn start_wrapped(
        dir: &std::path::Path,
        extra_config: &str,
        level: &str,
        wrapper: &[&str],
    ) -> Binary {
        use std::io::BufRead;
        let cfg = dir.join("test.toml");
        // a `store = …` line in the extra config wins over the SQLite file in `dir`
        let store = if extra_config.lines().any(|l| l.starts_with("store =")) {
            String::new()
        } else {
            format!(
                "store = \"sqlite://{}\"\n",
                dir.join("switchyard.db").display()
            )
        };
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{store}{extra_config}\n[log]\nformat = \"json\"\nlevel = \"{level}\"\n"
            ),
        )
        .expect("write config");
        let bin = env!("CARGO_BIN_EXE_switchyard");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "switchyard starting" {
                        let _ = tx.send((
                            v["listen"].as_str().unwrap_or("").to_owned(),
                            v["admin"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let (client, admin) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await
                .expect("join")
                .expect("the binary logs its addresses");
        let b = Binary {
            child,
            client: client.parse().expect("client addr"),
            admin: admin.parse().expect("admin addr"),
            log,
        };
        eventually("binary ready", || async {
            tokio::time::timeout(
                Duration::from_secs(1),
                get(&format!("http://{}/readyz", b.admin), &[]),
            )
            .await
            .map(|r| r.status == 200)
            .unwrap_or(false)
        })
        .await;
        b
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Sends a signal by name (TERM, KILL) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `secs`; returns its exit code.
    pub async fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        for _ in 0..secs * 20 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the binary did not exit within {secs} s");
    }

    pub async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        admin_call(self.admin, method, path, body).await
    }

    /// Creates `agent` with one version per upstream (v1, v2, …).
    pub async fn agent_with_versions(&self, agent: &str, upstreams: &[SocketAddr]) {
        let (s, b) = self
            .admin_call(Method::POST, "/v1/agents", Some(json!({ "name": agent })))
            .await
            .expect("admin answers");
        assert_eq!(s, 201, "{b}");
        for up in upstreams {
            let (s, b) = self
                .admin_call(
                    Method::POST,
                    &format!("/v1/agents/{agent}/versions"),
                    Some(json!({ "upstreams": [format!("http://{up}")] })),
                )
                .await
                .expect("admin answers");
            assert_eq!(s, 201, "{b}");
        }
    }

    /// Deploys `version` of `agent` to `env` (confirmed, past the health gate).
    pub async fn deploy(&self, agent: &str, env: &str, version: &str) {
        let (s, b) = self
            .admin_call(
                Method::POST,
                &format!("/v1/agents/{agent}/environments/{env}/deploy"),
                Some(json!({ "version": version, "confirm": true, "force": true })),
            )
            .await
            .expect("admin answers");
        assert_eq!(s, 200, "{b}");
    }

    /// Mints a deployment token for (agent, env): (secret, id).
    pub async fn token(&self, agent: &str, env: &str) -> (String, String) {
        let (s, b) = self
            .admin_call(
                Method::POST,
                &format!("/v1/agents/{agent}/environments/{env}/tokens"),
                Some(json!({})),
            )
            .await
            .expect("admin answers");
        assert_eq!(s, 201, "{b}");
        (
            b["token"].as_str().expect("token").to_owned(),
            b["id"].as_str().expect("id").to_owned(),
        )
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin call that may fail to connect (the gateway may be gone): None then.
pub async fn admin_call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// PostgreSQL tests share one server; the test that restarts it takes this for writing.
pub static PG_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Says plainly, past the test harness's output capture, that a test was skipped.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A fresh database on the test PostgreSQL server (`SWITCHYARD_TEST_POSTGRES_URL`),
/// or None (and a SKIPPED line) when no server is configured. In CI it is required.
pub async fn postgres_db(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "{test}: SWITCHYARD_TEST_POSTGRES_URL is required in CI (.ci/run starts a PostgreSQL)"
        );
        skipped(
            test,
            "no PostgreSQL; run `bash .ci/run`, or set SWITCHYARD_TEST_POSTGRES_URL=postgres://user@127.0.0.1:PORT/postgres",
        );
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL accepts connections");
    tokio::spawn(conn);
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).unwrap();
    let name = format!("sy_test_{}", hex::encode(raw));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let (head, _) = base.rsplit_once('/').expect("URL has a database");
    Some(format!("{head}/{name}"))
}

/// Runs a shell command given by an environment variable (PostgreSQL stop/start).
pub fn run_env_command(var: &str) -> Option<bool> {
    let cmd = std::env::var(var).ok()?;
    Some(
        std::process::Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    )
}
