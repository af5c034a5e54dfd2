//! Microsoft Entra ID authentication to Redis (Azure Cache for Redis, Azure Managed Redis): the
//! password is an access token of a [`TokenProvider`], the user name the principal's object id,
//! and the live connection authenticates again with each new token, before the one in use
//! expires (redis-rs re-sends `AUTH` for each credential this stream yields).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};
use redis::{ErrorKind, RedisError, RedisResult};
use serde::Deserialize;

use crate::provider::TokenProvider;
use crate::token::AccessToken;

/// How often the provider is asked whether it holds a new token: a quarter of the time the token
/// in use has left, between 1 s and 30 s. The provider refreshes ahead of expiry (minutes ahead
/// for Entra's tokens), so a new token reaches the connection well before the old one expires;
/// asking costs an in-memory read.
fn check_after(token: Option<&AccessToken>) -> Duration {
    let left = token
        .and_then(|t| {
            t.expires_on()
                .duration_since(std::time::SystemTime::now())
                .ok()
        })
        .unwrap_or(Duration::ZERO);
    (left / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Redis credentials from a [`TokenProvider`] for `https://redis.azure.com/.default`.
#[derive(Clone, Debug)]
pub(crate) struct EntraRedisAuth {
    provider: TokenProvider,
}

impl EntraRedisAuth {
    pub(crate) fn new(provider: TokenProvider) -> EntraRedisAuth {
        EntraRedisAuth { provider }
    }
}

#[derive(Deserialize)]
struct ObjectId {
    oid: String,
}

/// The credentials for `token`: its `oid` claim as the user name, the token as the password.
fn credentials(token: &AccessToken) -> RedisResult<BasicAuth> {
    let Some(ObjectId { oid }) = crate::jwt::claims::<ObjectId>(token.secret()) else {
        return Err(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "the Entra token for Redis has no `oid` claim to use as the user name \
             (ask for scope https://redis.azure.com/.default)",
        )));
    };
    Ok(BasicAuth::new(oid, token.secret().to_owned()))
}

impl StreamingCredentialsProvider for EntraRedisAuth {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let provider = self.provider.clone();
        // State: the provider, the token last yielded, whether to wait before asking (after a
        // token was yielded, or an error).
        Box::pin(futures::stream::unfold(
            (provider, None::<AccessToken>, false),
            |(provider, last, wait)| async move {
                let mut wait = wait;
                loop {
                    if wait {
                        tokio::time::sleep(check_after(last.as_ref())).await;
                    }
                    wait = true;
                    match provider.token().await {
                        Ok(token) if last.as_ref().is_some_and(|l| l.same_token(&token)) => {}
                        Ok(token) => {
                            let credentials = credentials(&token);
                            return Some((credentials, (provider, Some(token), true)));
                        }
                        // The connection keeps the token it has while it lasts: say so once
                        // per try, and try again later.
                        Err(e) => {
                            let error = RedisError::from((
                                ErrorKind::AuthenticationFailed,
                                "no Entra token for Redis",
                                e.to_string(),
                            ));
                            return Some((Err(error), (provider, last, true)));
                        }
                    }
                }
            },
        ))
    }
}
