// Switchyard console: a client of the /v1 admin API, nothing more. The admin token is
// kept in this tab's session storage and sent as a bearer header; every action goes
// through the API, so the token's role decides what works. Text is always set as text.
"use strict";

const KEY = "switchyard.token";
const POLL_MS = 1000; // a move made elsewhere shows within about a second
const state = { who: null, envs: [], timer: null, traffic: new Map(), view: null };

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/// Replaces a node's children, leaving out the absent ones.
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function time(s) {
  if (!s) return "–";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

function enc(s) { return encodeURIComponent(s); }

class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${code}: ${message}` : message);
    this.status = status; this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") };
  if (body !== undefined) headers["content-type"] = "application/json";
  headers["x-switchyard-on-behalf-of"] = "console";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  let v = null;
  try { v = await r.json(); } catch (_) { v = null; }
  if (!r.ok) {
    const e = v && v.error ? v.error : { code: null, message: `HTTP ${r.status}` };
    throw new ApiError(r.status, e.code, e.message);
  }
  return v;
}

const can = () => state.who && state.who.role !== "viewer";
const main = () => document.getElementById("main");

function showError(target, err) {
  const box = el("div", { class: "error", role: "alert", text: err.message || String(err) });
  target.prepend(box);
  if (err.status === 401) signOut(err.message);
  return box;
}

// ---------- session ----------

function signOut(message) {
  sessionStorage.removeItem(KEY);
  state.who = null;
  route(message);
}

function renderSignIn(message) {
  document.getElementById("who").replaceChildren();
  const input = el("input", { id: "token", type: "password", name: "token", autocomplete: "off", required: true });
  const form = el("form", { class: "signin", "aria-label": "Sign in", onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    try {
      state.who = await api("GET", "/v1/whoami");
      route(); // the page the address names, the agents list by default
    } catch (e) {
      sessionStorage.removeItem(KEY);
      state.who = null;
      form.querySelector(".error")?.remove();
      form.prepend(el("div", { class: "error", role: "alert", text: e.message }));
    }
  } },
    el("h1", { text: "Sign in" }),
    el("p", { class: "muted", text: "An admin token: its role decides what you can do here." }),
    message ? el("div", { class: "error", role: "alert", text: message }) : null,
    el("label", { for: "token" }, "Admin token", input),
    el("p", {}, el("button", { type: "submit", text: "Sign in" })));
  main().replaceChildren(form);
  input.focus();
}

function renderWho() {
  const w = state.who;
  document.getElementById("who").replaceChildren(
    el("span", { text: w.name }),
    el("span", { class: "role", text: w.role }),
    el("button", { class: "secondary", type: "button", onclick: () => signOut(), text: "Sign out" }));
}

// ---------- routing and polling ----------

async function route(message) {
  clearInterval(state.timer);
  state.timer = null;
  if (!sessionStorage.getItem(KEY)) return renderSignIn(message);
  try {
    if (!state.who) state.who = await api("GET", "/v1/whoami");
    if (!state.envs.length) state.envs = (await api("GET", "/v1/environments")).environments;
  } catch (e) {
    sessionStorage.removeItem(KEY);
    state.who = null;
    return renderSignIn(e.message);
  }
  renderWho();
  const m = location.hash.match(/^#\/agents\/([^/]+)$/);
  state.view = m ? { agent: decodeURIComponent(m[1]) } : { agent: null };
  if (state.view.agent) await agentPage(state.view.agent);
  else await agentsPage();
  main().focus();
}

function poll(fn) {
  clearInterval(state.timer);
  state.timer = setInterval(fn, POLL_MS);
}

/// Requests and 5xx per second for (agent, env) from this node's counters.
function rates(agent, env, traffic) {
  if (!traffic) return null;
  const key = agent + "/" + env;
  const now = Date.now();
  const prev = state.traffic.get(key);
  state.traffic.set(key, { t: now, requests: traffic.requests, errors: traffic.errors });
  if (!prev || now - prev.t < 500) return prev ? prev.rates || null : null;
  const dt = (now - prev.t) / 1000;
  const r = {
    rps: Math.max(0, (traffic.requests - prev.requests) / dt),
    eps: Math.max(0, (traffic.errors - prev.errors) / dt),
  };
  state.traffic.get(key).rates = r;
  return r;
}

function fmtRate(r) {
  return r ? `${r.rps.toFixed(1)} req/s · ${r.eps.toFixed(1)} 5xx/s` : "– req/s";
}

/// "2 endpoints: 1 healthy, 1 ejected" from the snapshot's counts by state.
function endpointsText(e) {
  if (!e) return "";
  const parts = Object.entries(e).filter(([k, n]) => k !== "total" && n > 0).map(([k, n]) => `${n} ${k}`);
  return `${e.total} endpoint${e.total === 1 ? "" : "s"}: ${parts.join(", ")}`;
}

// ---------- agents list ----------

async function agentsPage() {
  const region = el("div", { "aria-live": "polite" });
  main().replaceChildren(el("h1", { text: "Agents" }), region);
  const draw = async () => {
    try {
      const agents = (await api("GET", "/v1/agents")).agents;
      const snaps = await Promise.all(agents.map((a) => api("GET", `/v1/agents/${enc(a.name)}`)));
      const head = el("tr", {}, el("th", { scope: "col", text: "Agent" }),
        state.envs.map((e) => el("th", { scope: "col", text: e.name })));
      const rows = snaps.map((s) => el("tr", { "data-agent": s.name },
        el("th", { scope: "row" }, el("a", { href: `#/agents/${enc(s.name)}`, text: s.name }),
          s.description ? el("div", { class: "muted", text: s.description }) : null),
        state.envs.map((e) => {
          const live = s.environments[e.name];
          const r = rates(s.name, e.name, s.traffic[e.name]);
          if (!live) return el("td", { "data-env": e.name }, el("span", { class: "muted", text: "–" }));
          return el("td", { "data-env": e.name },
            el("strong", { class: "version", text: live.version }),
            el("div", { class: "muted", text: "since " + time(live.since) }),
            live.canary ? el("div", {}, el("span", { class: "badge", text: `canary ${live.canary.version} ${live.canary.weight} %` })) : null,
            el("div", { class: "muted", text: fmtRate(r) }),
            s.endpoints[e.name] ? el("div", { class: "muted", text: endpointsText(s.endpoints[e.name]) }) : null);
        })));
      region.replaceChildren(agents.length
        ? el("div", { class: "scroll" }, el("table", { id: "agents" }, el("thead", {}, head), el("tbody", {}, rows)))
        : el("p", { class: "muted", text: "No agents yet." }));
    } catch (e) {
      region.replaceChildren();
      showError(region, e);
    }
  };
  await draw();
  poll(draw);
}

