//! [`TokenProvider`]: the handle on a shared token cache, and the one place its state changes.
//!
//! What happens when is decided in [`state`], as pure transitions: a cached token is served by a
//! lock-free read (of this thread's copy, see [`local`]; with no clock read while the token is
//! known fresh, see [`watch`]) until it is due for a refresh ahead (one fetch, in a spawned task,
//! while requests go on with the held token) or stops being usable (every caller joins the one
//! fetch in flight, or starts it); a failed fetch sets a backoff (at least `Retry-After`) during
//! which callers with no usable token get its error at once; a fetch's token is cached only if
//! no later-started fetch's token is; an API's refusal forces a new token at most once per 30 s.
//! [`fetch`] runs one fetch (spawned, so that dropping the caller that started it cancels
//! nothing; retried with backoff; its result, error included, goes to every waiter).
//! [`telemetry`] records what happens: counters, OpenTelemetry instruments, logs.
//!
//! # The cached path
//!
//! [`TokenProvider::lease`] serves a cached token with no lock, no shared write, no allocation
//! and, while the token is known fresh, no precise clock read (`benches/hot_path` measures it).
//! Each mechanism says in its module what it buys, measured, and why it is sound: each thread's
//! own copy of the tokens it serves repeatedly, in a bounded table found by the provider's slot,
//! and the lease each provider publishes for the threads that keep no copy of it ([`local`];
//! the free slots are kept lowest first, so that the providers alive spread over a table's
//! entries); the fresh bit and its timer, and the coarse wall and monotonic clocks, with the
//! four freshness checks and the clock each reads ([`watch`]). A request naming a tenant is
//! served from the tenant's provider in place, without a count taken on it ([`tenants`]).
//!
//! # One `perform`, and why a changed token is always published
//!
//! Requests read the token that `perform` *publishes* (`Inner::current`, and the generation
//! word that tells each thread its copy is stale), never the state itself. A transition that
//! changed the state's token without a publish would leave every thread serving a token the
//! state dropped (refused by an API, expired in a suspend) or never seeing the new one. That
//! cannot be written:
//!
//! - the state sits in [`Engine`](engine::Engine), whose field is private to the `engine`
//!   module below: nothing else in the crate, this file included, can lock it or name a
//!   `&mut State`;
//! - that module's only way in is `Inner::perform` (and `try_perform`, its non-blocking twin
//!   for a refresh ahead), which applies one [`Input`](state::Input) with
//!   [`State::apply`](state::State::apply), the state's only mutator, carries out the
//!   [`Command`](state::Command) it returns (starting the fetch it asks for), publishes when the
//!   [`Transition`](state::Transition) says the token changed, and only then unlocks;
//! - the flag is not set by hand: `apply` compares the current token's fetch id before and
//!   after, so a transition cannot change the token without it being raised.
//!
//! The test `every_change_of_the_current_token_is_published` (in `tests.rs`) fails when the
//! publish is skipped.
//!
//! # Seams
//!
//! A cache shared across replicas belongs in `fetch::answer`, where a fetch's token comes from
//! (read before asking the credential, write after it answers): off the cached path, and its
//! token then goes through `perform` like any other. When a token is refreshed is
//! `state::refresh_point`, one function of the policy. A provider per tenant needs nothing here:
//! each provider has its own state, engine and slot.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use crate::credential::tenants::check_requested;
use crate::credential::{Credential, TokenRequest};
use crate::error::TokenError;
use crate::token::AccessToken;

mod builder;
mod claims;
mod coarse;
mod fetch;
mod last_lease;
mod local;
mod metrics;
mod roles;
mod state;
mod telemetry;
mod tenants;
/// Taken by the tests that make many providers and by those that count on slots being
/// reused (see `local`): one making hundreds meanwhile would take the slots freed under the
/// other.
#[cfg(test)]
fn many_providers() -> std::sync::MutexGuard<'static, ()> {
    static MANY_PROVIDERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MANY_PROVIDERS.lock().unwrap_or_else(|p| p.into_inner())
}
#[cfg(test)]
mod tests;
mod throttle;
mod ticket;
mod watch;

