//! The integration tests, in one binary: one link instead of one per file. Tests that need a
//! process of their own stay beside this folder as their own binaries: the tracing captures
//! (callsite interest is global), the allocator-scanning transport test, and `examples`, which
//! runs alone as `cargo test --test examples`.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "retry")]
mod cae;
#[cfg(feature = "certificate")]
mod certificate;
#[cfg(feature = "certificate")]
mod certificate_loading;
#[cfg(feature = "certificate")]
mod certificate_properties;
mod clock_skew;
mod core_layer;
mod core_provider;
mod custom_credential;
mod destination;
mod hyper_client;
mod last_lease;
mod liveness;
mod managed_identity;
mod managed_identity_day;
mod managed_identity_transport;
#[cfg(feature = "opentelemetry")]
mod metrics;
mod properties;
#[cfg(feature = "retry")]
mod provider_robustness;
mod require_roles;
mod reqwest_client;
#[cfg(feature = "certificate")]
mod rotation;
#[cfg(feature = "redis")]
mod shared_cache;
#[cfg(feature = "redis")]
mod shared_cache_rotation;
#[cfg(feature = "redis")]
mod shared_cache_store;
#[cfg(feature = "retry")]
mod stack;
mod telemetry;
mod tenants;
mod tonic_health;
mod tower_contract;
mod warm_up;
mod workload_identity;
