//! End to end on loopback: a hyper-util client sending GETs to a hyper server on 127.0.0.1,
//! with `EntraAuth` (token from the Entra emulator, cached) next to the same client with a
//! static `Authorization` header, measured in one run. It shows what the middleware costs
//! against a real (if short) network round trip.
//!
//! Not criterion: measured one after the other, the second of two identical stacks came out
//! 10-20 % slower on a shared machine, which swamps the difference sought. So batches of the two
//! stacks alternate, which goes first alternates too, and the medians and their ratio print.
//!
//! ```text
//! cargo bench --bench loopback
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Layer, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, TokenProvider};
use tower_http::set_header::SetRequestHeaderLayer;

/// A server that answers 200 to any request with an Authorization header.
async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let status = if req.headers().contains_key("authorization") {
                        200
                    } else {
                        401
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Empty::<Bytes>::new())
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

const ROUNDS: usize = 40;
const BATCH: u32 = 250;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emulator = Emulator::start().await;
        let app = emulator.register_app(
            &emulator.tenant_id(),
            App::new("bench")
                .with_secret("s")
                .with_roles(&[Emulator::DEMO_API_ROLE]),
        );
        let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "s")
            .authority_host(emulator.authority_host())
            .build()
            .unwrap();
        let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE).unwrap();
        let token = provider.token().await.unwrap();
        let url = format!("http://{}/", server().await);
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let static_header = SetRequestHeaderLayer::overriding(
            http::header::AUTHORIZATION,
            token.header_value().clone(),
        )
        .layer(client.clone());
        let entra = EntraAuthLayer::builder(provider)
            .allow_hosts(["127.0.0.1"])
            .build()
            .unwrap()
            .layer(client);

        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            for i in 0..2 {
                let which = (round + i) % 2;
                let started = Instant::now();
                for _ in 0..BATCH {
                    let req = http::Request::get(&url).body(Empty::new()).unwrap();
                    let status = if which == 0 {
                        static_header.clone().oneshot(req).await.unwrap().status()
                    } else {
                        entra.clone().oneshot(req).await.unwrap().status()
                    };
                    assert_eq!(status, 200);
                }
                // The first round warms connections and caches up.
                if round > 0 {
                    times[which].push(started.elapsed() / BATCH);
                }
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let s = median(&mut times[0]);
        let e = median(&mut times[1]);
        println!(
            "loopback GET, median per request over {} alternating batches of {BATCH}:",
            ROUNDS - 1
        );
        println!(
            "  static Authorization header: {:>8.1} µs",
            s.as_secs_f64() * 1e6
        );
        println!(
            "  EntraAuth, cached token:     {:>8.1} µs",
            e.as_secs_f64() * 1e6
        );
        println!(
            "  ratio EntraAuth / static:    {:>8.3}",
            e.as_secs_f64() / s.as_secs_f64()
        );
    });
}
