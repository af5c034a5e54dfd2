//! Reading claims from the payload of our own access tokens, fresh from Entra: no signature
//! check (the token is not input from a caller), and a token that is not a JWT reads as `None`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// The claims `T` read from `jwt`'s payload, or `None` when it is not a JWT with a JSON object
/// payload that deserializes as `T`.
pub(crate) fn claims<T: DeserializeOwned>(jwt: &str) -> Option<T> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let payload = payload.trim_end_matches('=');
    // The payload is a copy of part of the token: sized once, so that no reallocation leaves an
    // unzeroed copy behind, and zeroed when dropped.
    let mut decoded = Zeroizing::new(Vec::with_capacity(payload.len() * 3 / 4 + 3));
    URL_SAFE_NO_PAD.decode_vec(payload, &mut decoded).ok()?;
    // serde reads a struct from a JSON array too; claims are an object.
    if decoded.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<T>(&decoded).ok()
}
