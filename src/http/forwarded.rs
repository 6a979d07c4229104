//! The client's address: the TCP peer, or behind a trusted proxy the address
//! that proxy saw, from `X-Forwarded-For`.
//!
//! The per-client limits (logins, waiting-room visits) count by it. Behind a
//! balancer every connection comes from the balancer, so without this one
//! bot's flood spends every buyer's allowance. Only the proxies named in
//! `HERDGATE_TRUSTED_PROXIES` are believed: a client that reaches the gateway
//! directly could otherwise name a new address with each request and never be
//! limited. The header is read from the right: each proxy appends the address
//! it saw, so whatever a client wrote itself is on the left, and the first
//! address from the right that is not a trusted proxy is the client.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed; none by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list of addresses and networks (`10.0.0.5`,
    /// `10.0.0.0/8`, `fd00::/8`); empty for none.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip.to_canonical()),
                    Err(_) => {
                        return Err(format!(
                            "`{item}` is neither an address nor a network; expected a \
                             comma-separated list such as 10.0.0.5,10.1.0.0/16,fd00::/8"
                        ));
                    }
                },
            };
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address a request came from: `peer` itself, unless `peer` is a
    /// trusted proxy; then the rightmost `X-Forwarded-For` entry that is not
    /// one. An entry that is not an address stops the walk at the last
    /// trusted hop: the proxy's own address counts, never a client's word.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several header lines are one list, in order (RFC 9110, 5.3).
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for entry in line.rsplit(',') {
                let Some(ip) = address(entry.trim()) else {
                    return client;
                };
                if !self.trusts(ip) {
                    return ip;
                }
                client = ip;
            }
        }
        client
    }
}

/// An entry of `X-Forwarded-For`: an address, with a port or not.
fn address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn balancer() -> TrustedProxies {
        TrustedProxies::parse("10.0.0.5, 192.168.0.0/16").unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::parse("").unwrap();
        assert!(none.is_empty());
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(none.client(ip("203.0.113.9"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn a_client_that_is_no_trusted_proxy_cannot_name_its_address() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            balancer().client(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_address_it_saw_is_the_client() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            balancer().client(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn what_a_client_wrote_itself_on_the_left_is_not_believed() {
        // The client sent "1.2.3.4, 5.6.7.8"; the balancer appended what it saw.
        let headers = forwarded(&["1.2.3.4, 5.6.7.8, 198.51.100.7"]);
        assert_eq!(
            balancer().client(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
        let two_lines = forwarded(&["1.2.3.4", "198.51.100.7"]);
        assert_eq!(
            balancer().client(ip("10.0.0.5"), &two_lines),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_address() {
        let headers = forwarded(&["1.2.3.4, 198.51.100.7, 192.168.3.4"]);
        assert_eq!(
            balancer().client(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_or_nothing_leaves_the_last_trusted_hop() {
        let proxy = ip("10.0.0.5");
        assert_eq!(balancer().client(proxy, &HeaderMap::new()), proxy);
        for line in ["unknown", "", "1.2.3.4, not-an-ip", "999.1.1.1"] {
            assert_eq!(
                balancer().client(proxy, &forwarded(&[line])),
                proxy,
                "{line}"
            );
        }
        let behind_two = forwarded(&["junk, 192.168.3.4"]);
        assert_eq!(balancer().client(proxy, &behind_two), ip("192.168.3.4"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        let proxies = TrustedProxies::parse("::ffff:10.0.0.5,fd00::/8").unwrap();
        let mapped = ip("::ffff:10.0.0.5");
        assert_eq!(
            proxies.client(mapped, &forwarded(&["198.51.100.7:4711"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client(ip("fd00::1"), &forwarded(&["[2001:db8::7]:4711"])),
            ip("2001:db8::7")
        );
        assert_eq!(
            proxies.client(ip("fd00::1"), &forwarded(&["::ffff:198.51.100.7"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_bad_list_names_the_bad_item() {
        for bad in ["10.0.0.0/33", "balancer", "10.0.0.5,,x", "::1/129"] {
            let error = TrustedProxies::parse(bad).unwrap_err();
            assert!(error.contains('`'), "{bad}: {error}");
        }
        assert_eq!(
            TrustedProxies::parse(" 10.0.0.5 ,").unwrap(),
            TrustedProxies::parse("10.0.0.5/32").unwrap()
        );
    }
}
