//! The `http` kind's delivery: a `POST` of the job's JSON body through one reqwest client per
//! plugin, over rustls for `https://` endpoints. Success and failure rules, the error texts and
//! the TLS settings (`ca_file`) are described in `docs/plugins.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_core::CoreError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::endpoint::HttpTarget;

/// At most this much of a refusal's body is read (only its start goes into the error).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Characters of a refusal's body kept in the error.
const ERROR_BODY_CHARS: usize = 256;

/// An `http` plugin's endpoint, its headers and the client that keeps connections to it.
#[derive(Debug)]
pub struct Webhook {
    target: HttpTarget,
    headers: HeaderMap,
    client: reqwest::Client,
    timeout: Duration,
}

impl Webhook {
    /// The webhook of a definition; `ca_file` (a PEM file) replaces the system's trust store.
    /// Headers whose name or value cannot be sent (line breaks, a `:` in the name) are left out.
    pub fn new(
        endpoint: &str,
        https: bool,
        headers: &BTreeMap<String, String>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Webhook, CoreError> {
        let target = HttpTarget::parse(endpoint, https)?;
        let mut sent = HeaderMap::new();
        sent.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                sent.insert(name, value);
            }
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(ca_file)?)
            // A redirect could send the body, and its credentials, to another host.
            .redirect(reqwest::redirect::Policy::none())
            // Deliveries go where the definition says, whatever the server's environment.
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|err| CoreError::Config(format!("http plugin client: {}", chain(&err))))?;
        Ok(Webhook {
            target,
            headers: sent,
            client,
            timeout,
        })
    }

    /// POSTs `body`; only a 2xx answer is a delivery.
    pub async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let sent = self
            .client
            .post(self.target.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let mut response = sent.map_err(|err| self.failure(err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere");
            return Err(format!(
                "http plugin request failed ({code}): redirect to {location} refused \
                 (redirects are not followed)"
            ));
        }
        let mut text = Vec::new();
        while text.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) => return Err(self.failure(err)),
            }
        }
        let first: String = String::from_utf8_lossy(&text)
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        Err(format!("http plugin request failed ({code}): {first}"))
    }

    fn failure(&self, err: reqwest::Error) -> String {
        if err.is_timeout() {
            return format!(
                "http plugin request failed: timed out after {} s",
                self.timeout.as_secs()
            );
        }
        // The URL may carry a token in its query: the error names the endpoint by nothing.
        format!("http plugin request failed: {}", chain(&err.without_url()))
    }
}

/// An error and its causes, `outer: inner: …`: reqwest's own text is generic and the cause
/// (refused connection, unknown certificate issuer) is what an operator needs.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// rustls with ring: the certificates of `ca_file` only, or the operating system's verifier.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, CoreError> {
    // ring rather than aws-lc-rs (rustls's preferred provider, which deprecates this one for
    // lacking post-quantum key exchange): no C/cmake build; classical key exchange is accepted.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |err: rustls::Error| CoreError::Config(format!("http plugin TLS: {err}"));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let config = match ca_file {
        Some(path) => builder
            .with_root_certificates(ca_roots(path)?)
            .with_no_client_auth(),
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(tls_error)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// The trust anchors of a PEM file; a file without a usable certificate is a `config` error.
fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, CoreError> {
    let refused =
        |why: String| CoreError::Config(format!("http plugin ca_file {}: {why}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|err| refused(err.to_string()))? {
        let cert = cert.map_err(|err| refused(err.to_string()))?;
        roots.add(cert).map_err(|err| refused(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(refused("no PEM certificate in the file".into()));
    }
    Ok(roots)
}
