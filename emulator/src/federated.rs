//! [`FederatedIssuer`]: an external OpenID issuer for workload identity federation tests.

use std::time::Duration;

use serde_json::{Value, json};

use crate::jwt::SigningKey;
use crate::util::{guid, unix_now};

/// An external token issuer (think Kubernetes, GitHub Actions) with its own
/// RSA key, for testing federated credentials.
///
/// Trust it with [`Emulator::add_trusted_issuer_jwks`](crate::Emulator::add_trusted_issuer_jwks),
/// add a matching [`App::with_federated_credential`](crate::App::with_federated_credential),
/// then present [`FederatedIssuer::issue`]'s token as the `client_assertion`.
///
/// ```no_run
/// use std::time::Duration;
/// use entra_emulator::{App, Emulator, FederatedIssuer};
///
/// # async fn demo() {
/// let emulator = Emulator::start().await;
/// let issuer = FederatedIssuer::new("https://oidc.example.com");
/// emulator.add_trusted_issuer_jwks(issuer.issuer(), issuer.jwks());
/// let app = emulator.register_app(
///     &emulator.tenant_id(),
///     App::new("workload").with_federated_credential(
///         issuer.issuer(),
///         "system:serviceaccount:default:worker",
///         "api://AzureADTokenExchange",
///     ),
/// );
/// let assertion = issuer.issue(
///     "system:serviceaccount:default:worker",
///     "api://AzureADTokenExchange",
///     Duration::from_secs(3600),
/// );
/// # let _ = (app, assertion);
/// # }
/// ```
pub struct FederatedIssuer {
    issuer: String,
    key: SigningKey,
}

impl std::fmt::Debug for FederatedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid())
            .finish_non_exhaustive()
    }
}

impl FederatedIssuer {
    /// A new issuer named `issuer_url` (the `iss` of its tokens) with a fresh
    /// 2048-bit RSA key.
    pub fn new(issuer_url: &str) -> FederatedIssuer {
        FederatedIssuer {
            issuer: issuer_url.to_owned(),
            key: SigningKey::generate(),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its public keys as a JWKS (`{"keys":[…]}`).
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk()] })
    }

    /// Issues an RS256 token with `iss`, `sub` = `subject`, `aud` =
    /// `audience`, `iat`, `nbf`, `exp` = now + `lifetime`, and a `jti`.
    pub fn issue(&self, subject: &str, audience: &str, lifetime: Duration) -> String {
        let now = unix_now();
        self.issue_claims(&json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime.as_secs(),
            "jti": guid(),
        }))
    }

    /// Signs arbitrary `claims` (RS256, with this issuer's `kid`).
    pub fn issue_claims(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key.kid()});
        self.key.sign(&header, claims)
    }
}
