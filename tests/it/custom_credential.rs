//! A credential defined outside the crate fails with its own kind, message and source, and
//! callers of the provider and of the layer see all three.

use std::fmt;

use futures::future::BoxFuture;
use http::Request;
use tower::{Layer, ServiceExt, service_fn};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, Error, TokenError, TokenErrorKind, TokenProvider,
    TokenRequest,
};

/// The error of the system the credential gets its tokens from.
#[derive(Debug)]
struct VaultSealed {
    vault: &'static str,
}

impl fmt::Display for VaultSealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault {} is sealed", self.vault)
    }
}

impl std::error::Error for VaultSealed {}

/// Gets its tokens from a vault that is sealed.
#[derive(Debug)]
struct VaultCredential;

impl Credential for VaultCredential {
    fn request_token<'a>(
        &'a self,
        _: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(async {
            Err(TokenError::new(
                TokenErrorKind::Authentication,
                "the vault refused to hand out the client's token",
            )
            .with_source(VaultSealed { vault: "kv-prod" }))
        })
    }
}

fn assert_is_the_credentials_error(e: &TokenError) {
    assert_eq!(e.kind(), TokenErrorKind::Authentication);
    assert_eq!(
        e.message(),
        "the vault refused to hand out the client's token"
    );
    let source = e.cause().expect("the credential's source is kept");
    let sealed = source
        .downcast_ref::<VaultSealed>()
        .expect("the source is the credential's own error type");
    assert_eq!(sealed.vault, "kv-prod");
    assert!(e.to_string().contains("vault kv-prod is sealed"), "{e}");
    // An error reporter walking `source()` prints the vault's message once: it is in the
    // token error's line already.
    let top: &(dyn std::error::Error + 'static) = e;
    let printed: Vec<String> = std::iter::successors(Some(top), |e| (*e).source())
        .map(ToString::to_string)
        .collect();
    let times = printed.iter().filter(|l| l.contains("is sealed")).count();
    assert_eq!(times, 1, "{printed:#?}");
    assert!(e.entra().is_none());
}

#[tokio::test]
async fn a_custom_credentials_error_reaches_token_callers_whole() {
    let provider =
        TokenProvider::new(VaultCredential, "https://graph.microsoft.com/.default").unwrap();
    let e = provider.token().await.unwrap_err();
    assert_is_the_credentials_error(&e);
    assert_eq!(
        provider
            .stats()
            .last_error
            .as_ref()
            .map(TokenError::message),
        Some(e.message())
    );
}

#[tokio::test]
async fn a_custom_credentials_error_reaches_layer_callers_whole() {
    let provider =
        TokenProvider::new(VaultCredential, "https://graph.microsoft.com/.default").unwrap();
    let service = EntraAuthLayer::new(provider).layer(service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    }));
    let request = Request::get("https://graph.microsoft.com/v1.0/me")
        .body(())
        .unwrap();
    match service.oneshot(request).await {
        Err(Error::Token(e)) => assert_is_the_credentials_error(&e),
        other => panic!("expected the credential's error, got {other:?}"),
    }
}