pub use builder::TokenProviderBuilder;
pub(crate) use claims::{Reaction, Renewal};
pub(crate) use last_lease::LastLease;
pub(crate) use local::Lease;
pub use telemetry::ProviderStats;
pub(crate) use ticket::Ticket;

use engine::Engine;
use state::{Cached, Command, Freshness, Input, Note, ProviderOptions, Refused};
use telemetry::Telemetry;
use watch::{Generation, RefreshTimer};

/// Hands out tokens for one scope, from one credential.
///
/// Clone it freely: clones share one cache, so one token request serves them all. Needs a tokio
/// runtime with its timers enabled (as `#[tokio::main]` and `Builder::enable_all` give): fetches
/// run in spawned tasks, and a timer marks each token's refresh point. Outside a runtime,
/// [`token`](Self::token) returns a `Configuration` error.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_entra::TokenError> {
/// use tower_entra::{ClientSecretCredential, TokenProvider};
///
/// let credential = ClientSecretCredential::new("contoso.onmicrosoft.com", "client-id", "secret")?;
/// let provider = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
/// let token = provider.token().await?;
/// println!("token expires at {:?}", token.expires_on());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

/// What the clones of one provider share.
struct Inner {
    credential: Arc<dyn Credential>,
    scope: String,
    /// The tenant tokens are asked in, when not the credential's own (see [`tenants`]).
    tenant: Option<String>,
    /// The providers of the other tenants.
    tenants: TenantsLink,
    /// The `claims` JSON of the client capabilities (`cp1`), sent with every ordinary fetch.
    capabilities: Option<String>,
    /// The state's cached token, published for lock-free reads; stored only by `perform`.
    current: ArcSwapOption<Cached>,
    /// Bumped after each publish of `current`: a thread serves its own copy of the token (see
    /// [`local`]) while this has not moved; also says whether the token is before its refresh
    /// point (see [`watch`]).
    generation: Generation,
    /// `current` as a lease, for threads that keep no copy of it (see [`local`]).
    published: local::Published,
    /// Clears the fresh bit of `generation` at the published token's refresh point.
    refresh_timer: RefreshTimer,
    /// Where each thread keeps its copy of the token (see [`local`]).
    slot: local::Slot,
    /// The state, reachable only through `perform`.
    engine: Engine,
    options: ProviderOptions,
    /// Counters, instruments and logs, recorded off the cached path.
    telemetry: Telemetry,
    /// The streak of 429s from the token endpoint, which spreads retries (see [`throttle`]).
    throttle: throttle::Throttle,
    /// The entry in the cache shared with other replicas, when one was given.
    #[cfg(feature = "shared-cache")]
    shared: Option<crate::shared_cache::SharedEntry>,
    /// The token an API refused last: a value read from the shared cache must be newer.
    #[cfg(feature = "shared-cache")]
    refused: ArcSwapOption<AccessToken>,
}

/// Where a provider finds the providers of other tenants: a home provider holds them, the
/// provider of one of them points back weakly (no cycle).
enum TenantsLink {
    Home(Arc<tenants::TenantProviders>),
    Member(std::sync::Weak<tenants::TenantProviders>),
}

/// What a request gets from a provider ([`TokenProvider::lease_in`]).
pub(crate) enum Leased {
    /// This thread's lease on the cached token, and its ticket.
    Cached(Lease, Ticket),
    /// No usable token: the provider to wait on.
    Cold(TokenProvider),
}

type SharedFetch = Shared<BoxFuture<'static, Result<AccessToken, TokenError>>>;

impl TokenProvider {
    /// A provider for `scope` (`<application ID URI>/.default`) with default settings.
    ///
    /// Refuses, with an error that explains the rule, a scope that does not end in `/.default` or
    /// that names more than one resource.
    pub fn new(credential: impl Credential, scope: impl Into<String>) -> Result<Self, TokenError> {
        Self::builder(credential, scope).build()
    }

