//! The token request's transport, against raw servers on 127.0.0.1: a redirecting token endpoint
//! never receives a second POST of the secret, a caller's `reqwest::ClientBuilder` is used, a
//! proxy never sees a plain-http loopback request (and sees only a CONNECT for https), and the
//! request body holding the client secret is zeroed before its memory is freed.
//! (`HTTP_PROXY` from the environment: tests/proxy_env.rs, alone in its binary.)

#[path = "support/scanning_allocator.rs"]
mod scanning_allocator;
#[path = "support/secret_app.rs"]
mod secret_app;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scanning_allocator::ScanningAllocator;
use secret_app::{demo_api_token, secret_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_entra::{
    AccessToken, ClientSecretCredential, ClientSecretCredentialBuilder, Credential, TokenError,
    TokenErrorKind, TokenRequest,
};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "00000000-0000-0000-0000-000000000001";
const SCOPE: &str = "https://graph.microsoft.com/.default";

/// A client secret made of characters that form encoding leaves alone, so that it appears
/// verbatim in the request body.
const NEEDLE: &[u8] = b"Zq8-needle.secret_that-must-be-zeroed-before-free";

#[global_allocator]
static ALLOCATOR: ScanningAllocator = ScanningAllocator;

/// Reads one HTTP/1.1 request (headers and a `Content-Length` body) into `buf`; its length.
async fn read_request(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await.unwrap_or(0);
        if n == 0 {
            return len;
        }
        len += n;
        let seen = &buf[..len];
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&seen[..end]).unwrap_or_default();
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if len >= end + 4 + body_len {
                return len;
            }
        }
    }
}

/// A credential builder for the made-up [`TENANT`] and [`CLIENT`] with `secret`, bounded at
/// 10 s: the servers here are raw listeners, and a test that goes wrong fails instead of hanging.
fn made_up_app(secret: impl Into<String>) -> ClientSecretCredentialBuilder {
    ClientSecretCredential::builder(TENANT, CLIENT, secret).timeout(Duration::from_secs(10))
}

/// A token for [`SCOPE`] from `credential`.
async fn graph_token(credential: &ClientSecretCredential) -> Result<AccessToken, TokenError> {
    credential.request_token(TokenRequest::new(SCOPE)).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const TOKEN_RESPONSE: &str =
    r#"{"token_type":"Bearer","expires_in":3599,"access_token":"header.payload.signature"}"#;

async fn respond(stream: &mut TcpStream, status_line: &str, extra_headers: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status_line}\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A server that answers every request with a token, and counts the requests with the secret.
async fn thief() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Any connection at all is a failure: count it before reading.
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 64 * 1024];
            read_request(&mut stream, &mut buf).await;
            respond(&mut stream, "200 OK", "", TOKEN_RESPONSE).await;
        }
    });
    (port, received)
}

#[tokio::test]
async fn a_redirecting_token_endpoint_never_gets_the_secret_re_posted_elsewhere() {
    for status in ["307 Temporary Redirect", "308 Permanent Redirect"] {
        let (thief_port, stolen) = thief().await;
        let endpoint = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint_port = endpoint.local_addr().unwrap().port();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = endpoint.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let n = read_request(&mut stream, &mut buf).await;
                assert!(contains(&buf[..n], b"client_secret=redirect-secret"));
                // The library's telemetry reaches the wire through reqwest, over the caller's
                // builder's own user agent.
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                assert!(head.contains("\r\nx-client-sku: tower-entra\r\n"), "{head}");
                assert!(head.contains("\r\nuser-agent: tower-entra/"), "{head}");
                count.fetch_add(1, Ordering::SeqCst);
                let location = format!("Location: http://127.0.0.1:{thief_port}/steal\r\n");
                respond(&mut stream, status, &location, "").await;
            }
        });

        // A caller-configured builder, as a proxy or TLS set-up would pass one.
        let credential = made_up_app("redirect-secret")
            .authority_host(format!("http://127.0.0.1:{endpoint_port}"))
            .http_client(reqwest::Client::builder().user_agent("transport-hardening"))
            .build()
            .unwrap();
        let e = graph_token(&credential).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{status}: {e}");
        assert!(e.to_string().contains("redirect"), "{status}: {e}");
        assert!(!e.to_string().contains("redirect-secret"), "{e}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "{status}");
        // A followed redirect would have been answered by the thief before request_token
        // returned, and the thief counts a connection before it answers.
        assert_eq!(
            stolen.load(Ordering::SeqCst),
            0,
            "{status}: the redirect was followed and the form re-sent to its target"
        );
    }
}

