//! The part every confidential-client credential shares: the endpoint, the form, the transport.

use std::borrow::Cow;
use std::time::Duration;

use url::Url;
use zeroize::Zeroizing;

use crate::authority::{check_client_id, parse_authority_host, token_url};
use crate::cloud::Cloud;
use crate::credential::TokenRequest;
use crate::credential::tenants::{AllowedTenants, check_issued_in, explain_refusal};
use crate::endpoint::{GRANT_TYPE, JWT_BEARER};
use crate::error::TokenError;
use crate::token::AccessToken;
use crate::transport::{DEFAULT_TIMEOUT, Transport, TransportChoice};

/// The settings of a confidential client's token requests, as its builder collects them.
#[derive(Debug)]
pub(crate) struct ConfidentialClientOptions {
    pub(crate) authority_host: String,
    pub(crate) timeout: Duration,
    pub(crate) transport: TransportChoice,
    pub(crate) allowed_tenants: AllowedTenants,
}

impl Default for ConfidentialClientOptions {
    fn default() -> Self {
        ConfidentialClientOptions {
            authority_host: Cloud::AZURE_PUBLIC.authority_host().to_owned(),
            timeout: DEFAULT_TIMEOUT,
            transport: TransportChoice::Default,
            allowed_tenants: AllowedTenants::default(),
        }
    }
}

/// What a source puts in the token request's form.
///
/// `pub` only because the sealed
/// [`Authenticate`](crate::credential::authentication::private::Authenticate) trait names it.
pub enum ClientProof<'a> {
    /// `client_secret`: borrowed from a secret given once, or a copy (zeroed on drop) of the one a
    /// secret file holds now.
    Secret(Cow<'a, Zeroizing<String>>),
    /// `client_assertion` (a signed JWT or a federated token) with the jwt-bearer type.
    Assertion(Zeroizing<String>),
}

/// A tenant + client id bound to its token endpoint.
///
/// `pub` only because the sealed [`Authenticate`](crate::credential::authentication::private::Authenticate)
/// trait names it; the module is private.
#[derive(Debug, Clone)]
pub struct ConfidentialClient {
    tenant_id: String,
    client_id: String,
    token_url: Url,
    /// The authority host, for the token endpoints of other tenants.
    host: Url,
    allowed_tenants: AllowedTenants,
    transport: Transport,
}

impl ConfidentialClient {
    pub(crate) fn new(
        tenant_id: &str,
        client_id: &str,
        options: ConfidentialClientOptions,
    ) -> Result<Self, TokenError> {
        check_client_id(client_id)?;
        options.allowed_tenants.check()?;
        let host = parse_authority_host(&options.authority_host)?;
        let token_url = token_url(&host, tenant_id)?;
        Ok(ConfidentialClient {
            transport: Transport::new(options.transport, options.timeout, &token_url)?,
            token_url,
            host,
            allowed_tenants: options.allowed_tenants,
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    /// The tenant and client ids, for [`Credential::identity`](crate::Credential::identity).
    pub(crate) fn identity(&self) -> Option<(&str, &str)> {
        Some((&self.tenant_id, &self.client_id))
    }

    pub(crate) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The bound on one token request, also applied to work a credential does before it (an
    /// assertion callback).
    pub(crate) fn timeout(&self) -> Duration {
        self.transport.timeout()
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token endpoint: also the `aud` of a client assertion.
    pub(crate) fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Whether a request may name `tenant`: its own, or one its allow-list holds.
    pub(crate) fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        self.allowed_tenants
            .resolve(&self.tenant_id, Some(tenant))
            .map(drop)
    }

    /// The client that serves `request`: this one for its own tenant, else a copy bound to the
    /// other tenant's token endpoint (which is also the `aud` of the assertions made for it),
    /// when the allow-list holds that tenant.
    pub(crate) fn for_request(
        &self,
        request: &TokenRequest<'_>,
    ) -> Result<Cow<'_, ConfidentialClient>, TokenError> {
        Ok(
            match self
                .allowed_tenants
                .resolve(&self.tenant_id, request.tenant)?
            {
                None => Cow::Borrowed(self),
                Some(tenant) => Cow::Owned(ConfidentialClient {
                    token_url: token_url(&self.host, tenant)?,
                    tenant_id: tenant.to_owned(),
                    ..self.clone()
                }),
            },
        )
    }

    pub(crate) async fn request_token(
        &self,
        request: TokenRequest<'_>,
        proof: ClientProof<'_>,
    ) -> Result<AccessToken, TokenError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("client_id", &self.client_id),
            ("scope", request.scope),
        ];
        match &proof {
            ClientProof::Secret(secret) => form.push(("client_secret", secret)),
            ClientProof::Assertion(assertion) => {
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion));
            }
        }
        if let Some(claims) = request.claims {
            form.push(("claims", claims));
        }
        let answer = self.transport.request_token(&self.token_url, &form).await;
        if request.tenant.is_none() {
            return answer;
        }
        let token =
            answer.map_err(|e| explain_refusal(e, &self.tenant_id, &self.host, &self.client_id))?;
        check_issued_in(&self.tenant_id, &token)?;
        Ok(token)
    }
}