    /// A builder, to tune margins and retries.
    ///
    /// A credential shared with other providers (one app, several APIs) is passed as an
    /// `Arc`, which is a credential too:
    ///
    /// ```
    /// # fn demo() -> Result<(), tower_entra::TokenError> {
    /// use std::sync::Arc;
    /// use tower_entra::{ClientSecretCredential, TokenProvider};
    ///
    /// let app = Arc::new(ClientSecretCredential::new("contoso.onmicrosoft.com", "id", "secret")?);
    /// let graph = TokenProvider::builder(app.clone(), "https://graph.microsoft.com/.default").build()?;
    /// let arm = TokenProvider::builder(app, "https://management.azure.com/.default").build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(credential: impl Credential, scope: impl Into<String>) -> TokenProviderBuilder {
        TokenProviderBuilder::new(Arc::new(credential), scope.into())
    }

    /// The scope tokens are for.
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// The tenant this provider asks tokens in, when not its credential's own (a provider from
    /// [`for_tenant`](Self::for_tenant)), in ASCII lower case.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// The provider of the same scope and settings for the tenant `tenant` (a GUID or a domain,
    /// compared without regard to ASCII case): its own single flight, cache, backoff and stats,
    /// made on first use and kept while used (see
    /// [`max_tenants`](TokenProviderBuilder::max_tenants) and
    /// [`max_tenant_idle`](TokenProviderBuilder::max_tenant_idle)); the handle returned keeps it
    /// alive. The credential's own tenant gives this provider.
    ///
    /// Fails with a [`TenantNotAllowed`](crate::TokenErrorKind::TenantNotAllowed) error, before
    /// anything is sent, when `tenant` is malformed or the credential does not serve it
    /// ([`Credential::check_tenant`]: a confidential client's `additionally_allowed_tenants`,
    /// managed identity and custom credentials by default only their own). A tenant dropped
    /// while its fetches failed gives that error until its backoff is over.
    ///
    /// A domain and its GUID are two tenants here; when asked by GUID, the token's `tid` must
    /// name it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::{ClientSecretCredential, TokenProvider};
    ///
    /// let credential = ClientSecretCredential::builder("11111111-1111-1111-1111-111111111111", "client-id", "secret")
    ///     .additionally_allowed_tenants(["*"])
    ///     .build()?;
    /// let graph = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
    /// let contoso = graph.for_tenant("contoso.onmicrosoft.com")?;
    /// let token = contoso.token().await?;
    /// # Ok(()) }
    /// ```
    pub fn for_tenant(&self, tenant: &str) -> Result<TokenProvider, TokenError> {
        self.in_tenant(&crate::tenant::Tenant::new(tenant))
    }

    /// How many other tenants' providers this provider keeps now (see
    /// [`for_tenant`](Self::for_tenant)); for a tenant's provider, those of its home provider.
    pub fn tenants_held(&self) -> usize {
        match &self.inner.tenants {
            TenantsLink::Home(registry) => registry.len(),
            TenantsLink::Member(registry) => registry.upgrade().map_or(0, |r| r.len()),
        }
    }

    /// [`for_tenant`](Self::for_tenant) for a tenant already in lower case: no allocation when
    /// the tenant has its provider.
    pub(crate) fn in_tenant(
        &self,
        tenant: &crate::tenant::Tenant,
    ) -> Result<TokenProvider, TokenError> {
        self.serve_in(tenant, TokenProvider::clone)
    }

    /// What a request naming `tenant` (or none: this provider's own) gets: this thread's lease
    /// on the cached token of the provider for that tenant, or that provider, to wait on. A
    /// cached request takes no count on the provider (see [`tenants`]). Inlined: a request
    /// without a tenant goes straight to this provider's lease.
    #[inline]
    pub(crate) fn lease_in(
        &self,
        tenant: Option<&crate::tenant::Tenant>,
    ) -> Result<Leased, TokenError> {
        match tenant {
            None => Ok(self.leased()),
            Some(tenant) => self.lease_in_tenant(tenant),
        }
    }

    /// [`lease_in`](Self::lease_in) for one service clone, which remembers the lease (see
    /// [`LastLease`]); the clone serves from it first.
    #[inline(never)]
    pub(crate) fn lease_and_remember(
        &self,
        tenant: Option<&crate::tenant::Tenant>,
        last: &mut LastLease,
    ) -> Result<Leased, TokenError> {
        let leased = self.lease_in(tenant)?;
        if let Leased::Cached(lease, _) = &leased {
            last.served(self, tenant, lease);
        }
        Ok(leased)
    }

    #[inline(never)]
    fn lease_in_tenant(&self, tenant: &crate::tenant::Tenant) -> Result<Leased, TokenError> {
        self.serve_in(tenant, TokenProvider::leased)
    }

    #[inline]
    fn leased(&self) -> Leased {
        match self.lease() {
            Some(lease) => {
                let ticket = Ticket::new(&self.inner, &lease);
                Leased::Cached(lease, ticket)
            }
            None => Leased::Cold(self.clone()),
        }
    }

    /// `serve` run on the provider for `tenant`, borrowed where it is held; made (checked) on
    /// first use. The provider of a tenant takes a count on its home provider's tenants, so
    /// that the home provider can be dropped.
    fn serve_in<T>(
        &self,
        tenant: &crate::tenant::Tenant,
        serve: impl Fn(&TokenProvider) -> T,
    ) -> Result<T, TokenError> {
        let (handle, tenant) = (tenant, tenant.as_str());
        if self.inner.tenant.as_deref() == Some(tenant) {
            return Ok(serve(self));
        }
        let upgraded;
        let registry = match &self.inner.tenants {
            TenantsLink::Home(registry) => registry,
            TenantsLink::Member(registry) => {
                upgraded = registry.upgrade().ok_or_else(|| {
                    TokenError::configuration(
                        "this tenant's provider outlived the provider it came from; call for_tenant on that provider",
                    )
                })?;
                &upgraded
            }
        };
        if let Some(served) = registry.with_cached(handle, &serve) {
            return Ok(served);
        }
        check_requested(tenant)?;
        let home = self.inner.credential.identity().map(|(home, _)| home);
        if self.inner.tenant.is_none() && home.is_some_and(|h| h.eq_ignore_ascii_case(tenant)) {
            return Ok(serve(self));
        }
        self.inner.credential.check_tenant(tenant)?;
        Ok(serve(&registry.add(tenant)?))
    }

    /// A token that is valid now: the cached one, or a fresh one from the single fetch in flight.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.acquire().await
    }

    /// Gets a token now, unless a usable one is already cached, and returns the error when none
    /// can be had: call it at start-up to fail fast on a wrong secret, a missing consent or an
    /// unreachable endpoint, instead of at the first request. Transient failures are retried
    /// first, as for any request that waits for a token.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use tower_entra::{EnvironmentCredential, TokenProvider};
    ///
    /// let provider = TokenProvider::new(EnvironmentCredential::new()?, "https://graph.microsoft.com/.default")?;
    /// if let Err(e) = provider.warm_up().await {
    ///     eprintln!("cannot get a token for Microsoft Graph: {e}");
    ///     std::process::exit(1);
    /// }
    /// // ...serve, with the token cached and refreshed ahead of expiry.
    /// # Ok(()) }
    /// ```
    pub async fn warm_up(&self) -> Result<(), TokenError> {
        self.token().await.map(drop)
    }

    /// This thread's lease on the cached token when it is usable now; starts a refresh ahead
    /// when one is due. Never waits, and while the token is fresh writes nothing that another
    /// core reads (see [`local`]).
    pub(crate) fn lease(&self) -> Option<Lease> {
        let published = self.inner.generation.read();
        let lease = local::lease(&self.inner, published.generation)?;
        // The wall clock first, coarse and cheap: it goes on while the machine is suspended,
        // and it stands in for the refresh timer should that be stuck on an undriven runtime.
        match lease.by_wall_clock() {
            Freshness::Unusable => {
                self.expired_in_suspend(&lease);
                return None;
            }
            // Known fresh, with a timer to say otherwise, and not past the refresh point by the
            // monotonic clock (the timer's runtime may no longer be driven, and the wall clock
            // may have been stepped back): no precise clock needed.
            Freshness::Fresh
                if published.fresh
                    && lease.generation() == published.generation
                    && lease.fresh_by_monotonic_clock() =>
            {
                return Some(lease);
            }
            Freshness::Fresh | Freshness::RefreshDue => {}
        }
        match lease.freshness(Instant::now()) {
            Freshness::Fresh => {}
            Freshness::RefreshDue => self.refresh_ahead(),
            Freshness::Unusable => return None,
        }
        Some(lease)
    }

    /// A future for a usable token that does not borrow `self`.
    pub(crate) fn acquire(&self) -> Acquire {
        match self.lease() {
            Some(lease) => Acquire::Done(Some(Ok(lease.token().clone()))),
            None => self.ask(Ask::Token),
        }
    }

    /// Drops `token` from the cache if it is still the cached one (the API said it is no longer
    /// valid, e.g. a 401 with `error="invalid_token"`), so that the next request fetches a new
    /// token. At most one drop per 30 s: a resource that refuses every token does not turn each
    /// request into a token request.
    pub fn invalidate(&self, token: &AccessToken) {
        self.refuse(token);
    }

    /// Counters and the last error, for health endpoints.
    pub fn stats(&self) -> ProviderStats {
        let expires_on = self
            .inner
            .current
            .load()
            .as_ref()
            .map(|c| c.token.expires_on());
        let shared = self.inner.shared_cache_counts().unwrap_or_default();
        self.inner.telemetry.stats(expires_on, shared)
    }

    /// An API refused `used`: drops it if it is still cached (rate-limited by the state).
    fn refuse(&self, used: &AccessToken) -> Refused {
        #[cfg(feature = "shared-cache")]
        if self.inner.shared.is_some() {
            self.inner.refused.store(Some(Arc::new(used.clone())));
        }
        let refused = match self.inner.perform(Input::Refusal(used)).note {
            Note::Refused(refused) => refused,
            _ => Refused::AlreadyReplaced,
        };
        self.inner.telemetry.invalidated(refused);
        refused
    }

    /// The wall clock says `lease`'s token is no longer usable though tokio's clock says it is:
    /// the machine was suspended. Drops the token so that this request fetches a new one
    /// rather than wait for an API to refuse it.
    fn expired_in_suspend(&self, lease: &Lease) {
        let done = self
            .inner
            .perform(Input::ExpiredInSuspend(lease.cached_id()));
        if done.note == Note::DroppedAfterSuspend {
            self.inner.telemetry.expired_in_suspend();
        }
    }

    /// Starts the refresh ahead that is due, unless another request is deciding right now (it
    /// will do); nobody here waits for it, its result lands in the cache.
    fn refresh_ahead(&self) {
        let _ = self.inner.try_perform(Input::Request);
    }

    /// What the state gives `ask` now, with the fetch it asks for started.
    fn ask(&self, ask: Ask) -> Acquire {
        let command = self.inner.perform(ask.input()).command;
        self.answer(command, ask).unwrap_or_else(|| {
            Acquire::Done(Some(Err(TokenError::configuration(
                "the provider's state gave a request for a token nothing to wait on",
            ))))
        })
    }

    /// What a caller that asked for `ask` waits on, given the command `perform` carried out;
    /// `None` for nothing.
    fn answer(&self, command: Command<SharedFetch, SharedFetch>, ask: Ask) -> Option<Acquire> {
        Some(match command {
            Command::Serve(token) | Command::ServeAndStart(token, _) => {
                Acquire::Done(Some(Ok(token)))
            }
            Command::Start(fetch) => Acquire::Waiting(fetch),
            Command::Join(fetch, deadline) => {
                Acquire::Waiting(self.join_until(fetch, deadline, ask))
            }
            Command::Fail(error) => Acquire::Done(Some(Err(error))),
            Command::Nothing => return None,
        })
    }

    /// `fetch`, waited on from this caller's runtime until `deadline`. Past it the fetch counts
    /// as dead (its task may sit on a current-thread runtime that nobody drives any more, where
    /// it would never end), and `ask` is asked anew: the state then starts a new fetch, on this
    /// runtime (or gives another fetch in flight, waited on in turn, in a loop rather than
    /// nested futures). The timer is made when the caller first polls, so it runs on the
    /// caller's runtime.
    fn join_until(&self, fetch: SharedFetch, deadline: Instant, ask: Ask) -> SharedFetch {
        let provider = self.clone();
        async move {
            let (mut fetch, mut deadline) = (fetch, deadline);
            loop {
                if let Ok(result) = tokio::time::timeout_at(deadline, fetch).await {
                    return result;
                }
                match provider.inner.perform(ask.input()).command {
                    Command::Join(other, until) => {
                        // The state joins only a fetch before its deadline; should this
                        // caller's clock disagree (a future moved between runtimes), pause
                        // between attempts rather than spin.
                        if until <= Instant::now() {
                            tokio::time::sleep(REJOIN_PAUSE).await;
                        }
                        (fetch, deadline) = (other, until);
                    }
                    other => {
                        return match provider.answer(other, ask) {
                            Some(acquire) => acquire.await,
                            None => Err(TokenError::configuration(
                                "the provider's state gave a waiting request nothing to wait on",
                            )),
                        };
                    }
                }
            }
        }
        .boxed()
        .shared()
    }
}

