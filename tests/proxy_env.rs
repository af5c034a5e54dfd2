//! `HTTP_PROXY` / `http_proxy` / `ALL_PROXY` pointing at a listener: a plain-http loopback token
//! endpoint is reached directly, so the proxy receives zero bytes (the form holds the client
//! secret, and plain http through a proxy would hand it over in clear).
//!
//! An https authority goes through that proxy, and a failure names the host and the proxy.
//!
//! Alone in its own test binary: environment variables are process-global.

#[path = "support/secret_app.rs"]
mod secret_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secret_app::{demo_api_token, secret_app};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_default_transport_ignores_proxy_variables_for_a_plain_http_loopback_authority() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    // SAFETY: the only test in this binary, on a current-thread runtime, before any client is
    // built; nothing else reads the environment concurrently.
    unsafe {
        for name in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
            std::env::set_var(name, &proxy);
        }
        // An exclusion list inherited from the shell would make this test pass for the wrong reason.
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            // Counted, then dropped unanswered: the token request through it would then fail.
            count.fetch_add(n.max(1), Ordering::SeqCst);
        }
    });

    let (emulator, credential) = secret_app("env proxy", "ep").await;
    let credential = credential.timeout(Duration::from_secs(10)).build().unwrap();
    demo_api_token(&credential).await.unwrap();
    assert_eq!(emulator.token_requests(), 1);
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "the proxy from the environment received the token request"
    );

    // An https authority goes through the proxy (a CONNECT that the listener drops): the error
    // names the host it was for and the proxy it went through. Nothing leaves this machine.
    let credential = tower_entra::ClientSecretCredential::builder(
        "contoso.onmicrosoft.com",
        "00000000-0000-0000-0000-000000000001",
        "s",
    )
    .timeout(Duration::from_secs(10))
    .build()
    .unwrap();
    let e = tower_entra::Credential::request_token(
        &credential,
        tower_entra::TokenRequest::new("https://graph.microsoft.com/.default"),
    )
    .await
    .unwrap_err();
    assert!(
        received.load(Ordering::SeqCst) > 0,
        "the proxy was not used"
    );
    assert!(
        e.message().starts_with(&format!(
            "could not connect to login.microsoftonline.com:443 through the proxy {proxy}"
        )),
        "{e}"
    );
}
