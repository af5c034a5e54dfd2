//! App registrations.

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
}

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
        }
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
}

/// An app registered in the emulator: what a client needs to authenticate.
#[derive(Clone, Debug)]
pub struct RegisteredApp {
    /// The application (client) ID, a fresh GUID.
    pub client_id: String,
    /// The tenant the app is registered in.
    pub tenant_id: String,
}
