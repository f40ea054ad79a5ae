//! What operators and orchestrators poll without a token: liveness, readiness and
//! the Prometheus scrape.

use super::error::{ApiError, Code};
use super::{json_response, Admin, AdminResponse};
use crate::telemetry::render_state;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use std::sync::atomic::Ordering;

fn only_get(m: &Method) -> Result<(), ApiError> {
    if m == Method::GET || m == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{m} is not allowed here; use GET"),
        ))
    }
}

pub(super) fn healthz(method: &Method) -> Result<AdminResponse, ApiError> {
    only_get(method)?;
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// 200 once the state is loaded and the node can route; a store outage after that
/// does not make it unready.
pub(super) fn readyz(admin: &Admin, method: &Method) -> Result<AdminResponse, ApiError> {
    only_get(method)?;
    Ok(if admin.ready.load(Ordering::Acquire) {
        json_response(
            StatusCode::OK,
            &json!({"status": "ready", "revision": admin.table.revision()}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "loading"}),
        )
    })
}

pub(super) fn metrics(admin: &Admin, method: &Method) -> Result<AdminResponse, ApiError> {
    only_get(method)?;
    let table = &admin.table;
    let up = if admin.store.is_up() { 1.0 } else { 0.0 };
    let [requests, streams, connections] = table.metrics().load.gauges();
    let state = render_state(
        &table.deployments(),
        table.revision(),
        &[
            requests,
            streams,
            connections,
            (
                "switchyard_store_up",
                "Whether the last store operation reached the store (1) or not (0).",
                up,
            ),
            (
                "switchyard_fleet_applied_revision",
                "The change-feed revision this node has applied in order.",
                table.feed_revision() as f64,
            ),
        ],
    );
    let mut state = state;
    state.push_str(&crate::telemetry::render_endpoint_up(
        &table.endpoint_health(),
    ));
    let text = table.metrics().render(&state);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