// ---------- one agent ----------

async function agentPage(agent) {
  const cards = el("div", { class: "cards", id: "environments", "aria-live": "polite" });
  const history = el("div", { id: "history", class: "sections" });
  const versions = el("div", { id: "versions" });
  const tokens = el("div", { id: "tokens" });
  const secrets = el("div", { id: "secrets" });
  main().replaceChildren(
    el("p", {}, el("a", { href: "#/", text: "← Agents" })),
    el("h1", { text: agent }),
    el("h2", { text: "Environments" }), cards,
    el("h2", { text: "History" }), history,
    el("h2", { text: "Versions" }), versions,
    el("h2", { text: "Deployment tokens" }), tokens,
    el("h2", { text: "Secrets" }), secrets);
  let known = [];
  const drawLive = async () => {
    try {
      const [snap, vs] = await Promise.all([
        api("GET", `/v1/agents/${enc(agent)}`),
        api("GET", `/v1/agents/${enc(agent)}/versions`),
      ]);
      known = vs.versions;
      cards.replaceChildren(...state.envs.map((e) => envCard(agent, e, snap, known)));
      const hist = await Promise.all(state.envs.map((e) =>
        api("GET", `/v1/agents/${enc(agent)}/environments/${enc(e.name)}/history?limit=10`)));
      history.replaceChildren(...state.envs.map((e, i) => historyTable(e.name, hist[i].entries)));
    } catch (e) {
      cards.replaceChildren();
      showError(cards, e);
    }
  };
  await drawLive();
  renderVersions(agent, versions, known);
  renderTokens(agent, tokens);
  renderSecrets(agent, secrets);
  poll(drawLive);
}

