//! Shared mutable state of one emulator instance.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::directory::Directory;
use crate::fault::Fault;
use crate::jwt::emulator_key;
use crate::managed_identity::{IdentityRecord, MiSecrets};
use crate::rate_limit::Admission;
use crate::record::RecordedRequest;
use crate::token_signer::{Issuance, v2_issuer};

/// State shared between the [`Emulator`](crate::Emulator) handle and the server.
pub(crate) struct Shared {
    pub(crate) authority: String,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(authority: String, state: State) -> Shared {
        Shared {
            authority,
            state: Mutex::new(state),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays usable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct State {
    /// Tenants, app registrations, service principals and resources.
    pub(crate) directory: Directory,
    /// Token lifetime and issue sequence.
    pub(crate) issuance: Issuance,
    pub(crate) refresh_in: Option<Duration>,
    pub(crate) numbers_as_strings: bool,
    pub(crate) latency: Duration,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) token_requests: usize,
    pub(crate) api_requests: usize,
    pub(crate) last_token_request: Option<Vec<(String, String)>>,
    /// Tokens with a sequence number below this are revoked.
    pub(crate) revoked_below: u64,
    /// CAE: tokens below this sequence number were revoked by `cae_revoke`.
    pub(crate) cae_revoked_below: u64,
    /// CAE: the `nbf` value (Unix seconds) demanded in claims challenges.
    pub(crate) cae_nbf: u64,
    /// The `claims` parameter of the latest token request, parsed.
    pub(crate) last_token_request_claims: Option<serde_json::Value>,
    /// JWKS of trusted external issuers, by issuer URL.
    pub(crate) trusted_issuers: HashMap<String, serde_json::Value>,
    /// Client assertion `jti`s seen, by (client id, jti), with their expiry.
    pub(crate) used_jtis: HashMap<(String, String), i64>,
    /// Every token request with its headers, in order.
    pub(crate) token_log: Vec<RecordedRequest>,
    /// Token endpoint rate limit and per-second counts.
    pub(crate) admission: Admission,
    /// Managed identities assigned to the emulated host.
    pub(crate) identities: Vec<IdentityRecord>,
    /// Faults for the managed identity endpoints.
    pub(crate) mi_faults: VecDeque<Fault>,
    /// Every managed identity request is answered with this while it is set (an outage).
    pub(crate) mi_outage: Option<Fault>,
    /// The platform's token cache: the last token for an identity and resource is answered
    /// again while more than this remains of its life.
    pub(crate) mi_cache_renew_before: Option<Duration>,
    /// The tokens in that cache, by (client id, resource), with when each was signed.
    pub(crate) mi_cache: HashMap<(String, String), CachedMiToken>,
    /// Every request to a managed identity endpoint, in order.
    pub(crate) mi_requests: Vec<RecordedRequest>,
    /// Secrets and Arc challenge keys of the managed identity endpoints.
    pub(crate) mi_secrets: MiSecrets,
}

/// A managed identity token in the platform's cache: its text and Unix issue time, its lifetime
/// in seconds, and when it was signed on tokio's clock (which a test may pause and advance).
#[derive(Clone, Debug)]
pub(crate) struct CachedMiToken {
    pub(crate) token: String,
    pub(crate) issued_at: u64,
    pub(crate) lifetime: u64,
    pub(crate) signed: tokio::time::Instant,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            directory: Directory::default(),
            issuance: Issuance::new(),
            refresh_in: None,
            numbers_as_strings: false,
            latency: Duration::ZERO,
            faults: VecDeque::new(),
            token_requests: 0,
            api_requests: 0,
            last_token_request: None,
            revoked_below: 0,
            cae_revoked_below: 0,
            cae_nbf: 0,
            last_token_request_claims: None,
            trusted_issuers: HashMap::new(),
            used_jtis: HashMap::new(),
            token_log: Vec::new(),
            admission: Admission::new(),
            identities: Vec::new(),
            mi_faults: VecDeque::new(),
            mi_outage: None,
            mi_cache_renew_before: None,
            mi_cache: HashMap::new(),
            mi_requests: Vec::new(),
            mi_secrets: MiSecrets::new(),
        }
    }

    /// Adds a tenant whose own managed identity tokens (issuer
    /// `{authority}/{tenant}/v2.0`) are trusted for federated credentials.
    pub(crate) fn add_tenant(&mut self, tenant_id: &str, authority: &str) {
        self.directory.add_tenant(tenant_id);
        self.trusted_issuers.insert(
            v2_issuer(authority, tenant_id),
            serde_json::json!({ "keys": [emulator_key().jwk()] }),
        );
    }
}