/// How long a caller waits before asking again when the state hands it a fetch already past its
/// deadline by the caller's clock.
const REJOIN_PAUSE: Duration = Duration::from_millis(10);

/// What a caller asks the state for, again when a fetch it joined passes its deadline.
#[derive(Debug, Clone)]
enum Ask {
    /// A usable token.
    Token,
    /// A token carrying these (merged) claims.
    Claims(String),
}

impl Ask {
    fn input(&self) -> Input<'static, SharedFetch> {
        match self {
            Ask::Token => Input::Request,
            Ask::Claims(merged) => Input::Claims(merged.clone()),
        }
    }
}

fn no_runtime() -> TokenError {
    TokenError::configuration(
        "TokenProvider fetches tokens on the tokio runtime, and none is running here; use it from within a tokio runtime (e.g. #[tokio::main])",
    )
}

/// The state behind its lock, and the one code that changes it.
mod engine {
    use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

    use tokio::runtime::Handle;
    use tokio::time::Instant;

    use super::state::{Cached, Command, Input, Note, State};
    use super::{Inner, SharedFetch, fetch, no_runtime, watch};

    /// The provider's state. Its field is private to this module: only `Inner::perform` and
    /// `Inner::try_perform` reach the state, and both publish what changed.
    pub(super) struct Engine(Mutex<State<SharedFetch>>);

