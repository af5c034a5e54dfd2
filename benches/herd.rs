//! The thundering herd: N requests arrive at once at a cold provider. Single flight means one
//! token request however large N is; this measures what waiting together costs, as the median
//! time until every caller holds the token, next to a single caller's, in one run.
//!
//! ```text
//! cargo bench --bench herd
//! ```

use std::time::{Duration, Instant};

use entra_emulator::{App, Emulator};
use tower_entra::{ClientSecretCredential, TokenProvider};

const ROUNDS: usize = 31;
const HERDS: [usize; 4] = [1, 10, 100, 1000];

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
            App::new("herd").with_secret("s").with_roles(&[Emulator::DEMO_API_ROLE]),
        );
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); HERDS.len()];
        for round in 0..ROUNDS {
            // Rotate which herd size goes first, so no size always runs on a warm or cold machine.
            for i in 0..HERDS.len() {
                let which = (round + i) % HERDS.len();
                let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "s")
                    .authority_host(emulator.authority_host())
                    .build()
                    .unwrap();
                let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE).unwrap();
                let before = emulator.token_requests();
                let started = Instant::now();
                let callers: Vec<_> = (0..HERDS[which])
                    .map(|_| {
                        let p = provider.clone();
                        tokio::spawn(async move { p.token().await })
                    })
                    .collect();
                for caller in callers {
                    caller.await.unwrap().unwrap();
                }
                let took = started.elapsed();
                assert_eq!(emulator.token_requests() - before, 1, "not a single flight");
                if round > 0 {
                    times[which].push(took);
                }
            }
        }
        let mut medians = Vec::new();
        for t in &mut times {
            t.sort();
            medians.push(t[t.len() / 2]);
        }
        println!("cold provider, N concurrent token() calls, one token request each time; median over {} rounds:", ROUNDS - 1);
        for (n, m) in HERDS.iter().zip(&medians) {
            println!(
                "  N = {n:>4}: {:>8.0} µs until all hold the token ({:.2}x N = 1)",
                m.as_secs_f64() * 1e6,
                m.as_secs_f64() / medians[0].as_secs_f64()
            );
        }
    });
}
