//! An `http` plugin's endpoint, parsed once: shared by the definition check in
//! [`super::registry`] and the delivery in [`super::webhook`], and importing neither.

use eventdbx_core::CoreError;
use reqwest::Url;

/// A parsed `http://` or `https://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Where jobs are posted.
    pub url: Url,
}

impl HttpTarget {
    /// Parses an endpoint; an endpoint without a scheme gets `https://` when `https` is set,
    /// else `http://`.
    pub fn parse(endpoint: &str, https: bool) -> Result<Self, CoreError> {
        let endpoint = endpoint.trim();
        let lower = endpoint.to_ascii_lowercase();
        let full = if lower.starts_with("http://") || lower.starts_with("https://") {
            endpoint.to_owned()
        } else if lower.contains("://") {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' has an unsupported scheme"
            )));
        } else if https {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        };
        // Checked before parsing: a URL parser reads `http:///path` as the host `path`.
        let authority = full.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        if authority.is_empty() {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' has no host"
            )));
        }
        let url = Url::parse(&full).map_err(|err| {
            CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' is invalid: {err}"
            ))
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CoreError::Config(format!(
                "http plugin endpoint '{endpoint}' has no host"
            )));
        }
        Ok(HttpTarget { url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_default_ports_and_refusals() {
        let plain = HttpTarget::parse(" 127.0.0.1:9000/hook?a=1 ", false).expect("plain");
        assert_eq!(plain.url.as_str(), "http://127.0.0.1:9000/hook?a=1");
        let tls = HttpTarget::parse("hooks.example.com/in", true).expect("https");
        assert_eq!(tls.url.scheme(), "https");
        assert_eq!(tls.url.port_or_known_default(), Some(443));
        let explicit = HttpTarget::parse("HTTPS://hooks.example.com", false).expect("explicit");
        assert_eq!(explicit.url.as_str(), "https://hooks.example.com/");
        for (endpoint, message) in [
            ("ftp://x/y", "unsupported scheme"),
            ("http:///path", "has no host"),
            ("", "has no host"),
            ("http://[::1/x", "is invalid"),
        ] {
            let refused = HttpTarget::parse(endpoint, false).expect_err(endpoint);
            assert!(
                refused.to_string().contains(message),
                "{endpoint}: {refused}"
            );
        }
    }
}
