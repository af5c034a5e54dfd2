//! [`ClientAuthentication`]: how a confidential client proves itself on one token request.
//!
//! Each source (a secret, a certificate, an assertion callback, a federated token file) is one
//! small impl of the sealed [`Authenticate`](private::Authenticate) trait; the credential, its
//! builder and the token request around it are shared by all of them
//! ([`ConfidentialClientCredential`](crate::ConfidentialClientCredential)).

use std::fmt;
use std::future::ready;
use std::time::Duration;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::client::{ClientProof, ConfidentialClient};
use crate::error::TokenError;
use crate::transport::TransportChoice;

/// A source of client authentication for a
/// [`ConfidentialClientCredential`](crate::ConfidentialClientCredential): a client secret
/// ([`ClientSecret`](crate::ClientSecret)), assertions signed with a certificate
/// ([`CertificateAssertion`](crate::CertificateAssertion)), assertions from your callback
/// ([`AssertionCallback`](crate::AssertionCallback)) or from a federated token file
/// ([`FederatedTokenFile`](crate::FederatedTokenFile)).
///
/// Sealed: an assertion from anywhere else goes through
/// [`ClientAssertionCredential`](crate::ClientAssertionCredential)'s callback.
pub trait ClientAuthentication: fmt::Debug + Send + Sync + 'static + private::Authenticate {}

pub(crate) mod private {
    use super::*;

    /// The work of a [`ClientAuthentication`] source; out of users' reach so that it can change.
    pub trait Authenticate {
        /// Checks the source's settings when the credential is built.
        fn check(&self) -> Result<(), TokenError> {
            Ok(())
        }

        /// The proof for one token request of `client` (whose client id and token endpoint a
        /// signed assertion names). Called once per token request: nothing here is cached by
        /// the credential.
        fn authenticate<'a>(
            &'a self,
            client: &'a ConfidentialClient,
        ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>>;

        /// The longest [`authenticate`](Self::authenticate) takes when the token request's own
        /// bound is `request_timeout`: an assertion callback is bounded like the request, a
        /// managed identity step by that credential's own timeout; a secret or a signature takes
        /// no time worth counting (the default).
        fn time_bound(&self, request_timeout: Duration) -> Duration {
            let _ = request_timeout;
            Duration::ZERO
        }

        /// Whether [`reload_after_refusal`](Self::reload_after_refusal) may ask for a second
        /// token request (a source read from a file); the credential's timeout counts it.
        fn may_reload(&self) -> bool {
            false
        }

        /// Entra refused the proof sent as invalid, expired or unknown (a
        /// [credential-rotation answer](crate::aadsts::is_credential_rotation_answer)): a source
        /// read from a file reads it again now and says whether it holds something else, worth
        /// one more token request. Sources without a file say `false`.
        fn reload_after_refusal(&self) -> BoxFuture<'_, bool> {
            Box::pin(ready(false))
        }

        /// The secret a shared token cache derives its keys from, as loaded now: the client
        /// secret, the certificate's private key. Sources whose proof is not a secret of the
        /// app's own (an assertion callback, a federated token file) have none.
        #[cfg(feature = "shared-cache")]
        fn cache_secret(&self) -> Option<Zeroizing<Vec<u8>>> {
            None
        }

        /// The transport token requests go through, given the builder's: the builder's, unless
        /// the source sends its requests elsewhere (AKS identity bindings' token proxy).
        // Sealed: nothing outside the crate names or implements it.
        #[allow(private_interfaces)]
        fn transport(&self, given: TransportChoice) -> Result<TransportChoice, TokenError> {
            Ok(given)
        }
    }
}

/// `text` without surrounding white space, trimmed in place so that no unzeroed copy is left.
pub(crate) fn trim_in_place(mut text: Zeroizing<String>) -> Zeroizing<String> {
    let end = text.trim_end().len();
    text.truncate(end);
    let start = text.len() - text.trim_start().len();
    text.drain(..start);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_in_place() {
        let trimmed = trim_in_place(Zeroizing::new(" \n eyJ.a.b \r\n".to_owned()));
        assert_eq!(trimmed.as_str(), "eyJ.a.b");
        assert_eq!(trim_in_place(Zeroizing::new("   ".to_owned())).as_str(), "");
    }
}
