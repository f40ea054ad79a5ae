//! End-to-end tests: real gateways and real upstreams on 127.0.0.1:0, over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod alerts;
mod attribution;
mod canary;
mod commit;
mod conformance;
mod desync;
mod durability;
mod fleet;
mod gate;
mod hardening;
mod health_checks;
mod http2;
mod identity;
mod limits;
mod metrics;
mod outcome;
mod plans;
mod process;
mod proxy;
mod replicas;
mod secrets;
mod support;
mod suspend;
mod upstream_tls;