function envCard(agent, env, snap, versions) {
  const live = snap.environments[env.name];
  const r = rates(agent, env.name, snap.traffic[env.name]);
  const card = el("section", { class: "card", "data-env": env.name, "aria-label": env.name },
    el("h3", {}, env.name, env.protected ? el("span", { class: "badge protected", text: "protected" }) : null),
    live ? el("div", { class: "live", text: live.version }) : el("div", { class: "live muted", text: "nothing deployed" }),
    live ? el("div", { class: "muted", text: "since " + time(live.since) + " · revision " + live.revision }) : null,
    live && live.canary ? el("div", {}, el("span", { class: "badge", text: `canary ${live.canary.version} at ${live.canary.weight} %` })) : null,
    live && live.bake ? el("div", { class: "muted", text: `watching ${live.bake.version} until ${time(live.bake.until)}` }) : null,
    el("div", { class: "stats" }, el("span", { text: fmtRate(r) }),
      snap.endpoints[env.name] ? el("span", { text: endpointsText(snap.endpoints[env.name]) }) : null));
  if (!can()) return card;
  const act = (verb, op, body, cls) => el("button", { type: "button", class: cls || "secondary",
    onclick: () => planThenMove(agent, env, verb, op, body), text: verb });
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", onclick: () => chooseVersion(agent, env, versions, false), text: "Deploy" }),
    act("Promote", "promote", {}),
    live ? act("Rollback", "rollback", {}) : null,
    live ? act("Undeploy", "undeploy", {}, "danger") : null,
    live ? el("button", { type: "button", class: "secondary", onclick: () => chooseVersion(agent, env, versions, true), text: live.canary ? "Canary weight" : "Canary" }) : null,
    live && live.canary ? act("Complete canary", "canary/complete", {}) : null,
    live && live.canary ? act("Abort canary", "canary/abort", {}, "danger") : null);
  card.append(actions);
  return card;
}

function historyTable(env, entries) {
  const rows = entries.map((m) => el("tr", {},
    el("td", { text: m.revision }), el("td", { text: time(m.at) }),
    el("td", {}, m.action, m.forced ? el("span", { class: "badge forced", text: "forced" }) : null,
      m.action === "auto_rollback" || m.actor === "switchyard" ? el("span", { class: "badge auto", text: "automatic" }) : null),
    el("td", { text: `${m.previous || "–"} → ${m.version || "–"}` + (m.weight !== undefined ? ` (${m.weight} %)` : "") }),
    el("td", { text: m.actor + (m.on_behalf_of ? ` for ${m.on_behalf_of}` : "") }),
    el("td", { text: m.reason || "" })));
  return el("details", { open: true, "data-env": env },
    el("summary", { text: `${env} (${entries.length} latest)` }),
    entries.length ? el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Revision", "When", "Action", "From → to", "Actor", "Reason"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows))) : el("p", { class: "muted", text: "No moves yet." }));
}

// ---------- moves: choose, plan, confirm ----------

const dialog = () => document.getElementById("dialog");

function openDialog(title, ...body) {
  const d = dialog();
  fill(d, el("h2", { id: "dialog-title", text: title }), body);
  if (!d.open) d.showModal();
  return d;
}

function closeDialog() { const d = dialog(); if (d.open) d.close(); }

function chooseVersion(agent, env, versions, canary) {
  const select = el("select", { id: "pick-version", name: "version" },
    versions.filter((v) => v.state === "running").map((v) => el("option", { value: v.version, text: `${v.version} — ${v.description || v.digest.slice(7, 19)}` })));
  const weight = el("input", { id: "pick-weight", type: "number", min: "0", max: "100", step: "0.01", value: "5" });
  const form = el("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const body = { version: select.value };
    if (canary) body.weight = Number(weight.value);
    planThenMove(agent, env, canary ? "Start canary" : "Deploy", canary ? "canary" : "deploy", body);
  } },
    el("label", { for: "pick-version" }, "Version", select),
    canary ? el("label", { for: "pick-weight" }, "Weight (%)", weight) : null,
    el("button", { type: "submit", text: "Show the plan" }),
    el("button", { type: "button", class: "secondary", onclick: closeDialog, text: "Cancel" }));
  openDialog(`${canary ? "Canary" : "Deploy"} in ${env.name}`, form);
  select.focus();
}

