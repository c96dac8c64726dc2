//! Client configuration: where to connect, who we are, how to secure and retry.

use std::time::Duration;

use eventdbx_proto::negotiate::TransportPreference;
use eventdbx_proto::noise::v2::{Fingerprint, DEFAULT_MAX_MESSAGE};

use crate::error::{Error, Result};
pub use crate::known_v2::KnownV2Hosts;

/// Default host of the control socket.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default control port.
pub const DEFAULT_PORT: u16 = 6363;
/// Default [`ClientConfig::busy_poll`].
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// Which transport to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Protocol v2 (Noise XX with a token-derived PSK); falls back to v1 on a new connection when
    /// the server does not speak v2, unless a server key is pinned, the fallback is not allowed
    /// ([`ClientConfig::allow_v1_fallback`]) or the server spoke v2 before ([`KnownV2Hosts`]).
    #[default]
    Auto,
    /// Protocol v2 only.
    V2,
    /// Protocol v1 only (`Noise_NNpsk0`; the token travels in clear inside the hello).
    V1,
    /// v1 framing without encryption, only when the server allows it. Testing only.
    Plaintext,
}

impl Transport {
    pub(crate) fn preference(self) -> TransportPreference {
        match self {
            Transport::Auto => TransportPreference::Auto,
            Transport::V2 => TransportPreference::V2,
            Transport::V1 => TransportPreference::V1,
            Transport::Plaintext => TransportPreference::Plaintext,
        }
    }
}

/// How connecting and safe calls are retried.
///
/// The delay before retry *k* (k = 1, 2, …) is `min(initial_delay × 2^(k−1), max_delay)`; with
/// `jitter` it is drawn uniformly from the upper half of that. Retries are off by default
/// (`attempts = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// Initial try plus retries; at least 1.
    pub attempts: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// Randomise each delay within its upper half.
    pub jitter: bool,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            attempts: 1,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            jitter: false,
        }
    }
}

impl RetryOptions {
    /// `attempts` tries in all, with the default delays.
    pub fn attempts(attempts: u32) -> Self {
        RetryOptions {
            attempts,
            ..RetryOptions::default()
        }
    }

