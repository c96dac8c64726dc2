//! Which protocol version to speak, and what to do when the server says no.
//!
//! Clients call [`first_attempt`], send that hello, and on a rejection ask
//! [`after_rejection`] whether to retry with v1 on a new connection. Servers call
//! [`server_path`] with the hello's version.

use crate::noise::v2;

/// Prefix of the reference server's rejection of an unknown protocol version.
pub const UNSUPPORTED_VERSION_PREFIX: &str = "unsupported control protocol version";
/// Our server's rejection of a v1 hello when `accept_v1 = false`.
pub const V1_DISABLED_MESSAGE: &str = "protocol version 1 is disabled on this server";
/// `ControlHello.protocolVersion` of v1.
pub const V1: u16 = 1;

/// The transport a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransportPreference {
    /// v2, falling back to v1 against servers that do not speak v2 (unless a key is pinned).
    #[default]
    Auto,
    /// v2 only.
    V2,
    /// v1 (Noise NNpsk0) only; the token travels in clear in the hello.
    V1,
    /// v1 framing without Noise; only when the server allows it.
    Plaintext,
}

/// What the client's policy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The requested transport.
    pub transport: TransportPreference,
    /// Whether the caller pinned a server key (forbids any fallback: v1 has no server key).
    pub pinned: bool,
    /// Forbids the v1 fallback even in `Auto` mode.
    pub forbid_fallback: bool,
}

/// One attempt at opening a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Send a v2 hello (no token) and run the v2 handshake.
    V2,
    /// Send a v1 hello; `no_noise` asks for plaintext.
    V1 {
        /// Ask for a plaintext session.
        no_noise: bool,
    },
}

impl Attempt {
    /// The `protocolVersion` to put in the hello.
    pub fn protocol_version(self) -> u16 {
        match self {
            Attempt::V2 => v2::PROTOCOL_VERSION,
            Attempt::V1 { .. } => V1,
        }
    }
}

/// What to do after a hello was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Open a new connection and try again with this attempt. The caller should log a warning:
    /// v1 sends the token in clear inside the hello.
    Fallback(Attempt),
    /// Give up with this explanation.
    Fail(String),
}

/// The first attempt for a policy.
pub fn first_attempt(policy: &Policy) -> Attempt {
    match policy.transport {
        TransportPreference::Auto | TransportPreference::V2 => Attempt::V2,
        TransportPreference::V1 => Attempt::V1 { no_noise: false },
        TransportPreference::Plaintext => Attempt::V1 { no_noise: true },
    }
}

/// Decides whether a rejected hello allows a fallback.
///
/// Only a v2 attempt rejected with the reference's version message, under `Auto`, without a
/// pinned key and without `forbid_fallback`, falls back to v1 (Noise, never plaintext).
pub fn after_rejection(policy: &Policy, attempted: Attempt, message: &str) -> Next {
    let version_refused = message.trim_start().starts_with(UNSUPPORTED_VERSION_PREFIX);
    match attempted {
        Attempt::V2 if version_refused => {
            if policy.transport != TransportPreference::Auto {
                Next::Fail(format!("server does not support protocol v2 ({message})"))
            } else if policy.pinned {
                Next::Fail(format!(
                    "server does not support protocol v2 ({message}); refusing to fall back to \
                     v1 because a server key is pinned"
                ))
            } else if policy.forbid_fallback {
                Next::Fail(format!(
                    "server does not support protocol v2 ({message}); fallback to v1 is disabled"
                ))
            } else {
                Next::Fallback(Attempt::V1 { no_noise: false })
            }
        }
        _ => Next::Fail(message.to_owned()),
    }
}

/// Checks the server's answer to a plaintext request: the client never carries on in a mode
/// the server did not agree to.
pub fn check_plaintext_grant(asked: bool, granted: bool) -> Result<(), String> {
    match (asked, granted) {
        (true, false) => Err("server refused the plaintext control channel; enable \
                              allow_plaintext on the server or use Noise"
            .to_owned()),
        (false, true) => {
            Err("server granted a plaintext channel the client did not ask for".to_owned())
        }
        _ => Ok(()),
    }
}

