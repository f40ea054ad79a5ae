//! Switchyard: an edge gateway for agent deployments.
//!
//! Client requests carry a deployment token scoped to one agent in one environment;
//! the gateway resolves, lock-free, which immutable version that environment points at
//! right now and forwards to that version's upstream. The admin API moves the pointers
//! atomically. See `DESIGN.md` for the planes and the layout.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod envelope;
pub mod fleet;
pub mod proxy;
pub mod routing;
pub mod sealing;
pub mod server;
pub mod store;
pub mod telemetry;
mod timer;
pub mod worker;