    /// The delay before retry `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let delay = self
            .initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        if !self.jitter || delay.is_zero() {
            return delay;
        }
        let mut random = [0u8; 4];
        if getrandom::fill(&mut random).is_err() {
            return delay;
        }
        let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
        delay.mul_f64(0.5 + fraction / 2.0)
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
///
/// ```
/// use std::time::Duration;
/// use eventdbx_client::{ClientConfig, RetryOptions, Transport};
///
/// let config = ClientConfig::new("token", "default")
///     .port(6363)
///     .transport(Transport::Auto)
///     .request_timeout(Duration::from_secs(5))
///     .retry(RetryOptions::attempts(3));
/// assert_eq!(config.host, "127.0.0.1");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Host of the control socket (default `127.0.0.1`).
    pub host: String,
    /// Control port (default 6363).
    pub port: u16,
    /// The bearer token; trimmed before use; required.
    pub token: String,
    /// The tenant to open; empty means the server's default tenant.
    pub tenant_id: String,
    /// Bounds TCP connect plus handshake (default 5 s).
    pub connect_timeout: Duration,
    /// Bounds each request, send and receive (default 15 s).
    pub request_timeout: Duration,
    /// Retry policy (default: no retries).
    pub retry: RetryOptions,
    /// Transport (default [`Transport::Auto`]).
    pub transport: Transport,
    /// The server key fingerprint to pin (v2 only; a mismatch fails before the token is sent).
    pub server_key: Option<Fingerprint>,
    /// `true`: mutations return the JSON the server sent; `false`: an acknowledgement only.
    pub verbose: bool,
    /// Largest request and response on v2 (default 16 MiB).
    pub max_message_bytes: usize,
    /// How long a caller polls the socket for its answer, with non-blocking reads, after its
    /// request goes out, before it waits for the connection's reader task (default
    /// [`DEFAULT_BUSY_POLL`], 100 µs; zero disables it). A sequential caller then gets a quick
    /// answer on a running CPU, decoded on its own thread, instead of one that slept in
    /// `epoll_wait` and must be woken, and handed over by another task (tens of microseconds
    /// on a VM whose idle vCPUs halt). The poll runs on the caller's thread: on a
    /// current-thread runtime (the [`blocking`](crate::blocking) client's, the Python SDK's
    /// synchronous client's) that runtime runs nothing else meanwhile; on a multi-thread
    /// runtime it holds one worker. At most one caller per CPU but one, and one per worker but
    /// one, polls at a time in the process; none on a single CPU. Adaptive: a caller polls only
    /// while the connection's conversation is hot, for a request that follows the previous
    /// answer within a millisecond and after answers that came within a millisecond of their
    /// request; polls that end with no answer halve the budget down to no polling at all, and
    /// each such cool-down doubles the quick answers needed before the next poll (1, 2, 4, …
    /// 1,024), so a connection used now and then, or one whose answers are slow (durable
    /// writes), costs next to nothing. Polling time is CPU time.
    pub busy_poll: Duration,
    /// Whether [`Transport::Auto`] may fall back to protocol v1, which sends the token in clear,
    /// on first contact with a server that does not speak v2 (default `true`, for EventDBX
    /// servers). Never for a server in [`known_v2_hosts`](Self::known_v2_hosts).
    pub allow_v1_fallback: bool,
    /// Where the servers that spoke v2 are remembered (default [`KnownV2Hosts::Default`]).
    pub known_v2_hosts: KnownV2Hosts,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &"<redacted>")
            .field("tenant_id", &self.tenant_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("transport", &self.transport)
            .field("server_key", &self.server_key)
            .field("verbose", &self.verbose)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("busy_poll", &self.busy_poll)
            .field("allow_v1_fallback", &self.allow_v1_fallback)
            .field("known_v2_hosts", &self.known_v2_hosts)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with defaults for everything but the token and tenant.
    pub fn new(token: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        ClientConfig {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            token: token.into(),
            tenant_id: tenant_id.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            retry: RetryOptions::default(),
            transport: Transport::Auto,
            server_key: None,
            verbose: true,
            max_message_bytes: DEFAULT_MAX_MESSAGE,
            busy_poll: DEFAULT_BUSY_POLL,
            allow_v1_fallback: true,
            known_v2_hosts: KnownV2Hosts::Default,
        }
    }

    /// Reads `EVENTDBX_HOST`, `EVENTDBX_PORT`, `EVENTDBX_TOKEN`, `EVENTDBX_TENANT_ID` and
    /// `EVENTDBX_NO_NOISE` (`1` or `true`, any case, selects [`Transport::Plaintext`]); unset
    /// variables keep their defaults. A port that is not a number is an argument error.
    /// `EVENTDBX_KNOWN_V2_HOSTS` is read when connecting, by [`KnownV2Hosts::Default`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with a custom variable source (tests, embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = ClientConfig::new(
            lookup("EVENTDBX_TOKEN").unwrap_or_default(),
            lookup("EVENTDBX_TENANT_ID").unwrap_or_default(),
        );
        if let Some(host) = lookup("EVENTDBX_HOST").filter(|h| !h.trim().is_empty()) {
            config.host = host.trim().to_owned();
        }
        if let Some(port) = lookup("EVENTDBX_PORT").filter(|p| !p.trim().is_empty()) {
            config.port = port
                .trim()
                .parse()
                .map_err(|_| Error::argument(format!("EVENTDBX_PORT is not a port: '{port}'")))?;
        }
        if let Some(no_noise) = lookup("EVENTDBX_NO_NOISE") {
            let no_noise = no_noise.trim();
            if no_noise == "1" || no_noise.eq_ignore_ascii_case("true") {
                config.transport = Transport::Plaintext;
            }
        }
        Ok(config)
    }

    /// Sets the host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the connect (plus handshake) timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryOptions) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Pins the server key (v2 only; forbids the v1 fallback).
    pub fn server_key(mut self, fingerprint: Fingerprint) -> Self {
        self.server_key = Some(fingerprint);
        self
    }

    /// Sets whether mutations return the stored JSON.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Sets the largest v2 message.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets how long to poll for an answer before parking ([`ClientConfig::busy_poll`]; zero
    /// disables it).
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = budget;
        self
    }

    /// Sets whether [`Transport::Auto`] may fall back to v1 on first contact.
    pub fn allow_v1_fallback(mut self, allow: bool) -> Self {
        self.allow_v1_fallback = allow;
        self
    }

    /// Sets where the servers that spoke v2 are remembered.
    pub fn known_v2_hosts(mut self, known: KnownV2Hosts) -> Self {
        self.known_v2_hosts = known;
        self
    }

    /// Checks the configuration before any I/O.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.token.trim().is_empty() {
            return Err(Error::argument("token must be provided"));
        }
        if self.host.trim().is_empty() {
            return Err(Error::argument("host must be provided"));
        }
        if self.retry.attempts == 0 {
            return Err(Error::argument("retry.attempts must be greater than zero"));
        }
        if self.server_key.is_some()
            && matches!(self.transport, Transport::V1 | Transport::Plaintext)
        {
            return Err(Error::argument(
                "a pinned server key needs protocol v2 (transport Auto or V2)",
            ));
        }
        if self.max_message_bytes == 0 || u32::try_from(self.max_message_bytes).is_err() {
            return Err(Error::argument(
                "max_message_bytes must be between 1 and 4294967295",
            ));
        }
        Ok(())
    }
}