/// The verdict of a plaintext probe: a v1 hello asking for plaintext with an empty token, sent
/// first so that the token never travels in clear to a server that will not grant plaintext.
///
/// The server answers such a hello with `missing control token`, and with `noNoise` set to what
/// it would grant; only a granted `noNoise` lets the client send its token. A server that
/// predates the `noNoise` bit on rejections looks like a refusal (the client fails closed).
pub fn plaintext_probe(accepted: bool, message: &str, no_noise: bool) -> Result<(), String> {
    if no_noise {
        return Ok(());
    }
    let version_refused = message.trim_start().starts_with(UNSUPPORTED_VERSION_PREFIX)
        || message.trim() == V1_DISABLED_MESSAGE;
    if !accepted && version_refused {
        return Err(message.to_owned());
    }
    check_plaintext_grant(true, false)
}

/// The path a server takes for a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPath {
    /// v1: token in the hello, Noise NNpsk0 or plaintext.
    V1,
    /// v2: Noise XXpsk3.
    V2,
}

/// Picks the server's path for a hello's `protocolVersion`, or the exact rejection message.
pub fn server_path(protocol_version: u16, accept_v1: bool) -> Result<ServerPath, String> {
    match protocol_version {
        V1 if accept_v1 => Ok(ServerPath::V1),
        V1 => Err(V1_DISABLED_MESSAGE.to_owned()),
        v2::PROTOCOL_VERSION => Ok(ServerPath::V2),
        other => Err(format!("{UNSUPPORTED_VERSION_PREFIX} {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "unsupported control protocol version 2";

    #[test]
    fn auto_falls_back_to_v1_noise_only_when_allowed() {
        let auto = Policy::default();
        assert_eq!(first_attempt(&auto), Attempt::V2);
        assert_eq!(
            after_rejection(&auto, Attempt::V2, REFUSED),
            Next::Fallback(Attempt::V1 { no_noise: false })
        );
        let pinned = Policy {
            pinned: true,
            ..auto
        };
        assert!(matches!(
            after_rejection(&pinned, Attempt::V2, REFUSED),
            Next::Fail(_)
        ));
        let forbidden = Policy {
            forbid_fallback: true,
            ..auto
        };
        assert!(matches!(
            after_rejection(&forbidden, Attempt::V2, REFUSED),
            Next::Fail(_)
        ));
        let v2_only = Policy {
            transport: TransportPreference::V2,
            ..auto
        };
        assert!(matches!(
            after_rejection(&v2_only, Attempt::V2, REFUSED),
            Next::Fail(_)
        ));
    }

    #[test]
    fn other_rejections_never_fall_back() {
        let auto = Policy::default();
        for message in ["invalid control token", "missing control token", ""] {
            assert_eq!(
                after_rejection(&auto, Attempt::V2, message),
                Next::Fail(message.to_owned())
            );
        }
        assert!(matches!(
            after_rejection(&auto, Attempt::V1 { no_noise: false }, REFUSED),
            Next::Fail(_)
        ));
    }

    #[test]
    fn explicit_transports_start_where_asked() {
        let v1 = Policy {
            transport: TransportPreference::V1,
            ..Policy::default()
        };
        assert_eq!(first_attempt(&v1), Attempt::V1 { no_noise: false });
        let plain = Policy {
            transport: TransportPreference::Plaintext,
            ..Policy::default()
        };
        assert_eq!(first_attempt(&plain), Attempt::V1 { no_noise: true });
        assert_eq!(first_attempt(&plain).protocol_version(), 1);
    }

    #[test]
    fn plaintext_must_be_agreed_by_both() {
        assert!(check_plaintext_grant(true, false).is_err());
        assert!(check_plaintext_grant(false, true).is_err());
        assert!(check_plaintext_grant(true, true).is_ok());
        assert!(check_plaintext_grant(false, false).is_ok());
    }

    #[test]
    fn the_plaintext_probe_lets_the_token_go_only_when_granted() {
        assert!(plaintext_probe(false, "missing control token", true).is_ok());
        let refused = plaintext_probe(false, "missing control token", false);
        assert!(refused.is_err_and(|m| m.contains("refused the plaintext")));
        assert_eq!(
            plaintext_probe(false, V1_DISABLED_MESSAGE, false),
            Err(V1_DISABLED_MESSAGE.to_owned())
        );
        assert!(plaintext_probe(true, "ok", false).is_err());
    }

    #[test]
    fn server_paths_and_messages() {
        assert_eq!(server_path(1, true), Ok(ServerPath::V1));
        assert_eq!(server_path(1, false), Err(V1_DISABLED_MESSAGE.to_owned()));
        assert_eq!(server_path(2, false), Ok(ServerPath::V2));
        assert_eq!(
            server_path(7, true),
            Err("unsupported control protocol version 7".to_owned())
        );
    }
}
