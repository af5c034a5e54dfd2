//! The emulator's protocol tests, in one binary: one link instead of one per file. No test here
//! sets process-wide state (environment, allocator, tracing subscriber), so they share a process.

mod common;

mod cae;
mod certificates;
mod controls;
mod demo_api;
mod federated;
mod managed_identity;
mod rate_limit;
mod telemetry;
mod tenants;
mod token_endpoint;
