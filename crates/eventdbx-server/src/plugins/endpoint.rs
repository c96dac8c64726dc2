//! An `http` plugin's endpoint, parsed once: shared by the definition check in
//! [`super::registry`] and the delivery in [`super::kinds`], and importing neither.

use eventdbx_core::CoreError;

/// A parsed `http://host:port/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
}

impl HttpTarget {
    /// Parses an endpoint; an endpoint without a scheme gets `https://` when `https` is set,
    /// else `http://`. `https` endpoints are refused: this server has no TLS client.
    pub fn parse(endpoint: &str, https: bool) -> Result<Self, CoreError> {
        let endpoint = endpoint.trim();
        let lower = endpoint.to_ascii_lowercase();
        let rest = if lower.starts_with("https://") || (https && !lower.contains("://")) {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}': https endpoints are not supported (no TLS \
                 client); use http:// (e.g. through a local TLS-terminating proxy)"
            )));
        } else if lower.starts_with("http://") {
            &endpoint[7..]
        } else if lower.contains("://") {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' has an unsupported scheme"
            )));
        } else {
            endpoint
        };
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' has no host"
            )));
        }
        let authority = if host
            .rsplit(':')
            .next()
            .is_some_and(|p| p.parse::<u16>().is_ok())
            && host.contains(':')
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(HttpTarget {
            authority,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}
