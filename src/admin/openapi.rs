//! `GET /v1/openapi.json`: OpenAPI 3.1 for every admin call, its bodies, answers and
//! error codes — the one `/v1` path served without a token.
//!
//! Written next to the router rather than derived: the router is one `match` over path
//! segments, not annotated handlers. Two checks keep it from drifting: a unit test
//! walks every path the router knows ([`super::known_path`]) and every documented one
//! both ways, and CI runs schemathesis against a real gateway with it (every
//! operation; documented status codes only, no 500, every answer matching its
//! schema). The error codes come from the one table the answers use ([`Code::ALL`]).

use super::error::Code;
use serde_json::{json, Map, Value};

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

/// An error answer: the envelope, and the codes this status carries.
fn error(status: u16) -> Value {
    let codes: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.parts())
        .filter(|(s, _)| s.as_u16() == status)
        .map(|(_, n)| n)
        .collect();
    let mut r = json_body(reference("Error"));
    r["description"] = format!("error: {}", codes.join(", ")).into();
    r
}

/// Every operation may be refused for its token (401) or role (403), find the store
/// away (503), or be given a body that is too large (413) or malformed (400).
const COMMON: [u16; 5] = [400, 401, 403, 413, 503];

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<Value>,
    ok: (u16, Value),
    errors: &'static [u16],
    query: &'static [(&'static str, &'static str)],
}

fn op(method: &'static str, path: &'static str, summary: &'static str, ok: (u16, Value)) -> Op {
    Op {
        method,
        path,
        summary,
        body: None,
        ok,
        errors: &[],
        query: &[],
    }
}

impl Op {
    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
    fn errors(mut self, e: &'static [u16]) -> Self {
        self.errors = e;
        self
    }
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Self {
        self.query = q;
        self
    }
}

fn ok(schema: Value) -> (u16, Value) {
    (200, schema)
}

fn created(schema: Value) -> (u16, Value) {
    (201, schema)
}

fn no_content() -> (u16, Value) {
    (204, Value::Null)
}

fn list(key: &str, item: &str) -> Value {
    json!({
        "type": "object",
        "required": [key],
        "properties": { key: { "type": "array", "items": reference(item) } }
    })
}

