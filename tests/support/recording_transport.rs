//! A token transport (a tower service, as `.transport(..)` takes) that opens no socket: it
//! records each request it is given and answers it from a script.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower_entra::TransportRequest;

/// The requests a transport was given, in order: method, URI and headers, and the body.
pub type Recorded = Arc<Mutex<Vec<(http::request::Parts, Bytes)>>>;

/// A transport that records each request and answers it with `answer()`, and its record.
pub fn recording_transport<E: Send + 'static>(
    answer: impl Fn() -> Result<http::Response<Full<Bytes>>, E> + Clone + Send + Sync + 'static,
) -> (
    impl tower::Service<
        TransportRequest,
        Response = http::Response<Full<Bytes>>,
        Error = E,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Recorded,
) {
    let recorded = Recorded::default();
    let record = recorded.clone();
    let service = tower::service_fn(move |request: TransportRequest| {
        let (record, answer) = (record.clone(), answer.clone());
        async move {
            let (parts, body) = request.into_parts();
            // A `Full` body cannot fail.
            let Ok(body) = body.collect().await;
            record.lock().unwrap().push((parts, body.to_bytes()));
            answer()
        }
    });
    (service, recorded)
}
