//! Named admin tokens (admin role to create and revoke, any role to list) and
//! `whoami`.

use super::error::ApiError;
use super::{
    created_with_secret, json_response, no_content, no_randomness, parse_json, Admin,
    AdminResponse, Call,
};
use crate::domain::identity::mint_admin;
use crate::domain::Role;
use crate::store::{Command, Outcome};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    role: String,
}

/// `/v1/admin-tokens…` and `/v1/whoami`.
pub(super) async fn route(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (&Method::GET, ["whoami"]) => Ok(json_response(
            StatusCode::OK,
            &json!({"name": c.who.name, "role": c.who.role}),
        )),
        (&Method::GET, ["admin-tokens"]) => {
            let tokens = admin.store.admin_tokens().await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "admin_tokens": tokens }),
            ))
        }
        (&Method::POST, ["admin-tokens"]) => {
            let b: CreateBody = parse_json(&c.body)?;
            let role = Role::parse("role", &b.role)?;
            let minted = mint_admin().map_err(no_randomness)?;
            let cmd = Command::CreateAdminToken {
                id: minted.id,
                name: b.name,
                role,
                hash: minted.hash,
                created_by: c.who.name.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            let Outcome::AdminToken(t) = applied.outcome else {
                return Err(ApiError::internal("unexpected outcome"));
            };
            Ok(created_with_secret(&t, minted.secret))
        }
        (&Method::DELETE, ["admin-tokens", id]) => {
            let cmd = Command::RevokeAdminToken {
                id: (*id).to_owned(),
            };
            admin.execute(cmd, &c.who.name).await?;
            Ok(no_content())
        }
        _ => Err(c.unmatched()),
    }
}
