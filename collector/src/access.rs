//! Who may stream to the collector, and how many: the token policy for TCP
//! listeners, connection and stream limits, and the time a new connection
//! has to say hello. Unix sockets are created owner-only (see `ingest`), so
//! they need no token.

use std::net::ToSocketAddrs;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rtrace::{Address, Token};

/// The collector's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// Required from every TCP connection when set.
    pub token: Option<Token>,
    /// Accept TCP streams without a token (loopback addresses only).
    pub insecure_no_auth: bool,
    /// Connections open at once; more are refused at once.
    pub max_connections: usize,
    /// Streams accepted over the collector's life (each keeps a little
    /// memory until the timeline is finished); more are refused.
    pub max_streams: u64,
    /// Time a new connection has to send its header and hello.
    pub hello_timeout: Duration,
}

/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default `--max-streams`.
pub const DEFAULT_MAX_STREAMS: u64 = 10_000;
/// Default `--hello-timeout`.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Access {
    fn default() -> Access {
        Access {
            token: None,
            insecure_no_auth: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams: DEFAULT_MAX_STREAMS,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }
}

impl Access {
    /// Checks the rules against the addresses to listen on: TCP needs a
    /// token, or `insecure_no_auth` and a loopback address.
    pub fn check(&self, addresses: &[Address]) -> Result<()> {
        if self.max_connections == 0 || self.max_streams == 0 {
            bail!("--max-connections and --max-streams must be at least 1");
        }
        for address in addresses {
            let Address::Tcp(hostport) = address else {
                continue;
            };
            if self.token.is_none() && !self.insecure_no_auth {
                bail!(
                    "listening on {address} needs a token: give --token TOKEN or set RTRACE_TOKEN \
                     (recorders send theirs from RTRACE_TOKEN); --insecure-no-auth is allowed on \
                     loopback addresses only"
                );
            }
            if self.token.is_none() && !is_loopback(hostport)? {
                bail!(
                    "--insecure-no-auth is allowed on loopback addresses only (127.0.0.1, ::1, \
                     localhost), not {address}; give a token instead (--token or RTRACE_TOKEN)"
                );
            }
        }
        Ok(())
    }

    /// True when a connection on a listener of this kind must show the token.
    pub fn needs_token(&self, tcp: bool) -> bool {
        tcp && self.token.is_some()
    }

    /// Compares a token a peer sent with the collector's, in time that does
    /// not depend on where they differ.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|expected| {
            constant_time_eq(given.as_bytes(), expected.expose().as_bytes())
        })
    }
}

/// True when every address `hostport` resolves to is a loopback address.
fn is_loopback(hostport: &str) -> Result<bool> {
    let resolved: Vec<_> = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving tcp://{hostport}"))?
        .collect();
    Ok(!resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()))
}

/// Equal-length inputs are compared byte by byte with no early exit; the
/// time depends only on the expected token's length (not secret in
/// practice) and never on the first differing byte.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= std::hint::black_box(g ^ e);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn tcp_needs_a_token_or_loopback_with_insecure() {
        let tcp = |s: &str| vec![s.parse::<Address>().unwrap()];
        let open = Access::default();
        let err = open.check(&tcp("tcp://127.0.0.1:1")).unwrap_err();
        assert!(err.to_string().contains("needs a token"), "{err}");
        assert!(open.check(&["unix:///tmp/x.sock".parse().unwrap()]).is_ok());
        let insecure = Access {
            insecure_no_auth: true,
            ..Access::default()
        };
        assert!(insecure.check(&tcp("tcp://127.0.0.1:1")).is_ok());
        assert!(insecure.check(&tcp("tcp://[::1]:1")).is_ok());
        assert!(insecure.check(&tcp("tcp://localhost:1")).is_ok());
        let err = insecure.check(&tcp("tcp://0.0.0.0:1")).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let with_token = Access {
            token: Token::new("t0k3n"),
            ..Access::default()
        };
        assert!(with_token.check(&tcp("tcp://0.0.0.0:1")).is_ok());
        assert!(with_token.token_matches("t0k3n") && !with_token.token_matches("t0k3m"));
    }
}