async function planThenMove(agent, env, verb, op, body) {
  const path = `/v1/agents/${enc(agent)}/environments/${enc(env.name)}/${op}`;
  let plan;
  try {
    plan = (await api("POST", path, { ...body, dry_run: true, confirm: true })).plan;
  } catch (e) {
    const d = openDialog(`${verb}: refused`, el("div", { class: "buttons" },
      el("button", { type: "button", class: "secondary", onclick: closeDialog, text: "Close" })));
    showError(d, e);
    return;
  }
  const checks = plan.checks || {};
  const health = checks.candidate_health && checks.candidate_health.endpoints
    ? checks.candidate_health.endpoints.map((e) => `${e.url}: ${e.passed ? "passed" : e.error || "failed"}`).join("; ")
    : (checks.candidate_health && checks.candidate_health.skipped ? "skipped" : "not probed");
  const confirmBtn = el("button", { type: "button", class: /Undeploy|Abort/.test(verb) ? "danger" : null, id: "confirm-move", text: verb });
  const typed = env.protected ? el("input", { id: "type-env", autocomplete: "off", "aria-describedby": "type-env-help" }) : null;
  const allowed = plan.allowed;
  confirmBtn.disabled = !allowed || !!typed;
  if (typed) typed.addEventListener("input", () => { confirmBtn.disabled = !allowed || typed.value !== env.name; });
  const result = el("div", { "aria-live": "assertive" });
  confirmBtn.addEventListener("click", async () => {
    confirmBtn.disabled = true;
    try {
      await api("POST", path, { ...body, confirm: true });
      closeDialog();
      if (state.view && state.view.agent === agent) await agentPage(agent);
    } catch (e) {
      result.replaceChildren();
      showError(result, e);
      confirmBtn.disabled = false;
    }
  });
  openDialog(`${verb}: ${agent} in ${env.name}`,
    el("dl", { class: "plan", id: "plan" },
      el("dt", { text: "Action" }), el("dd", { text: plan.action }),
      el("dt", { text: "From" }), el("dd", { text: plan.from || "nothing" }),
      el("dt", { text: "To" }), el("dd", { text: plan.to || "nothing" }),
      el("dt", { text: "Revision" }), el("dd", { text: plan.revision }),
      el("dt", { text: "Health gate" }), el("dd", { text: health }),
      el("dt", { text: "Missing secrets" }), el("dd", { text: (checks.missing_secrets || []).join(", ") || "none" }),
      checks.canary && (checks.canary.before || checks.canary.after) ? [
        el("dt", { text: "Canary" }),
        el("dd", { text: `${checks.canary.before ? checks.canary.before.version + " " + checks.canary.before.weight + " %" : "none"} → ${checks.canary.after ? checks.canary.after.version + " " + checks.canary.after.weight + " %" : "none"}` }),
      ] : null,
      el("dt", { text: "Releases session pins" }), el("dd", { text: checks.releases_pins ? "yes" : "no" })),
    allowed ? null : el("div", { class: "error", role: "alert", text: `${plan.refusal.code}: ${plan.refusal.message}` }),
    typed ? el("p", {}, el("label", { for: "type-env" },
      el("span", { id: "type-env-help", text: `${env.name} is protected: type its name to confirm` }), typed)) : null,
    result,
    el("div", { class: "buttons" }, el("button", { type: "button", class: "secondary", onclick: closeDialog, text: "Cancel" }), confirmBtn));
  (typed || confirmBtn).focus();
}