fn operations() -> Vec<Op> {
    let any = json!({"type": "object"});
    let moved = json!({"oneOf": [reference("Move"), reference("Plan")]});
    let mv = |path: &'static str, summary: &'static str| {
        op("post", path, summary, ok(moved.clone()))
            .body(reference("MoveBody"))
            .errors(&[404, 409, 422, 428])
    };
    vec![
        op("get", "/v1/environments", "The pipeline, in promotion order", ok(list("environments", "Environment"))),
        op("get", "/v1/agents", "Every agent", ok(list("agents", "Agent"))),
        op("post", "/v1/agents", "Create an agent", created(reference("Agent")))
            .body(reference("AgentBody"))
            .errors(&[409]),
        op("get", "/v1/agents/{agent}", "Which version is live in each environment, with this node's counters", ok(reference("Snapshot")))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/versions", "The agent's versions", ok(list("versions", "Version")))
            .errors(&[404]),
        op("post", "/v1/agents/{agent}/versions", "Publish an immutable version", created(reference("Version")))
            .body(reference("VersionSpec"))
            .errors(&[404, 422]),
        op("get", "/v1/agents/{agent}/versions/{version}", "One version", ok(reference("Version")))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/versions/{version}/diff/{other}", "What differs between two versions", ok(json!({
            "type": "object", "required": ["from", "to", "changes"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "changes": {"type": "array"}}
        })))
            .errors(&[404]),
        op("post", "/v1/agents/{agent}/versions/{version}/stop", "Stop a version: it serves 503 version_stopped", ok(reference("Version")))
            .errors(&[404]),
        op("post", "/v1/agents/{agent}/versions/{version}/start", "Start a stopped version", ok(reference("Version")))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/versions/{version}/health", "This node's view of the version's endpoints", ok(any.clone()))
            .errors(&[404]),
        mv("/v1/agents/{agent}/environments/{environment}/deploy", "Make a version live (the gate first)"),
        mv("/v1/agents/{agent}/environments/{environment}/promote", "Move the environment's version to the next stage"),
        mv("/v1/agents/{agent}/environments/{environment}/rollback", "Undo the last move"),
        mv("/v1/agents/{agent}/environments/{environment}/undeploy", "Serve nothing"),
        mv("/v1/agents/{agent}/environments/{environment}/canary", "Start a canary or change its weight"),
        mv("/v1/agents/{agent}/environments/{environment}/canary/complete", "Make the canary the environment's version"),
        mv("/v1/agents/{agent}/environments/{environment}/canary/abort", "Remove the canary"),
        op("get", "/v1/agents/{agent}/environments/{environment}/history", "Moves, newest first", ok(list("entries", "Move")))
            .errors(&[404])
            .query(&[("limit", "integer"), ("before", "integer")]),
        op("get", "/v1/agents/{agent}/environments/{environment}/policy", "Session affinity, stream drain and automatic rollback", ok(reference("Policy")))
            .errors(&[404]),
        op("put", "/v1/agents/{agent}/environments/{environment}/policy", "Merge into the policy (admin role)", ok(reference("Policy")))
            .body(reference("PolicyPatch"))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/environments/{environment}/policy/history", "Policy changes, newest first", ok(any.clone()))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/environments/{environment}/tokens", "Deployment tokens (never their secrets)", ok(list("tokens", "Token")))
            .errors(&[404]),
        op("post", "/v1/agents/{agent}/environments/{environment}/tokens", "Mint a deployment token; the secret is shown once", created(reference("TokenCreated")))
            .body(reference("TokenBody"))
            .errors(&[404]),
        op("delete", "/v1/tokens/{id}", "Revoke a deployment token", no_content()).errors(&[404]),
        op("post", "/v1/tokens/{id}/suspend", "Suspend a deployment token", ok(reference("Token"))).errors(&[404, 409]),
        op("post", "/v1/tokens/{id}/resume", "Resume a suspended token", ok(reference("Token"))).errors(&[404, 409]),
        op("get", "/v1/agents/{agent}/secrets", "Secret names and scopes (never values)", ok(list("secrets", "Secret")))
            .errors(&[404]),
        op("get", "/v1/agents/{agent}/secrets/audit", "Who set or deleted which secret", ok(list("audit", "SecretAudit")))
            .errors(&[404]),
        op("put", "/v1/agents/{agent}/secrets/{name}", "Set a secret, agent-wide or for one environment", ok(reference("Secret")))
            .body(reference("SecretBody"))
            .errors(&[404, 409]),
        op("delete", "/v1/agents/{agent}/secrets/{name}", "Delete a secret unless a live version needs it", no_content())
            .errors(&[404, 409])
            .query(&[("environment", "string")]),
        op("get", "/v1/admin-tokens", "Named admin tokens (never their secrets)", ok(list("admin_tokens", "AdminToken"))),
        op("post", "/v1/admin-tokens", "Mint a named admin token with a role (admin role)", created(reference("AdminTokenCreated")))
            .body(reference("AdminTokenBody"))
            .errors(&[409]),
        op("delete", "/v1/admin-tokens/{id}", "Revoke an admin token", no_content()).errors(&[404]),
        op("get", "/v1/whoami", "The calling token's name and role", ok(json!({
            "type": "object", "required": ["name", "role"],
            "properties": {"name": {"type": "string"}, "role": reference("Role")}
        }))),
    ]
}

/// The parameter a `{name}` path segment stands for.
fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "agent" | "environment" => {
            json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"})
        }
        "version" | "other" => json!({"type": "string", "pattern": "^v[0-9]+$"}),
        "name" => json!({"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,63}$"}),
        _ => json!({"type": "string"}),
    };
    // examples that exist in the demo's store, so generated calls reach real records
    let example = match name {
        "agent" => "demo-agent",
        "environment" => "staging",
        "version" => "v1",
        "other" => "v2",
        "name" => "MODEL_KEY",
        _ => "tok_0000000000000000",
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema, "example": example})
}

