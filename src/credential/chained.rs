//! [`ChainedCredential`]: credentials tried in order, moving on only from one that cannot work
//! on this host.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// No credential has answered yet (or the one that did stopped working).
const NONE: usize = usize::MAX;

/// Tries credentials in order and answers with the first token.
///
/// Only an [`Unavailable`](TokenErrorKind::Unavailable) error (the credential cannot work on
/// this host: no endpoint, no variables, tool not installed) moves on to the next credential.
/// Any other error stops the chain and is its answer: a host whose managed identity is
/// misconfigured or refused fails, rather than quietly running as the next identity in line.
///
/// The credential that answered is remembered and asked first from then on, until it answers
/// `Unavailable` or [`Configuration`](TokenErrorKind::Configuration); then the chain is walked
/// again from the start. When every credential is unavailable, the error is `Unavailable` and
/// lists what each one said.
///
/// ```
/// use std::sync::Arc;
/// use tower_entra::{
///     AzureCliCredential, ChainedCredential, Credential, ManagedIdentityCredential, TokenProvider,
/// };
///
/// let chain = ChainedCredential::new([
///     Arc::new(ManagedIdentityCredential::new()?) as Arc<dyn Credential>,
///     Arc::new(AzureCliCredential::new()),
/// ]);
/// let provider = TokenProvider::new(chain, "https://management.azure.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub struct ChainedCredential {
    links: Vec<Link>,
    /// The index of the credential that answered last, or [`NONE`].
    answered: AtomicUsize,
}

struct Link {
    /// For errors and logs: the credential's type name.
    name: String,
    credential: Arc<dyn Credential>,
}

impl ChainedCredential {
    /// A chain of `credentials`, tried in the order given. An empty chain answers every request
    /// with an `Unavailable` error.
    pub fn new(credentials: impl IntoIterator<Item = Arc<dyn Credential>>) -> Self {
        let links = credentials
            .into_iter()
            .map(|credential| Link {
                name: type_name(&*credential),
                credential,
            })
            .collect();
        ChainedCredential {
            links,
            answered: AtomicUsize::new(NONE),
        }
    }

    /// A chain whose credentials are named here (for errors and logs).
    pub(crate) fn named(
        credentials: impl IntoIterator<Item = (&'static str, Arc<dyn Credential>)>,
    ) -> Self {
        ChainedCredential {
            links: credentials
                .into_iter()
                .map(|(name, credential)| Link {
                    name: name.to_owned(),
                    credential,
                })
                .collect(),
            answered: AtomicUsize::new(NONE),
        }
    }

    /// The name of the credential that answered the last request, if one did.
    pub fn answered_by(&self) -> Option<&str> {
        self.links
            .get(self.answered.load(Ordering::Relaxed))
            .map(|link| link.name.as_str())
    }

    /// The position of the credential that answered the last request, if one did.
    pub(crate) fn answered(&self) -> Option<usize> {
        let i = self.answered.load(Ordering::Relaxed);
        (i < self.links.len()).then_some(i)
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let mut said = Vec::new();
        let remembered = self.answered.load(Ordering::Relaxed);
        if let Some(link) = self.links.get(remembered) {
            match link.credential.request_token(request).await {
                Ok(token) => return Ok(token),
                Err(e) if forgets(e.kind()) => {
                    // It stopped working here; walk the chain again.
                    let _ = self.answered.compare_exchange(
                        remembered,
                        NONE,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if e.kind() != TokenErrorKind::Unavailable {
                        return Err(e.in_context(&link.name));
                    }
                    said.push((remembered, e));
                }
                Err(e) => return Err(e.in_context(&link.name)),
            }
        }
        for (i, link) in self.links.iter().enumerate() {
            if i == remembered {
                continue;
            }
            match link.credential.request_token(request).await {
                Ok(token) => {
                    self.answered.store(i, Ordering::Relaxed);
                    return Ok(token);
                }
                Err(e) if e.kind() == TokenErrorKind::Unavailable => said.push((i, e)),
                Err(e) => return Err(e.in_context(&link.name)),
            }
        }
        said.sort_by_key(|(i, _)| *i);
        Err(self.none_available(&said))
    }

    /// The error when every credential was unavailable: what each one said.
    fn none_available(&self, said: &[(usize, TokenError)]) -> TokenError {
        if said.is_empty() {
            return TokenError::unavailable("the credential chain is empty; give it a credential");
        }
        let each = said
            .iter()
            .map(|(i, e)| format!("{}: {e}", self.links[*i].name))
            .collect::<Vec<_>>()
            .join("; ");
        // Each one's error is in the message, its cause included, so none is a `source`.
        TokenError::unavailable(format!("no credential in the chain can work here: {each}"))
    }
}

/// Whether an error of `kind` from the remembered credential means it no longer works here.
fn forgets(kind: TokenErrorKind) -> bool {
    matches!(
        kind,
        TokenErrorKind::Unavailable | TokenErrorKind::Configuration
    )
}

/// The credential's type name as its `Debug` starts (never more: `Debug` shows no secrets, but
/// an error needs only the name).
fn type_name(credential: &dyn Credential) -> String {
    let debug = format!("{credential:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if name.is_empty() {
        "credential".to_owned()
    } else {
        name
    }
}

impl Credential for ChainedCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        self.fetch(request).boxed()
    }

    /// The remembered credential's ids, else the first credential's.
    fn identity(&self) -> Option<(&str, &str)> {
        let link = self
            .links
            .get(self.answered.load(Ordering::Relaxed))
            .or(self.links.first())?;
        link.credential.identity()
    }