// ---------- versions and diff ----------

function renderVersions(agent, box, versions) {
  const fields = ["upstreams", "config", "description", "inject", "health", "min_healthy", "state"];
  const rows = versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
    el("td", {}, el("strong", { text: v.version }), v.state === "stopped" ? el("span", { class: "badge stopped", text: "stopped" }) : null),
    el("td", { text: time(v.created_at) }), el("td", { text: v.author }),
    el("td", {}, el("code", { text: v.digest.slice(0, 19) + "…" })),
    el("td", { text: v.upstreams.join(", ") }),
    el("td", {}, el("details", {}, el("summary", { text: v.description || "config" }), el("pre", { text: JSON.stringify(v.config, null, 2) })))));
  const pick = (id, label, idx) => el("label", { for: id }, label, el("select", { id },
    versions.map((v, i) => el("option", { value: v.version, selected: i === idx, text: v.version }))));
  const out = el("div", { id: "diff", "aria-live": "polite" });
  const form = el("form", { class: "inline", "aria-label": "Compare versions", onsubmit: async (ev) => {
    ev.preventDefault();
    const a = form.querySelector("#diff-from").value, b = form.querySelector("#diff-to").value;
    try {
      const d = await api("GET", `/v1/agents/${enc(agent)}/versions/${a}/diff/${b}`);
      const va = versions.find((v) => v.version === a), vb = versions.find((v) => v.version === b);
      const changed = new Set(d.changes.map((c) => c.path.split("/")[1]));
      out.replaceChildren(el("div", { class: "scroll" }, el("table", { id: "diff-table" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Field" }), el("th", { scope: "col", text: a }), el("th", { scope: "col", text: b }))),
        el("tbody", {}, fields.map((f) => el("tr", { class: changed.has(f) ? "changed" : null, "data-field": f, "aria-label": changed.has(f) ? `${f} changed` : null },
          el("th", { scope: "row", text: f + (changed.has(f) ? " (changed)" : "") }),
          el("td", {}, el("pre", { text: JSON.stringify(va[f], null, 2) })),
          el("td", {}, el("pre", { text: JSON.stringify(vb[f], null, 2) }))))))),
        el("p", { class: "muted", text: d.changes.length ? `${d.changes.length} change(s): ${d.changes.map((c) => c.path).join(", ")}` : "No difference." }));
    } catch (e) { out.replaceChildren(); showError(out, e); }
  } }, pick("diff-from", "From", Math.max(0, versions.length - 2)), pick("diff-to", "To", versions.length - 1),
    el("button", { type: "submit", text: "Compare" }));
  fill(box,
    versions.length ? el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Version", "Created", "Author", "Digest", "Upstreams", "Description and config"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows))) : el("p", { class: "muted", text: "No versions yet." }),
    versions.length > 1 ? el("h3", { text: "Compare two versions" }) : null,
    versions.length > 1 ? form : null, out);
}

// ---------- deployment tokens ----------

