//! The IMDS probe of a managed identity credential inside a chain: one request without the
//! `Metadata` header, which IMDS answers at once (400) without asking Entra for anything, bounded
//! as a whole. Off Azure, an address that accepts connections and never answers (a proxy, a
//! firewall) would otherwise hold the chain for the whole retry schedule; the Azure SDKs probe
//! IMDS the same way inside `DefaultAzureCredential`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use url::Url;

use crate::error::{TokenError, TokenErrorKind};
use crate::transport::Transport;

/// The bound on the probe as a whole: IMDS is link-local and answers it without a round trip
/// to Entra.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Ok when something answered HTTP at `url` within [`PROBE_TIMEOUT`]; else the
/// [`Unavailable`](TokenErrorKind::Unavailable) error of a host without IMDS.
pub(super) async fn probe(transport: &Transport, url: &Url) -> Result<(), TokenError> {
    let request = http::Request::get(url.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| TokenError::configuration("the IMDS URL is not a valid URI").with_source(e))?;
    let origin = url.origin().ascii_serialization();
    match tokio::time::timeout(PROBE_TIMEOUT, transport.send(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == TokenErrorKind::InvalidResponse => Ok(()),
        Ok(Err(e)) => Err(TokenError::unavailable(format!(
            "no managed identity endpoint answered: IMDS ({origin}) did not answer a probe ({e}), so this is probably not an Azure VM, scale set or AKS node"
        ))),
        Err(_) => Err(TokenError::unavailable(format!(
            "no managed identity endpoint answered: IMDS ({origin}) did not answer a probe within {PROBE_TIMEOUT:?}, so this is probably not an Azure VM, scale set or AKS node"
        ))),
    }
}