    /// The remembered credential's answer, else the first credential's: the one that will be
    /// asked first serves the tenant or the request is refused before anything is sent.
    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        let link = self
            .links
            .get(self.answered.load(Ordering::Relaxed))
            .or(self.links.first());
        match link {
            Some(link) => link.credential.check_tenant(tenant),
            None => Err(super::tenants::only_own_tenant(
                "an empty ChainedCredential",
                tenant,
            )),
        }
    }

    /// The remembered credential's binding, else the first credential's: whose tokens a
    /// shared cache would hold.
    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        self.links
            .get(self.answered.load(Ordering::Relaxed))
            .or(self.links.first())
            .map_or_else(crate::shared_cache::CacheBinding::unknown, |link| {
                link.credential.cache_binding()
            })
    }

    /// Every credential's bound added up: a walk may ask each of them. `None` when one of them
    /// gives none.
    fn timeout(&self) -> Option<Duration> {
        self.links.iter().try_fold(Duration::ZERO, |sum, link| {
            Some(sum.saturating_add(link.credential.timeout()?))
        })
    }
}

impl fmt::Debug for ChainedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainedCredential")
            .field(
                "credentials",
                &self.links.iter().map(|l| &l.credential).collect::<Vec<_>>(),
            )
            .field("answered_by", &self.answered_by())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    /// Answers with `answer`'s token or error, counting calls.
    #[derive(Debug)]
    struct Scripted {
        answer: Mutex<Result<&'static str, TokenErrorKind>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(answer: Result<&'static str, TokenErrorKind>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answer: Mutex::new(answer),
                calls: AtomicU32::new(0),
            })
        }

        fn set(&self, answer: Result<&'static str, TokenErrorKind>) {
            *self.answer.lock().unwrap() = answer;
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::Relaxed)
        }
    }

    impl Credential for Scripted {
        fn request_token<'a>(
            &'a self,
            _request: TokenRequest<'a>,
        ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let answer = *self.answer.lock().unwrap();
            Box::pin(async move {
                match answer {
                    Ok(token) => AccessToken::new(token, Duration::from_secs(3600)),
                    Err(kind) => Err(TokenError::new(kind, format!("scripted {kind:?}"))),
                }
            })
        }
    }

    fn chain(links: &[&Arc<Scripted>]) -> ChainedCredential {
        ChainedCredential::new(links.iter().map(|l| Arc::clone(l) as Arc<dyn Credential>))
    }

    async fn token(c: &ChainedCredential) -> Result<AccessToken, TokenError> {
        c.request_token(TokenRequest::new("api://x/.default")).await
    }

    #[tokio::test]
    async fn an_unavailable_credential_falls_through_and_the_answer_is_remembered() {
        let first = Scripted::new(Err(TokenErrorKind::Unavailable));
        let second = Scripted::new(Ok("second"));
        let c = chain(&[&first, &second]);
        assert_eq!(token(&c).await.unwrap().secret(), "second");
        assert_eq!(c.answered_by(), Some("Scripted"));
        // Remembered: the first is not asked again.
        assert_eq!(token(&c).await.unwrap().secret(), "second");
        assert_eq!((first.calls(), second.calls()), (1, 2));
    }

    #[tokio::test]
    async fn any_other_error_stops_the_chain_and_is_the_answer() {
        for kind in [
            TokenErrorKind::Configuration,
            TokenErrorKind::Authentication,
            TokenErrorKind::Transient,
            TokenErrorKind::Timeout,
        ] {
            let first = Scripted::new(Err(kind));
            let second = Scripted::new(Ok("second"));
            let e = token(&chain(&[&first, &second])).await.unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.message(), format!("Scripted: scripted {kind:?}"));
            assert_eq!(second.calls(), 0, "{kind:?} fell through");
        }
    }

    #[tokio::test]
    async fn the_remembered_one_is_forgotten_when_it_stops_working_here() {
        let first = Scripted::new(Err(TokenErrorKind::Unavailable));
        let second = Scripted::new(Ok("second"));
        let c = chain(&[&first, &second]);
        token(&c).await.unwrap();
        // A passing failure keeps it, and is the answer.
        second.set(Err(TokenErrorKind::Transient));
        assert_eq!(
            token(&c).await.unwrap_err().kind(),
            TokenErrorKind::Transient
        );
        assert_eq!(first.calls(), 1);
        // Unavailable now: the chain is walked again, and the first answers.
        first.set(Ok("first"));
        second.set(Err(TokenErrorKind::Unavailable));
        assert_eq!(token(&c).await.unwrap().secret(), "first");
        assert_eq!(
            second.calls(),
            3,
            "the second was asked once more, not twice"
        );
        // A configuration error from the remembered one is the answer, and it is forgotten.
        first.set(Err(TokenErrorKind::Configuration));
        second.set(Ok("second"));
        assert_eq!(
            token(&c).await.unwrap_err().kind(),
            TokenErrorKind::Configuration
        );
        assert_eq!(c.answered_by(), None);
    }

    #[tokio::test]
    async fn when_none_is_available_the_error_lists_each() {
        let first = Scripted::new(Err(TokenErrorKind::Unavailable));
        let second = Scripted::new(Err(TokenErrorKind::Unavailable));
        let c = ChainedCredential::named([
            ("First", first as Arc<dyn Credential>),
            ("Second", second as Arc<dyn Credential>),
        ]);
        let e = token(&c).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert!(
            e.message()
                .contains("First: scripted Unavailable; Second: scripted Unavailable"),
            "{e}"
        );
        let e = token(&ChainedCredential::new([])).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    }
}
