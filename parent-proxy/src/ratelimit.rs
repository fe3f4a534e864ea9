//! Rate limits (governor token buckets) and the client address they are keyed by.
//!
//! Four buckets: per client IP (every request), per client IP for `createAccount/start`
//! (which has no account yet and costs the enclave a DKG), per account for the other
//! flow-starting routes, and one global bucket for what the enclave can serve. A request
//! is checked against its own buckets first, so one abusive client exhausts its own budget
//! before it can touch the shared one.
//!
//! The client IP is the TCP peer, unless that peer is a configured trusted proxy (a load
//! balancer): then it is the rightmost `X-Forwarded-For` entry that is not itself a trusted
//! proxy. Entries to the left of it were written by the client and prove nothing, so a
//! client cannot pick its bucket; and from an untrusted peer the header is ignored.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;

use crate::config::{IpNet, Rate, RateLimitConfig};
use crate::error::ProxyError;

/// Which bucket refused a request (a metrics label and part of the client's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// Requests per client IP.
    Ip,
    /// Account creations per client IP.
    CreateAccount,
    /// Flow starts per account.
    Account,
    /// All requests together.
    Global,
}

impl LimitScope {
    /// Every scope, for metrics.
    pub const ALL: [LimitScope; 4] = [
        LimitScope::Ip,
        LimitScope::CreateAccount,
        LimitScope::Account,
        LimitScope::Global,
    ];

    /// The label used in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Ip => "ip",
            LimitScope::CreateAccount => "create_account",
            LimitScope::Account => "account",
            LimitScope::Global => "global",
        }
    }
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest account id kept as a bucket key; longer ids are not account ids, and
/// keying on them would let a client grow the table with junk.
const MAX_ACCOUNT_KEY: usize = 128;

/// All the proxy's buckets.
pub struct RateLimiters {
    ip: DefaultKeyedRateLimiter<IpAddr>,
    create: DefaultKeyedRateLimiter<IpAddr>,
    account: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

fn quota(rate: &Rate) -> Quota {
    // `with_period` refuses only a zero period, which `replenish_interval` never returns;
    // the fallback keeps the rate rather than panicking.
    Quota::with_period(rate.replenish_interval())
        .unwrap_or_else(|| Quota::per_second(rate.count))
        .allow_burst(rate.burst)
}

impl RateLimiters {
    /// Buckets for `config`.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiters {
            ip: DefaultKeyedRateLimiter::keyed(quota(&config.per_ip)),
            create: DefaultKeyedRateLimiter::keyed(quota(&config.create_per_ip)),
            account: DefaultKeyedRateLimiter::keyed(quota(&config.per_account)),
            global: DefaultDirectRateLimiter::direct(quota(&config.global)),
            clock: DefaultClock::default(),
        }
    }

    fn refused(&self, scope: LimitScope, wait: Duration) -> ProxyError {
        ProxyError::RateLimited {
            scope,
            retry_after: wait,
        }
    }

    /// Every request: the client's own bucket, then the global one.
    pub fn check_request(&self, client: IpAddr) -> Result<(), ProxyError> {
        let key = bucket_key(client);
        self.ip
            .check_key(&key)
            .map_err(|n| self.refused(LimitScope::Ip, n.wait_time_from(self.clock.now())))?;
        self.global
            .check()
            .map_err(|n| self.refused(LimitScope::Global, n.wait_time_from(self.clock.now())))
    }

    /// `createAccount/start`: the client's account-creation bucket.
    pub fn check_create_account(&self, client: IpAddr) -> Result<(), ProxyError> {
        self.create
            .check_key(&bucket_key(client))
            .map_err(|n| self.refused(LimitScope::CreateAccount, n.wait_time_from(self.clock.now())))
    }

    /// A flow start naming `account`: that account's bucket.
    pub fn check_account(&self, account: &str) -> Result<(), ProxyError> {
        if account.len() > MAX_ACCOUNT_KEY {
            return Err(ProxyError::BadRequest("accountId is too long"));
        }
        self.account
            .check_key(&account.to_string())
            .map_err(|n| self.refused(LimitScope::Account, n.wait_time_from(self.clock.now())))
    }

    /// Forgets buckets that are full again (their clients have been quiet long enough),
    /// so the tables hold only recent clients. Call periodically.
    pub fn forget_idle(&self) {
        self.ip.retain_recent();
        self.ip.shrink_to_fit();
        self.create.retain_recent();
        self.create.shrink_to_fit();
        self.account.retain_recent();
        self.account.shrink_to_fit();
    }

    /// How many keyed buckets exist (for tests and diagnostics).
    pub fn tracked_keys(&self) -> usize {
        self.ip.len() + self.create.len() + self.account.len()
    }
}

