//! The proxy's configuration: every limit and timeout in one plain struct, with defaults
//! sized for one enclave, so that the binary, `tandem-dev demo` and the tests build it the same
//! way and nothing is tuned by a hidden constant.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::SetupError;
use tandem_core::Addr;

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where the enclave listens.
    pub enclave: Addr,
    /// The server certificate and the TLS versions to accept.
    pub tls: TlsSettings,
    /// A file of SHA-256 hashes of the API keys allowed to call the API; `None` leaves the
    /// API open (the mobile-SDK case: devices authenticate to the enclave, not the proxy).
    pub api_keys: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` header is believed (load balancers). Empty: nobody's.
    pub trusted_proxies: Vec<IpNet>,
    /// Sizes and counts.
    pub limits: Limits,
    /// Request rates.
    pub rates: RateLimitConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl ProxyConfig {
    /// A configuration with the defaults of [`Limits`], [`RateLimitConfig`] and [`Timeouts`],
    /// no API keys and no trusted proxies.
    pub fn new(enclave: Addr, tls: TlsSettings) -> Self {
        ProxyConfig {
            enclave,
            tls,
            api_keys: None,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            rates: RateLimitConfig::default(),
            timeouts: Timeouts::default(),
        }
    }

    /// Refuses combinations that would make the proxy misbehave rather than fail: zero
    /// sizes, and an idle timeout shorter than a header read (a slow but honest client
    /// would be cut before the header timeout could judge it).
    pub fn validate(&self) -> Result<(), SetupError> {
        let l = &self.limits;
        if l.max_body_bytes == 0 || l.max_response_bytes == 0 || l.max_connections == 0 {
            return Err(SetupError::Config(
                "body, response and connection limits must be positive".into(),
            ));
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("tls handshake", t.tls_handshake),
            ("header read", t.header_read),
            ("idle", t.idle),
            ("request", t.request),
            ("enclave", t.enclave),
            ("enclave connect", t.enclave_connect),
        ] {
            if d.is_zero() {
                return Err(SetupError::Config(format!("the {name} timeout must be positive")));
            }
        }
        if t.idle < t.header_read {
            return Err(SetupError::Config(
                "the idle timeout must not be shorter than the header read timeout".into(),
            ));
        }
        Ok(())
    }
}

/// The server certificate and the protocol versions offered.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file with the server certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// Also accept TLS 1.2. Off by default: every client we ship speaks TLS 1.3, and a
    /// smaller protocol surface is the safer default; some corporate middleboxes need 1.2.
    pub allow_tls12: bool,
}

/// Sizes and counts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; larger ones get `413 PAYLOAD_TOO_LARGE`. The largest
    /// legitimate message (a DKG flight, base64) is a few hundred KB.
    pub max_body_bytes: usize,
    /// Largest enclave response relayed (guards the proxy's memory, not the client).
    pub max_response_bytes: usize,
    /// Client connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Idle connections to the enclave kept for reuse.
    pub max_idle_enclave_connections: usize,
}

impl Default for Limits {
    /// 1 MiB bodies, 8 MiB responses, 1024 connections, 32 idle enclave connections.
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_connections: 1024,
            max_idle_enclave_connections: 32,
        }
    }
}

/// Timeouts, each against one way a client or the enclave can hold resources.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From TCP accept to a finished TLS handshake.
    pub tls_handshake: Duration,
    /// From the first byte of a request to its last header byte (HTTP/1.1; slowloris).
    pub header_read: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle: Duration,
    /// Reading a request body, from the end of the headers.
    pub request: Duration,
    /// One relayed request to the enclave, from send to the last response byte.
    pub enclave: Duration,
    /// Opening a connection to the enclave.
    pub enclave_connect: Duration,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain: Duration,
}

impl Default for Timeouts {
    /// 10 s handshake, 10 s headers, 60 s idle, 30 s body, 30 s enclave (a DKG step takes
    /// about 2 s of CPU; the headroom is for a loaded host), 3 s connect, 10 s drain.
    fn default() -> Self {
        Timeouts {
            tls_handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30),
            enclave: Duration::from_secs(30),
            enclave_connect: Duration::from_secs(3),
            drain: Duration::from_secs(10),
        }
    }
}

/// Request rates, each a token bucket (governor's GCRA).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Every request, per client IP (IPv6 clients per /64: one host usually owns the
    /// whole prefix).
    pub per_ip: Rate,
    /// `createAccount/start` per client IP: a DKG costs the enclave about 2 s of CPU, so
    /// account creation gets a much smaller budget than signing.
    pub create_per_ip: Rate,
    /// `sign/start`, `recover/start` and `refresh/start` per account id.
    pub per_account: Rate,
    /// All requests together: what one enclave can serve.
    pub global: Rate,
}

impl Default for RateLimitConfig {
    /// 50/s per IP (burst 100), 10/min account creations per IP (burst 5), 10 flow starts/s
    /// per account (burst 20), 400/s in all (burst 800): one enclave on two cores signs
    /// about 100 times a second, two requests each.
    fn default() -> Self {
        RateLimitConfig {
            per_ip: Rate::per_second(50, 100),
            create_per_ip: Rate::new(10, Duration::from_secs(60), 5),
            per_account: Rate::per_second(10, 20),
            global: Rate::per_second(400, 800),
        }
    }
}

/// A token bucket: `count` requests per `period`, up to `burst` at once.
///
/// Parsed from `N/s`, `N/min` or `N/h`, optionally followed by `,burst=B` (the burst
/// defaults to `N`): `50/s,burst=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: NonZeroU32,
    /// The period.
    pub period: Duration,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `count` per `period`, `burst` at once; zeros are raised to one.
    pub fn new(count: u32, period: Duration, burst: u32) -> Self {
        Rate {
            count: NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN),
            period: if period.is_zero() {
                Duration::from_secs(1)
            } else {
                period
            },
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// `count` per second, `burst` at once.
    pub fn per_second(count: u32, burst: u32) -> Self {
        Rate::new(count, Duration::from_secs(1), burst)
    }

    /// The time to earn one request back.
    pub fn replenish_interval(&self) -> Duration {
        (self.period / self.count.get()).max(Duration::from_nanos(1))
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a rate like 50/s, 30/min or 100/h (optionally ,burst=N)");
        let (rate, burst) = match s.split_once(',') {
            Some((r, b)) => (r.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match burst {
            None => count,
            Some(b) => b
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?,
        };
        if count == 0 || burst == 0 {
            return Err(format!("{s:?}: a rate and its burst must be at least 1"));
        }
        Ok(Rate::new(count, period, burst))
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`) or a single address, for the trusted-proxy list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IP address or network like 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds (for command-line flags).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration like 500ms, 10s or 2m");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r: Rate = "50/s,burst=100".parse().unwrap();
        assert_eq!(
            (r.count.get(), r.period, r.burst.get()),
            (50, Duration::from_secs(1), 100)
        );
        let r: Rate = "30/min".parse().unwrap();
        assert_eq!(
            (r.count.get(), r.period, r.burst.get()),
            (30, Duration::from_secs(60), 30)
        );
        assert_eq!(r.replenish_interval(), Duration::from_secs(2));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("5/s,burst=0".parse::<Rate>().is_err());
        assert!("5/week".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn ip_networks_match_by_prefix() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.9.9.9".parse().unwrap()),
            "v4-mapped counts as v4"
        );
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("example.com".parse::<IpNet>().is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn validation_refuses_nonsense() {
        let tls = TlsSettings {
            cert_chain: "c".into(),
            private_key: "k".into(),
            allow_tls12: false,
        };
        let mut c = ProxyConfig::new("tcp://127.0.0.1:5000".parse().unwrap(), tls);
        assert!(c.validate().is_ok());
        c.timeouts.idle = Duration::from_secs(1);
        assert!(c.validate().is_err());
        c.timeouts.idle = Duration::from_secs(60);
        c.limits.max_body_bytes = 0;
        assert!(c.validate().is_err());
    }
}