    impl Engine {
        pub(super) fn new(state: State<SharedFetch>) -> Self {
            Engine(Mutex::new(state))
        }
    }

    /// What `perform` did: the command, its fetch started, and what the transition decided.
    pub(super) struct Performed {
        pub(super) command: Command<SharedFetch, SharedFetch>,
        pub(super) note: Note,
    }

    impl Inner {
        /// Applies `input` to the state, starts the fetch its command asks for, publishes the
        /// token if it changed, then unlocks; spawns the fetch after. Waits for the lock (never
        /// held across an await).
        pub(super) fn perform(self: &Arc<Self>, input: Input<'_, SharedFetch>) -> Performed {
            // The state is consistent at every unlock, so a panic elsewhere does not poison it.
            let state = self.engine.0.lock().unwrap_or_else(|p| p.into_inner());
            self.perform_locked(state, input)
        }

        /// [`perform`](Self::perform), unless another caller holds the lock.
        pub(super) fn try_perform(
            self: &Arc<Self>,
            input: Input<'_, SharedFetch>,
        ) -> Option<Performed> {
            let state = match self.engine.0.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            Some(self.perform_locked(state, input))
        }

        fn perform_locked(
            self: &Arc<Self>,
            mut state: MutexGuard<'_, State<SharedFetch>>,
            input: Input<'_, SharedFetch>,
        ) -> Performed {
            let now = Instant::now();
            let transition = state.apply(&self.options, now, input);
            let mut changed = transition.changed();
            let runtime = Handle::try_current().ok();
            let command = match (transition.command, runtime.is_some()) {
                (command, true) => command,
                // Nothing to spawn a fetch on, nor to time a wait with.
                (Command::ServeAndStart(token, _), false) => Command::Serve(token),
                (Command::Start(_) | Command::Join(..), false) => Command::Fail(no_runtime()),
                (command, false) => command,
            };
            let mut launch = None;
            let command = command.map_start(|start| {
                let (fetch, task) = fetch::prepare(self.clone(), &start);
                let started =
                    state.apply(&self.options, now, Input::Started(&start, fetch.clone()));
                changed |= started.changed();
                launch = Some((start, task));
                fetch
            });
            if changed {
                publish(self, state.current());
            }
            drop(state);
            if let (Some((start, task)), Some(runtime)) = (launch, runtime) {
                self.telemetry.started(&start);
                // A task dropped at once by a runtime shutting down frees its slot, which
                // performs again: the lock is released by now.
                runtime.spawn(task);
            }
            Performed {
                command,
                note: transition.note,
            }
        }
    }

