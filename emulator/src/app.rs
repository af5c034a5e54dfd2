//! App registrations.

use crate::cert::{CertInfo, parse_certificate};

/// An app registration (a confidential client) to add to a tenant with
/// [`Emulator::register_app`](crate::Emulator::register_app).
///
/// ```
/// use entra_emulator::App;
///
/// let app = App::new("my daemon")
///     .with_secret("s3cret")
///     .with_roles(&["Demo.Read"]);
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
pub struct App {
    pub(crate) display_name: String,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) roles: Vec<String>,
    pub(crate) certificates: Vec<CertInfo>,
    pub(crate) trusted_subjects: Vec<String>,
    pub(crate) federated: Vec<FederatedCredential>,
    pub(crate) multi_tenant: bool,
}

/// A federated identity credential of an app registration.
#[derive(Clone, Debug)]
pub(crate) struct FederatedCredential {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) audience: String,
}

/// The default audience of federated identity credentials.
pub(crate) const DEFAULT_FIC_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A client secret of an app registration.
#[derive(Clone, Debug)]
pub(crate) struct Secret {
    pub(crate) value: String,
    pub(crate) expired: bool,
}

impl App {
    /// A new app registration with no credentials and no permissions.
    pub fn new(display_name: &str) -> App {
        App {
            display_name: display_name.to_owned(),
            secrets: Vec::new(),
            roles: Vec::new(),
            certificates: Vec::new(),
            trusted_subjects: Vec::new(),
            federated: Vec::new(),
            multi_tenant: false,
        }
    }

    /// Makes the registration multi-tenant ("Accounts in any organizational
    /// directory", `AzureADMultipleOrgs`): other tenants can consent to it
    /// ([`Emulator::grant_admin_consent`](crate::Emulator::grant_admin_consent)),
    /// and it then gets tokens from their token endpoints with its home
    /// tenant's credentials. A single-tenant app (the default) is known only
    /// in its home tenant.
    pub fn multi_tenant(mut self) -> App {
        self.multi_tenant = true;
        self
    }

    /// Adds a valid client secret. An app may have several.
    pub fn with_secret(mut self, secret: &str) -> App {
        self.secrets.push(Secret {
            value: secret.to_owned(),
            expired: false,
        });
        self
    }

    /// Adds a client secret that has expired: presenting it is answered with
    /// `401 invalid_client` `AADSTS7000222`.
    pub fn with_secret_expired(mut self, secret: &str) -> App {
        self.secrets.push(Secret {
            value: secret.to_owned(),
            expired: true,
        });
        self
    }

    /// Grants application permissions (app roles), with admin consent.
    ///
    /// A token carries, in its `roles` claim, those of these roles that the
    /// requested resource defines (see [`Emulator::register_api`](crate::Emulator::register_api));
    /// the demo API defines [`Emulator::DEMO_API_ROLE`](crate::Emulator::DEMO_API_ROLE).
    pub fn with_roles(mut self, roles: &[&str]) -> App {
        self.roles.extend(roles.iter().map(|r| (*r).to_owned()));
        self
    }

    /// Adds a certificate credential (DER-encoded X.509 with an RSA key). An app
    /// may have several. Client assertions signed with its key are accepted,
    /// the certificate being found by the assertion's `x5t#S256` or `x5t`
    /// header (or its `x5c` leaf).
    ///
    /// # Panics
    ///
    /// If `der` is not an X.509 certificate with an RSA public key.
    pub fn with_certificate(mut self, der: Vec<u8>) -> App {
        let info = parse_certificate(&der)
            .unwrap_or_else(|e| panic!("entra-emulator: App::with_certificate: {e}"));
        self.certificates.push(info);
        self
    }

    /// Trusts certificates by subject name (Entra's "subject name + issuer"
    /// authentication): a client assertion whose `x5c` header carries a leaf
    /// certificate with this subject common name (case-insensitive) is
    /// accepted if signed by that certificate's key, even though the
    /// certificate itself is not registered. The emulator does not check the
    /// issuer or build a chain.
    pub fn with_trusted_subject(mut self, subject_cn: &str) -> App {
        self.trusted_subjects.push(subject_cn.to_owned());
        self
    }

    /// Adds a federated identity credential: an assertion issued by `issuer`
    /// (trusted with [`Emulator::add_trusted_issuer_jwks`](crate::Emulator::add_trusted_issuer_jwks))
    /// for `subject`, with audience `audience`, authenticates the app. An empty
    /// `audience` means Entra's default, `api://AzureADTokenExchange`.
    pub fn with_federated_credential(mut self, issuer: &str, subject: &str, audience: &str) -> App {
        let audience = if audience.is_empty() {
            DEFAULT_FIC_AUDIENCE
        } else {
            audience
        };
        self.federated.push(FederatedCredential {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audience: audience.to_owned(),
        });
        self
    }
}

/// An app registered in the emulator: what a client needs to authenticate.
#[derive(Clone, Debug)]
pub struct RegisteredApp {
    /// The application (client) ID, a fresh GUID.
    pub client_id: String,
    /// The tenant the app is registered in (its home tenant), as a GUID.
    pub tenant_id: String,
}
