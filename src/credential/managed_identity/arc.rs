//! Azure Arc's request and challenge: `GET {IDENTITY_ENDPOINT}?api-version=2019-11-01&resource=…`
//! with `Metadata: true` is answered `401` with `WWW-Authenticate: Basic realm=<path>`, naming
//! a key file the agent just wrote that only a member of its group can read; the request is
//! sent again with `Authorization: Basic <the file's contents>`.
//!
//! The path comes from the network, so the file is read only when it is a `.key` file directly
//! in the agent's documented directory, and only up to a few KiB: a hostile local listener
//! cannot make us read (and send) any other file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use std::io::Read;
use url::Url;
use zeroize::Zeroizing;

use super::imds::{invalid_url, query_url};
use super::secret_get::sensitive_header;
use crate::credential::rotation::on_blocking_pool;
use crate::error::{MAX_SERVER_FIELD_BYTES, TokenError, TokenErrorKind, server_text};
use crate::transport::BufferedResponse;

pub(super) const API_VERSION: &str = "2019-11-01";

/// The largest key file read; the agent's keys are a few dozen bytes.
const MAX_KEY_BYTES: u64 = 4096;

/// The directory the Arc agent writes its key files to, where this platform has one.
pub(super) fn default_key_directory() -> Option<PathBuf> {
    if cfg!(target_os = "linux") {
        Some(PathBuf::from("/var/opt/azcmagent/tokens"))
    } else if cfg!(windows) {
        let program_data = std::env::var_os(crate::credential::env::PROGRAM_DATA)
            .unwrap_or_else(|| r"C:\ProgramData".into());
        Some(
            Path::new(&program_data)
                .join("AzureConnectedMachineAgent")
                .join("Tokens"),
        )
    } else {
        None
    }
}

pub(super) fn request(
    endpoint: &Url,
    resource: &str,
    key: Option<&str>,
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let url = query_url(endpoint, API_VERSION, resource, None);
    let mut request = http::Request::get(url.as_str())
        .header("Metadata", "true")
        .header(http::header::ACCEPT, "application/json");
    if let Some(key) = key {
        let value = sensitive_header("Basic ", key).ok_or_else(|| {
            TokenError::invalid_response(
                "the Azure Arc key file holds characters that cannot be sent in a header",
            )
        })?;
        request = request.header(http::header::AUTHORIZATION, value);
    }
    request.body(Full::new(Bytes::new())).map_err(invalid_url)
}

/// The key the agent's `401` challenge names, read from `directory`.
pub(super) async fn challenge_key(
    answer: &BufferedResponse,
    directory: Option<&Path>,
) -> Result<Zeroizing<String>, TokenError> {
    let realm = answer
        .headers
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            let path = rest.trim().strip_prefix("realm=")?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| path.trim_matches('"'))
        })
        .ok_or_else(|| {
            TokenError::invalid_response(
                "the Azure Arc endpoint answered 401 without a `WWW-Authenticate: Basic realm=<key file>` challenge; is IDENTITY_ENDPOINT the Arc agent's (himds) endpoint?",
            )
        })?;
    let Some(directory) = directory else {
        return Err(TokenError::configuration(
            "Azure Arc managed identity is supported on Linux and Windows only (the agent's key directory is unknown here)",
        ));
    };
    read_key(Path::new(realm), directory).await
}

/// Reads the key at `path` if it is a `.key` file directly inside `directory`, at most
/// [`MAX_KEY_BYTES`] long.
pub(super) async fn read_key(
    path: &Path,
    directory: &Path,
) -> Result<Zeroizing<String>, TokenError> {
    let shown = || server_text(&path.to_string_lossy(), MAX_SERVER_FIELD_BYTES);
    let refused = |why: &str| {
        TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!(
                "the Azure Arc challenge names the key file {}, which {why}; only .key files in {} are read",
                shown(),
                directory.display()
            ),
        )
    };
    if path.extension().is_none_or(|e| e != "key") {
        return Err(refused("is not a .key file"));
    }
    let io = |what: &'static str| {
        move |e: std::io::Error| {
            TokenError::new(
                TokenErrorKind::Configuration,
                format!(
                    "could not {what} the Azure Arc key file; the process must run as a member of the himds group (Linux: `sudo usermod -a -G himds <user>`) or as an administrator (Windows)"
                ),
            )
            .with_source(e)
        }
    };
    // Resolved first, so that neither `..` nor a symbolic link leads out of the directory.
    let file = tokio::fs::canonicalize(path).await.map_err(io("find"))?;
    let dir = tokio::fs::canonicalize(directory)
        .await
        .map_err(io("find the directory of"))?;
    if file.parent() != Some(dir.as_path()) {
        return Err(refused("is not in the agent's key directory"));
    }
    // std's file, on the blocking pool: tokio's reads through a buffer of its own, which it
    // would free with the key still in it.
    let read = on_blocking_pool(move || read_small(&file))
        .await
        .map_err(|e| {
            TokenError::configuration("reading the Azure Arc key file did not finish")
                .with_source(e)
        })?;
    let key = match read {
        Ok(Some(key)) => key,
        Ok(None) => return Err(refused(&format!("is larger than {MAX_KEY_BYTES} bytes"))),
        Err((what, e)) => return Err(io(what)(e)),
    };
    let text = std::str::from_utf8(&key)
        .map_err(|_| refused("is not text"))?
        .trim();
    if text.is_empty() {
        return Err(refused("is empty"));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// The file at `path` if it is at most [`MAX_KEY_BYTES`] long (`None` if longer), in memory
/// sized once and zeroed when dropped; on failure, what could not be done. Blocking.
fn read_small(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, (&'static str, std::io::Error)> {
    let mut opened = std::fs::File::open(path).map_err(|e| ("open", e))?;
    let size = opened.metadata().map_err(|e| ("read", e))?.len();
    if size > MAX_KEY_BYTES {
        return Ok(None);
    }
    let mut key = Zeroizing::new(Vec::with_capacity(MAX_KEY_BYTES as usize + 1));
    // Bounded again while reading: the file may grow after its size was read.
    (&mut opened)
        .take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut key)
        .map_err(|e| ("read", e))?;
    Ok((key.len() as u64 <= MAX_KEY_BYTES).then_some(key))
}