    /// Publishes the state's token to the lock-free readers. Called under the state's lock.
    fn publish(inner: &Arc<Inner>, current: Option<&Arc<Cached>>) {
        let generation = inner.generation.next();
        let refresh_at = current.map(|c| c.refresh_at);
        inner
            .published
            .store(inner, current.map(|c| &**c), generation);
        inner.current.store(current.cloned());
        watch::publish(inner, generation, refresh_at);
    }
}

impl Inner {
    /// The shared cache's counts; `None` without one.
    fn shared_cache_counts(&self) -> Option<metrics::SharedCounts> {
        #[cfg(feature = "shared-cache")]
        if let Some(shared) = &self.shared {
            let counts = shared.counts();
            return Some(metrics::SharedCounts {
                hits: counts.hits.load(std::sync::atomic::Ordering::Relaxed),
                misses: counts.misses.load(std::sync::atomic::Ordering::Relaxed),
                lease_waits: counts
                    .lease_waits
                    .load(std::sync::atomic::Ordering::Relaxed),
                errors: counts.errors.load(std::sync::atomic::Ordering::Relaxed),
                skipping: shared.is_skipping(),
            });
        }
        None
    }

    /// Whether the cached token is usable at `now`.
    fn usable(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|c| c.freshness(now) != Freshness::Unusable)
    }

    /// The token request every ordinary fetch sends: the scope, and the client capabilities
    /// when configured.
    fn token_request(&self) -> TokenRequest<'_> {
        let request = self.request();
        match &self.capabilities {
            Some(claims) => request.with_claims(claims),
            None => request,
        }
    }

    /// The token request of a claims challenge: the scope and `claims` (merged).
    fn claims_request<'a>(&'a self, claims: &'a str) -> TokenRequest<'a> {
        self.request().with_claims(claims)
    }

    /// A request for the scope, in this provider's tenant.
    fn request(&self) -> TokenRequest<'_> {
        let request = TokenRequest::new(&self.scope);
        match &self.tenant {
            Some(tenant) => request.for_tenant(tenant),
            None => request,
        }
    }
}

/// The future of [`TokenProvider::acquire`]: over at once when cached (or failed fast), else
/// the fetch to wait on.
pub(crate) enum Acquire {
    /// Over: the result, taken by the first poll.
    Done(Option<Result<AccessToken, TokenError>>),
    Waiting(SharedFetch),
}

impl Future for Acquire {
    type Output = Result<AccessToken, TokenError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Acquire::Done(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(TokenError::configuration(
                    "token future polled after completion",
                ))
            })),
            Acquire::Waiting(fetch) => fetch.poll_unpin(cx),
        }
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("credential", &self.inner.credential)
            .field("scope", &self.inner.scope)
            .field(
                "cached",
                &self.inner.current.load().as_ref().map(|c| &c.token),
            )
            .finish()
    }
}
