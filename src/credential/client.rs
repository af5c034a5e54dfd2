//! The part every confidential-client credential shares: the endpoint, the form, the transport.

use std::time::Duration;

use url::Url;

use crate::authority::{AuthorityHost, check_client_id, parse_authority_host, token_url};
use crate::credential::TokenRequest;
use crate::endpoint::{GRANT_TYPE, JWT_BEARER};
use crate::error::TokenError;
use crate::token::AccessToken;
use crate::transport::{DEFAULT_TIMEOUT, Transport};

/// How the client authenticates one token request.
pub(crate) enum ClientAuth<'a> {
    /// `client_secret`.
    Secret(&'a str),
    /// `client_assertion` (a signed JWT or a federated token) with the jwt-bearer type.
    Assertion(&'a str),
}

/// The builder methods every confidential-client credential shares, over its `options` field.
macro_rules! confidential_client_builder_methods {
    () => {
        /// The authority host: one of [`AuthorityHost`](crate::AuthorityHost)'s clouds or your
        /// own (`https`, or `http` only for a loopback emulator). Default: the public cloud.
        pub fn authority_host(mut self, host: impl Into<String>) -> Self {
            self.options.authority_host = host.into();
            self
        }

        /// The bound on one token request, connecting included. Default 30 s.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.timeout = timeout;
            self
        }

        /// The HTTP client for token requests, as a `reqwest::ClientBuilder`: configure
        /// proxies, TLS roots, etc. on the builder.
        ///
        /// The credential always sets `.redirect(reqwest::redirect::Policy::none())` on it (a
        /// token endpoint never redirects, and following a 307/308 would re-send the client
        /// secret or assertion to the redirect target; a redirect is an
        /// [`InvalidResponse`](crate::TokenErrorKind::InvalidResponse) error) and a connect
        /// timeout (at most the request [`timeout`](Self::timeout), 10 s at most) before
        /// building it. If it cannot be built, `build()` returns a
        /// [`Configuration`](crate::TokenErrorKind::Configuration) error.
        pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
            self.options.http_client = Some(builder);
            self
        }
    };
}
pub(crate) use confidential_client_builder_methods;

/// Builder options shared by the credential builders.
pub(crate) struct ConfidentialClientOptions {
    pub(crate) authority_host: String,
    pub(crate) timeout: Duration,
    /// Built by [`Transport::new`], which always forbids redirects.
    pub(crate) http_client: Option<reqwest::ClientBuilder>,
}

impl std::fmt::Debug for ConfidentialClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the ClientBuilder itself: its default headers and proxy URLs may hold credentials.
        f.debug_struct("ConfidentialClientOptions")
            .field("authority_host", &self.authority_host)
            .field("timeout", &self.timeout)
            .field(
                "http_client",
                &if self.http_client.is_some() {
                    "caller's builder"
                } else {
                    "default"
                },
            )
            .finish()
    }
}

impl Default for ConfidentialClientOptions {
    fn default() -> Self {
        ConfidentialClientOptions {
            authority_host: AuthorityHost::AZURE_PUBLIC_CLOUD.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            http_client: None,
        }
    }
}

/// A tenant + client id bound to its token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ConfidentialClient {
    tenant_id: String,
    client_id: String,
    token_url: Url,
    transport: Transport,
}

impl ConfidentialClient {
    pub(crate) fn new(
        tenant_id: &str,
        client_id: &str,
        options: ConfidentialClientOptions,
    ) -> Result<Self, TokenError> {
        check_client_id(client_id)?;
        if options.timeout.is_zero() {
            return Err(TokenError::configuration(
                "the token request timeout is zero; use a positive duration (the default is 30 s)",
            ));
        }
        let host = parse_authority_host(&options.authority_host)?;
        Ok(ConfidentialClient {
            token_url: token_url(&host, tenant_id)?,
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            transport: Transport::new(options.http_client, options.timeout)?,
        })
    }

    /// The tenant and client ids, for [`Credential::identity`](crate::Credential::identity).
    pub(crate) fn identity(&self) -> Option<(&str, &str)> {
        Some((&self.tenant_id, &self.client_id))
    }

    /// The bound on one token request, also applied to work a credential does before it (an
    /// assertion callback).
    pub(crate) fn timeout(&self) -> Duration {
        self.transport.timeout()
    }

    /// A `Debug` builder for the credential `name` with the ids and endpoint filled in; the
    /// credential adds its own (non-secret) fields.
    pub(crate) fn debug_struct<'a, 'b>(
        &self,
        f: &'a mut std::fmt::Formatter<'b>,
        name: &str,
    ) -> std::fmt::DebugStruct<'a, 'b> {
        let mut d = f.debug_struct(name);
        d.field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url.as_str());
        d
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token endpoint: also the `aud` of a client assertion.
    pub(crate) fn token_url(&self) -> &Url {
        &self.token_url
    }

    pub(crate) async fn request_token(
        &self,
        request: TokenRequest<'_>,
        auth: ClientAuth<'_>,
    ) -> Result<AccessToken, TokenError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("client_id", &self.client_id),
            ("scope", request.scope),
        ];
        match auth {
            ClientAuth::Secret(secret) => form.push(("client_secret", secret)),
            ClientAuth::Assertion(assertion) => {
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion));
            }
        }
        if let Some(claims) = request.claims {
            form.push(("claims", claims));
        }
        self.transport.request_token(&self.token_url, &form).await
    }
}
