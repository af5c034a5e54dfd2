//! A credential rotated while its fleet shares tokens through Redis (a real redis-server, the
//! Entra emulator's app accepting both secrets, as during a rotation): each generation of the
//! secret has its own entries and key id, replicas on the old secret keep reading theirs, a
//! rotated replica reads the old generation only until its own serves it.

use std::path::PathBuf;
use std::time::Duration;

use entra_emulator::{App, Emulator, RegisteredApp};
use tower_entra::{
    AccessToken, ClientSecret, ClientSecretCredential, RedisTokenCache, TokenProvider,
};

use crate::support::redis_server::RedisServer;

const SECRET_A: &str = "generation-A~secret-1111";
const SECRET_B: &str = "generation-B~secret-2222";

/// Moves tokio's clock past the credential file check interval (2 min) and the interval between
/// forced renewals (30 s); the clock runs again afterwards (Redis and the emulator are real
/// sockets).
async fn later() {
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(121)).await;
    tokio::time::resume();
}

struct Rotation {
    emulator: Emulator,
    app: RegisteredApp,
    redis: RedisServer,
    file: PathBuf,
}

impl Rotation {
    fn replica(&self, secret: ClientSecret) -> TokenProvider {
        let credential =
            ClientSecretCredential::builder(&self.app.tenant_id, &self.app.client_id, secret)
                .authority_host(self.emulator.authority_host())
                .build()
                .unwrap();
        TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE)
            .shared_cache(RedisTokenCache::new(self.redis.url()).unwrap())
            .build()
            .unwrap()
    }

    fn on(&self, secret: &str) -> TokenProvider {
        self.replica(ClientSecret::from(secret))
    }

    /// The entries in Redis (not the leases), with the key id each value was sealed under
    /// (bytes 2 to 9 of a sealed value, as redis-cli prints them).
    fn entries(&self) -> Vec<(String, String)> {
        let mut keys = self.redis.keys();
        keys.retain(|k| !k.ends_with(":lease"));
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let id = self.redis.cli(&["GETRANGE", &k, "2", "9"]);
                (k, id)
            })
            .collect()
    }

    /// The client secret of the latest token request.
    fn last_secret(&self) -> String {
        let form = self.emulator.last_token_request().unwrap();
        form.into_iter()
            .find_map(|(k, v)| (k == "client_secret").then_some(v))
            .unwrap()
    }
}

impl Drop for Rotation {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A provider's next token after it drops `held` (as after an API refused it).
async fn renewed(provider: &TokenProvider, held: &AccessToken) -> AccessToken {
    provider.invalidate(held);
    provider.token().await.unwrap()
}

#[tokio::test]
async fn both_generations_work_during_a_rotation_and_the_old_one_is_not_read_once_it_completes() {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("rotating")
            .with_secret(SECRET_A)
            .with_secret(SECRET_B),
    );
    let file = std::env::temp_dir().join(format!(
        "tower-entra-shared-rotation-{}",
        std::process::id()
    ));
    std::fs::write(&file, SECRET_A).unwrap();
    let fleet = Rotation {
        emulator,
        app,
        redis: RedisServer::start(),
        file,
    };

    // Generation A: one request for its replicas.
    let a1 = fleet.on(SECRET_A);
    let t_a1 = a1.token().await.unwrap();
    assert!(fleet.on(SECRET_A).token().await.unwrap().same_token(&t_a1));
    // A replica started on B: its own entry, under its own key id.
    let b1 = fleet.on(SECRET_B);
    let t_b1 = b1.token().await.unwrap();
    assert!(!t_b1.same_token(&t_a1));
    assert_eq!(fleet.emulator.token_requests(), 2);
    let entries = fleet.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_ne!(
        entries[0].1, entries[1].1,
        "one key id for both generations"
    );
    // Both generations keep working: each replica reads its own generation's entry.
    assert!(fleet.on(SECRET_A).token().await.unwrap().same_token(&t_a1));
    assert!(fleet.on(SECRET_B).token().await.unwrap().same_token(&t_b1));
    assert_eq!(fleet.emulator.token_requests(), 2);

    // A replica whose secret file is rotated from A to B in place.
    let rotated = fleet.replica(ClientSecret::from_file(&fleet.file).unwrap());
    let t = rotated.token().await.unwrap();
    assert!(t.same_token(&t_a1));
    std::fs::write(&fleet.file, SECRET_B).unwrap();
    later().await;
    // Its next request reads the file again and is sent with B.
    let t_r1 = renewed(&rotated, &t).await;
    assert_eq!(fleet.emulator.token_requests(), 3);
    assert_eq!(fleet.last_secret(), SECRET_B);

    // That fetch began under the keys of the secret loaded then (A): its token went to
    // generation A's entry, where the A replicas take it.
    later().await;
    assert!(renewed(&a1, &t_a1).await.same_token(&t_r1));
    assert_eq!(fleet.emulator.token_requests(), 3);

    // While the fleet rotates, it still reads generation A: an A replica's newer token.
    later().await;
    let t_a2 = renewed(&a1, &t_r1).await;
    assert_eq!(fleet.emulator.token_requests(), 4);
    let t = renewed(&rotated, &t_r1).await;
    assert!(
        t.same_token(&t_a2),
        "the rotated replica did not read generation A"
    );
    assert_eq!(fleet.emulator.token_requests(), 4);

    // Generation B serves it (a B replica's newer token): the rotation is complete there.
    later().await;
    let t_b2 = renewed(&b1, &t_b1).await;
    assert_eq!(fleet.emulator.token_requests(), 5);
    let t = renewed(&rotated, &t_a2).await;
    assert!(
        t.same_token(&t_b2),
        "the rotated replica did not read generation B"
    );
    assert_eq!(fleet.emulator.token_requests(), 5);

    // From then on, generation A's entries are not read, however new: it asks Entra itself.
    later().await;
    let t_a3 = renewed(&a1, &t_a2).await;
    assert_eq!(fleet.emulator.token_requests(), 6);
    let hits = rotated.stats().shared_cache_hits;
    let t = renewed(&rotated, &t_b2).await;
    assert!(
        !t.same_token(&t_a3),
        "the rotated replica read generation A after the rotation"
    );
    assert_eq!(fleet.emulator.token_requests(), 7);
    assert_eq!(rotated.stats().shared_cache_hits, hits);
    // And A replicas still read theirs.
    assert!(fleet.on(SECRET_A).token().await.unwrap().same_token(&t_a3));
    assert_eq!(fleet.emulator.token_requests(), 7);
}