fn schemas() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let opt_time = json!({"type": ["string", "null"], "format": "date-time"});
    let label = json!({"type": "string", "pattern": "^v[0-9]+$"});
    let opt_label = json!({"type": ["string", "null"], "pattern": "^v[0-9]+$"});
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": Code::ALL.iter().map(|c| c.parts().1).collect::<Vec<_>>()},
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                    "details": {}
                }
            }}
        },
        "Role": {"type": "string", "enum": ["viewer", "deployer", "admin"]},
        "Environment": {
            "type": "object", "required": ["name", "protected"],
            "properties": {"name": {"type": "string"}, "protected": {"type": "boolean"}, "next": {"type": ["string", "null"]}}
        },
        "Agent": {
            "type": "object", "required": ["name", "description", "created_at"],
            "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "created_at": time}
        },
        "AgentBody": {
            "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "description": {"type": "string"}}
        },
        "Inject": {
            "type": "object", "required": ["header", "secret"], "additionalProperties": false,
            "properties": {"header": {"type": "string"}, "secret": {"type": "string"}, "format": {"type": "string"}}
        },
        "HealthSpec": {
            "type": "object", "required": ["path"], "additionalProperties": false,
            "properties": {
                "path": {"type": "string"}, "interval_ms": {"type": "integer"}, "timeout_ms": {"type": "integer"},
                "healthy_threshold": {"type": "integer"}, "unhealthy_threshold": {"type": "integer"}
            }
        },
        "VersionSpec": {
            "type": "object", "required": ["upstreams"], "additionalProperties": false,
            "properties": {
                "upstreams": {"type": "array", "items": {"type": "string"}},
                "config": {"type": ["object", "null"]},
                "description": {"type": ["string", "null"]},
                "health": {"oneOf": [reference("HealthSpec"), {"type": "null"}]},
                "min_healthy": {"type": ["integer", "null"]},
                "inject": {"type": "array", "items": reference("Inject")}
            }
        },
        "Version": {
            "type": "object",
            "required": ["agent", "version", "upstreams", "config", "description", "author", "digest", "state", "created_at", "min_healthy", "inject"],
            "properties": {
                "agent": {"type": "string"}, "version": label,
                "upstreams": {"type": "array", "items": {"type": "string"}},
                "config": {"type": "object"}, "description": {"type": "string"}, "author": {"type": "string"},
                "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                "state": {"type": "string", "enum": ["running", "stopped"]},
                "created_at": time,
                "health": {"oneOf": [reference("HealthSpec"), {"type": "null"}]},
                "min_healthy": {"type": "integer"},
                "inject": {"type": "array", "items": reference("Inject")}
            }
        },
        "Snapshot": {
            "type": "object", "required": ["name", "environments"],
            "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "environments": {"type": "object"}, "traffic": {"type": "object"}, "endpoints": {"type": "object"}}
        },
        "MoveBody": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "version": {"type": "string"}, "to": {"type": "string"}, "to_version": {"type": "string"},
                "reason": {"type": "string"}, "confirm": {"type": "boolean"},
                "expected_revision": {"type": "integer", "minimum": 0}, "force": {"type": "boolean"},
                "dry_run": {"type": "boolean"}, "weight": {"type": "number"}
            }
        },
        "Move": {
            "type": "object", "required": ["agent", "environment", "action", "version", "previous", "actor", "forced", "revision", "at"],
            "properties": {
                "agent": {"type": "string"}, "environment": {"type": "string"},
                "action": {"type": "string", "enum": ["deploy", "promote", "rollback", "undeploy", "canary_start", "canary_weight", "canary_complete", "canary_abort", "auto_rollback"]},
                "version": opt_label, "previous": opt_label, "actor": {"type": "string"},
                "on_behalf_of": {"type": "string"}, "reason": {"type": ["string", "null"]},
                "forced": {"type": "boolean"}, "weight": {"type": "number"},
                "revision": {"type": "integer"}, "at": time, "previous_since": opt_time,
                "health": {}
            }
        },
        "Plan": {
            "type": "object", "required": ["dry_run", "plan"],
            "properties": {"dry_run": {"const": true}, "plan": {
                "type": "object", "required": ["action", "environment", "from", "to", "revision", "allowed", "refusal", "checks"],
                "properties": {
                    "action": {"type": "string"}, "environment": {"type": "string"},
                    "from": opt_label, "to": opt_label, "revision": {"type": "integer"},
                    "allowed": {"type": "boolean"},
                    "refusal": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["status", "code", "message"]}]},
                    "checks": {"type": "object", "required": ["confirmation_required", "candidate_health", "missing_secrets", "canary", "releases_pins"]}
                }
            }}
        },
        "Policy": {
            "type": "object", "required": ["session_affinity", "session_ttl_s", "stream_drain_s", "auto_rollback"],
            "properties": {
                "session_affinity": {"type": "string", "enum": ["follow", "sticky"]},
                "session_ttl_s": {"type": "integer"}, "stream_drain_s": {"type": "integer"},
                "auto_rollback": {"oneOf": [{"type": "null"}, reference("AutoRollback")]}
            }
        },
        "AutoRollback": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "window_s": {"type": "integer"}, "min_requests": {"type": "integer"},
                "max_error_rate": {"type": "number"}, "max_ttfb_p99_ms": {"type": ["integer", "null"]},
                "bake_s": {"type": "integer"}
            }
        },
        "PolicyPatch": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "session_affinity": {"type": "string", "enum": ["follow", "sticky"]},
                "session_ttl_s": {"type": "integer", "minimum": 0}, "stream_drain_s": {"type": "integer", "minimum": 0},
                "auto_rollback": {"oneOf": [{"type": "null"}, reference("AutoRollback")]}
            }
        },
        "Token": {
            "type": "object", "required": ["id", "agent", "environment", "name", "created_at", "expires_at", "revoked_at", "suspended_at", "scopes", "created_by", "last_used_at"],
            "properties": {
                "id": {"type": "string"}, "agent": {"type": "string"}, "environment": {"type": "string"},
                "name": {"type": "string"}, "created_at": time, "expires_at": opt_time,
                "revoked_at": opt_time, "suspended_at": opt_time,
                "scopes": {"type": "array", "items": {"type": "string", "enum": ["pin"]}},
                "created_by": {"type": "string"}, "last_used_at": opt_time
            }
        },
        "TokenCreated": {"allOf": [reference("Token"), {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}]},
        "TokenBody": {
            "type": "object", "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}, "scopes": {"type": "array", "items": {"type": "string"}}}
        },
        "AdminToken": {
            "type": "object", "required": ["id", "name", "role", "created_at", "revoked_at", "created_by"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "role": reference("Role"), "created_at": time, "revoked_at": opt_time, "created_by": {"type": "string"}}
        },
        "AdminTokenCreated": {"allOf": [reference("AdminToken"), {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}]},
        "AdminTokenBody": {
            "type": "object", "required": ["name", "role"], "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "role": reference("Role")}
        },
        "Secret": {
            "type": "object", "required": ["name", "environment", "updated_at"],
            "properties": {"name": {"type": "string"}, "environment": {"type": ["string", "null"]}, "updated_at": time}
        },
        "SecretBody": {
            "type": "object", "required": ["value"], "additionalProperties": false,
            "properties": {"value": {"type": "string", "writeOnly": true}, "environment": {"type": "string"}}
        },
        "SecretAudit": {
            "type": "object", "required": ["revision", "name", "environment", "action", "actor", "at"],
            "properties": {
                "revision": {"type": "integer"}, "name": {"type": "string"}, "environment": {"type": ["string", "null"]},
                "action": {"type": "string", "enum": ["set", "delete"]}, "actor": {"type": "string"},
                "on_behalf_of": {"type": ["string", "null"]}, "at": time
            }
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in operations() {
        let mut responses = Map::new();
        let (status, schema) = o.ok;
        let mut okr = if schema.is_null() {
            json!({})
        } else {
            json_body(schema)
        };
        okr["description"] = "success".into();
        responses.insert(status.to_string(), okr);
        let mut errs: Vec<u16> = COMMON.iter().chain(o.errors).copied().collect();
        errs.sort_unstable();
        errs.dedup();
        for s in errs {
            responses.insert(s.to_string(), error(s));
        }
        let mut params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(path_parameter)
            .collect();
        for (name, ty) in o.query {
            params.push(
                json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}}),
            );
        }
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '-', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = o.body {
            let mut rb = json_body(b);
            rb["required"] = false.into();
            operation["requestBody"] = rb;
        }
        let item = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        item[o.method] = operation;
    }
    paths.insert(
        "/v1/openapi.json".into(),
        json!({"get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agents, immutable versions, pointer moves, canaries, policies, deployment tokens, secrets and admin identities. Every call takes `Authorization: Bearer <admin token>`; errors answer `{\"error\":{\"code\",\"message\",\"request_id\"}}`."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's paths and the documented ones are the same set.
    #[test]
    fn every_route_is_documented_and_every_documented_path_routes() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for p in paths.keys() {
            let segs: Vec<&str> = p
                .trim_start_matches("/v1/")
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect();
            assert!(
                p == "/v1/openapi.json" || super::super::known_path(&segs),
                "{p} is documented but not routed"
            );
        }
        // every routed shape has its document entry
        let documented = |segs: &[&str]| {
            paths.keys().any(|p| {
                let d: Vec<&str> = p.trim_start_matches("/v1/").split('/').collect();
                d.len() == segs.len()
                    && d.iter()
                        .zip(segs)
                        .all(|(d, s)| d.starts_with('{') || d == s)
            })
        };
        for shape in [
            "environments",
            "agents",
            "agents/a",
            "agents/a/versions",
            "agents/a/versions/v1",
            "agents/a/versions/v1/diff/v2",
            "agents/a/versions/v1/stop",
            "agents/a/versions/v1/start",
            "agents/a/versions/v1/health",
            "agents/a/environments/e/deploy",
            "agents/a/environments/e/promote",
            "agents/a/environments/e/rollback",
            "agents/a/environments/e/undeploy",
            "agents/a/environments/e/history",
            "agents/a/environments/e/tokens",
            "agents/a/environments/e/canary",
            "agents/a/environments/e/canary/complete",
            "agents/a/environments/e/canary/abort",
            "agents/a/environments/e/policy",
            "agents/a/environments/e/policy/history",
            "agents/a/secrets",
            "agents/a/secrets/audit",
            "agents/a/secrets/N",
            "tokens/t",
            "tokens/t/suspend",
            "tokens/t/resume",
            "admin-tokens",
            "admin-tokens/x",
            "whoami",
        ] {
            let segs: Vec<&str> = shape.split('/').collect();
            assert!(super::super::known_path(&segs), "{shape} does not route");
            assert!(documented(&segs), "{shape} is not documented");
        }
        // the error codes named are the table's
        let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(codes, Code::ALL.len());
    }
}