/// The bucket an address belongs to: itself for IPv4, its /64 for IPv6 (one host usually
/// holds a whole /64, and per-address buckets would give it 2^64 budgets).
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Most `X-Forwarded-For` entries looked at: a chain of load balancers is short, and the
/// walk must not cost more for a longer (attacker-written) header.
const MAX_FORWARDED_HOPS: usize = 16;

/// The client address of a request that came from `peer` with `headers`.
///
/// `X-Forwarded-For` is believed only when `peer` is trusted, and then read right to left:
/// each trusted hop passes the question on to the address it reports; the first untrusted
/// address is the client. An unparsable entry stops the walk at the last hop that was
/// trusted to report, and a chain of only trusted hops yields its leftmost entry.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut client = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')).take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_forwarded_entry(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote "6.6.6.6" itself; the load balancer appended what it saw.
        let h = xff(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        // Two trusted hops, each appending.
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        // Several header lines count as one list, in order.
        let h = xff(&["6.6.6.6", "198.51.100.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        // Ports and brackets.
        let h = xff(&["[2001:db8::1]:443"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_and_missing_headers_fall_back_to_the_last_trusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        let h = xff(&["not-an-ip"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        let h = xff(&["junk, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.7"));
        // Only trusted hops: the leftmost is as far as we can see.
        let h = xff(&["10.0.0.9, 10.0.0.8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.9"));
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        assert_eq!(
            bucket_key(ip("2001:db8:1:2:aaaa::1")),
            bucket_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(bucket_key(ip("2001:db8:1:2::1")), bucket_key(ip("2001:db8:1:3::1")));
        assert_eq!(bucket_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn buckets_refuse_beyond_the_burst_and_say_when_to_retry() {
        let config = RateLimitConfig {
            per_ip: Rate::new(1, Duration::from_secs(10), 2),
            create_per_ip: Rate::new(1, Duration::from_secs(60), 1),
            per_account: Rate::new(1, Duration::from_secs(10), 1),
            global: Rate::per_second(1000, 1000),
        };
        let limits = RateLimiters::new(&config);
        let a = ip("192.0.2.1");
        assert!(limits.check_request(a).is_ok());
        assert!(limits.check_request(a).is_ok());
        match limits.check_request(a) {
            Err(ProxyError::RateLimited { scope, retry_after }) => {
                assert_eq!(scope, LimitScope::Ip);
                assert!(retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(10));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            limits.check_request(ip("192.0.2.2")).is_ok(),
            "another client is unaffected"
        );
        assert!(limits.check_create_account(a).is_ok());
        assert!(limits.check_create_account(a).is_err());
        assert!(limits.check_account("acct-1").is_ok());
        assert!(limits.check_account("acct-1").is_err());
        assert!(limits.check_account("acct-2").is_ok());
        assert!(matches!(
            limits.check_account(&"x".repeat(200)),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(limits.tracked_keys() >= 4);
    }

    #[test]
    fn the_global_bucket_caps_everyone() {
        let config = RateLimitConfig {
            per_ip: Rate::per_second(100, 100),
            create_per_ip: Rate::per_second(100, 100),
            per_account: Rate::per_second(100, 100),
            global: Rate::new(1, Duration::from_secs(60), 2),
        };
        let limits = RateLimiters::new(&config);
        assert!(limits.check_request(ip("192.0.2.1")).is_ok());
        assert!(limits.check_request(ip("192.0.2.2")).is_ok());
        assert!(matches!(
            limits.check_request(ip("192.0.2.3")),
            Err(ProxyError::RateLimited {
                scope: LimitScope::Global,
                ..
            })
        ));
    }
}
