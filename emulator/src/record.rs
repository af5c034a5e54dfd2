//! [`RecordedRequest`]: what a client sent, kept for tests to assert on.

use axum::http::{HeaderMap, Method, Uri};

/// The endpoint a [`RecordedRequest`] was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// The v2.0 token endpoint, `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// The Azure Instance Metadata Service (VMs, scale sets, AKS nodes).
    Imds,
    /// App Service, Azure Functions and Container Apps (`IDENTITY_ENDPOINT`).
    AppService,
    /// Azure Arc-enabled servers (the local HIMDS agent).
    AzureArc,
    /// Azure Cloud Shell (`MSI_ENDPOINT`).
    CloudShell,
    /// Azure Machine Learning compute (`MSI_ENDPOINT` with `MSI_SECRET`).
    AzureMl,
    /// Service Fabric's managed identity token service.
    ServiceFabric,
}

/// One HTTP request as the emulator received it, with the status it was
/// answered with.
///
/// The emulator is a test double: header values, including secrets such as
/// `X-IDENTITY-HEADER` or `Authorization`, are kept verbatim so that tests
/// can check what a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Which endpoint received it.
    pub endpoint: Endpoint,
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// For a token request, the tenant (its GUID) the path names, whether by
    /// GUID or by domain; `None` for an unknown tenant and for the managed
    /// identity endpoints.
    pub tenant_id: Option<String>,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The headers in the order received, names in lowercase; values that
    /// are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The decoded `application/x-www-form-urlencoded` body fields, in order
    /// (empty for other bodies).
    pub form: Vec<(String, String)>,
    /// The status the emulator answered with; `None` when an injected
    /// [`Fault::drop_connection`](crate::Fault::drop_connection) closed the
    /// connection instead.
    pub status: Option<u16>,
}

impl RecordedRequest {
    pub(crate) fn new(
        endpoint: Endpoint,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        form: Vec<(String, String)>,
    ) -> RecordedRequest {
        RecordedRequest {
            endpoint,
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            tenant_id: None,
            query: parse_query(uri),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            form,
            status: None,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name, true)
    }

    /// The first value of query parameter `name` (case-sensitive).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        first(&self.query, name, false)
    }

    /// The first value of form field `name` (case-sensitive).
    pub fn form_field(&self, name: &str) -> Option<&str> {
        first(&self.form, name, false)
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str, ignore_case: bool) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| {
            if ignore_case {
                k.eq_ignore_ascii_case(name)
            } else {
                k == name
            }
        })
        .map(|(_, v)| v.as_str())
}

/// The decoded query parameters of `uri`, in order.
pub(crate) fn parse_query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