#[tokio::test]
async fn the_callers_client_builder_is_used() {
    let (emulator, credential) = secret_app("builder", "s3").await;
    let credential = credential
        .http_client(reqwest::Client::builder().user_agent("transport-hardening"))
        .build()
        .unwrap();
    demo_api_token(&credential).await.unwrap();
    assert_eq!(emulator.token_requests(), 1);

    // A builder that cannot be built is a configuration error at build time.
    let e = ClientSecretCredential::builder(TENANT, CLIENT, "s3")
        .http_client(
            reqwest::Client::builder()
                .min_tls_version(reqwest::tls::Version::TLS_1_3)
                .max_tls_version(reqwest::tls::Version::TLS_1_2),
        )
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("HTTP client"), "{e}");
}

/// Plain-http loopback: hyper writes the body `Bytes` with vectored writes (no copy of its own),
/// so every freed copy of the secret on the client side is one this crate made.
#[tokio::test]
async fn the_request_body_with_the_secret_is_zeroed_before_it_is_freed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // The server's own copy of the secret is zeroed too, so that only the client's count.
        let mut buf = zeroize::Zeroizing::new(vec![0u8; 64 * 1024]);
        let n = read_request(&mut stream, &mut buf).await;
        let sent = contains(&buf[..n], NEEDLE);
        respond(&mut stream, "200 OK", "", TOKEN_RESPONSE).await;
        sent
    });

    scanning_allocator::start_scanning(NEEDLE);
    let secret = String::from_utf8(NEEDLE.to_vec()).unwrap();
    let credential = made_up_app(secret)
        .authority_host(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let token = graph_token(&credential).await.unwrap();
    assert_eq!(token.secret(), "header.payload.signature");
    assert!(server.await.unwrap(), "the secret was not sent");
    drop(credential);
    // Let the connection pool notice the closed connection and drop its buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    scanning_allocator::stop_scanning();
    assert_eq!(
        scanning_allocator::unzeroed_frees(),
        0,
        "memory holding the client secret was freed without being zeroed"
    );
}

#[test]
fn a_builders_debug_shows_no_proxy_credentials_or_default_headers() {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", "header-secret-123".parse().unwrap());
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all("http://proxyuser:proxy-pass-456@proxy.internal:3128").unwrap())
        .default_headers(headers);
    let builder = tower_entra::ClientSecretCredential::builder(
        "contoso.onmicrosoft.com",
        "client-id",
        "client-secret-789",
    )
    .http_client(http);
    let shown = format!("{builder:?}");
    for secret in ["header-secret-123", "proxy-pass-456", "client-secret-789"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// A proxy on 127.0.0.1 that records every byte it receives and answers 502.
async fn proxy() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            respond(&mut stream, "502 Bad Gateway", "", "").await;
        }
    });
    (port, received)
}

#[tokio::test]
async fn a_plain_http_loopback_authority_never_goes_through_the_callers_proxy() {
    let (proxy_port, received) = proxy().await;
    let (emulator, credential) = secret_app("proxied", "px").await;
    let proxy = reqwest::Proxy::all(format!("http://127.0.0.1:{proxy_port}")).unwrap();
    let credential = credential
        .timeout(Duration::from_secs(10))
        .http_client(reqwest::Client::builder().proxy(proxy))
        .build()
        .unwrap();
    demo_api_token(&credential).await.unwrap();
    assert_eq!(emulator.token_requests(), 1);
    // A proxied request would have been answered 502 by the proxy before request_token returned.
    assert!(
        received.lock().unwrap().is_empty(),
        "the proxy received the token request"
    );
}

#[tokio::test]
async fn https_through_a_proxy_is_a_connect_tunnel_the_proxy_cannot_read() {
    let (proxy_port, received) = proxy().await;
    let proxy = reqwest::Proxy::all(format!("http://127.0.0.1:{proxy_port}")).unwrap();
    let credential = made_up_app("tunnelled-secret")
        .http_client(reqwest::Client::builder().proxy(proxy))
        .build()
        .unwrap();
    // The proxy refuses the tunnel (502), so the request fails; what it was sent is what counts.
    let e = graph_token(&credential).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let received = received.lock().unwrap();
    assert!(
        received.starts_with(b"CONNECT login.microsoftonline.com:443 HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert!(!contains(&received, b"tunnelled-secret"));
}

/// With nothing listening, the error names the host and port, and that no proxy was used.
#[tokio::test]
async fn a_failure_to_connect_names_the_host_and_the_route() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let credential = made_up_app("unsent")
        .authority_host(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let e = graph_token(&credential).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Connection, "{e}");
    assert!(
        e.message().starts_with(&format!(
            "could not connect to 127.0.0.1:{port} directly (no proxy)"
        )),
        "{e}"
    );
}