function renderTokens(agent, box) {
  const envSelect = el("select", { id: "token-env" }, state.envs.map((e) => el("option", { value: e.name, text: e.name })));
  const list = el("div", { id: "token-list", "aria-live": "polite" });
  const load = async () => {
    try {
      const env = envSelect.value;
      const t = (await api("GET", `/v1/agents/${enc(agent)}/environments/${enc(env)}/tokens`)).tokens;
      list.replaceChildren(t.length ? el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Id", "Name", "Created by", "Created", "Last used", "Expires", "State", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, t.map((k) => el("tr", { "data-token": k.id },
          el("td", {}, el("code", { text: k.id })), el("td", { text: k.name || "–" }), el("td", { text: k.created_by || "–" }),
          el("td", { text: time(k.created_at) }), el("td", { text: time(k.last_used_at) }), el("td", { text: time(k.expires_at) }),
          el("td", {}, k.revoked_at ? el("span", { class: "badge revoked", text: "revoked" }) : k.suspended_at ? el("span", { class: "badge forced", text: "suspended" }) : "active"),
          el("td", {}, can() && !k.revoked_at ? el("button", { type: "button", class: "danger", onclick: async () => {
            try { await api("DELETE", `/v1/tokens/${enc(k.id)}`); await load(); } catch (e) { showError(list, e); }
          }, text: "Revoke", "aria-label": `Revoke ${k.id}` }) : null)))))) : el("p", { class: "muted", text: "No tokens in this environment." }));
    } catch (e) { list.replaceChildren(); showError(list, e); }
  };
  envSelect.addEventListener("change", load);
  const name = el("input", { id: "token-name", autocomplete: "off" });
  const mint = el("form", { class: "inline", "aria-label": "Mint a token", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const t = await api("POST", `/v1/agents/${enc(agent)}/environments/${enc(envSelect.value)}/tokens`, { name: name.value });
      name.value = "";
      const secret = el("div", { class: "secret-once", id: "minted-token", text: t.token });
      const copied = el("span", { class: "muted", "aria-live": "polite" });
      openDialog("Token minted",
        el("p", { class: "notice", text: "This is the only time the token is shown. Copy it now and keep it somewhere safe." }),
        secret,
        el("div", { class: "buttons" },
          copied,
          el("button", { type: "button", class: "secondary", onclick: async () => {
            try { await navigator.clipboard.writeText(t.token); copied.textContent = "Copied."; } catch (_) { copied.textContent = "Copy failed: select the text."; }
          }, text: "Copy" }),
          el("button", { type: "button", onclick: () => { secret.textContent = ""; closeDialog(); }, text: "Done" })));
      await load();
    } catch (e) { showError(mint, e); }
  } }, el("label", { for: "token-name" }, "Name", name), el("button", { type: "submit", text: "Mint token" }));
  fill(box, el("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
    el("label", { for: "token-env" }, "Environment", envSelect)), can() ? mint : null, list);
  load();
}

// ---------- secrets ----------

function renderSecrets(agent, box) {
  const list = el("div", { id: "secret-list" });
  const load = async () => {
    try {
      const s = (await api("GET", `/v1/agents/${enc(agent)}/secrets`)).secrets;
      list.replaceChildren(s.length ? el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Name", "Scope", "Updated", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, s.map((x) => el("tr", {},
          el("td", {}, el("code", { text: x.name })), el("td", { text: x.environment || "every environment" }),
          el("td", { text: time(x.updated_at) }),
          el("td", {}, can() ? el("button", { type: "button", class: "danger", onclick: async () => {
            const q = x.environment ? `?environment=${enc(x.environment)}` : "";
            try { await api("DELETE", `/v1/agents/${enc(agent)}/secrets/${enc(x.name)}${q}`); await load(); } catch (e) { showError(list, e); }
          }, text: "Delete", "aria-label": `Delete ${x.name}` }) : null)))))) : el("p", { class: "muted", text: "No secrets." }));
    } catch (e) { list.replaceChildren(); showError(list, e); }
  };
  const name = el("input", { id: "secret-name", autocomplete: "off", pattern: "[A-Z][A-Z0-9_]{0,63}", required: true });
  const scope = el("select", { id: "secret-env" }, el("option", { value: "", text: "every environment" }),
    state.envs.map((e) => el("option", { value: e.name, text: e.name })));
  const value = el("input", { id: "secret-value", type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "inline", "aria-label": "Set a secret", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { value: value.value };
    if (scope.value) body.environment = scope.value;
    try {
      await api("PUT", `/v1/agents/${enc(agent)}/secrets/${enc(name.value)}`, body);
      value.value = "";
      await load();
    } catch (e) { showError(form, e); }
  } }, el("label", { for: "secret-name" }, "Name", name), el("label", { for: "secret-env" }, "Scope", scope),
    el("label", { for: "secret-value" }, "Value (never shown back)", value), el("button", { type: "submit", text: "Set secret" }));
  fill(box, can() ? form : null, list);
  load();
}

window.addEventListener("hashchange", () => route());
document.addEventListener("DOMContentLoaded", () => route());
