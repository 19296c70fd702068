//! The client's address, resolved as PocketBase resolves it (its "real IP"): the connection's
//! peer, unless the settings' `trustedProxy.headers` name request headers that carry it. Here
//! those headers count only when the peer is one of the server's `--trusted-proxy` ranges:
//! anyone else could write any address in them. The login throttle and `superuserIPs` both
//! judge this one address.
//!
//! As in PocketBase: the headers are tried in the settings' order, the last instance of a
//! header is the one read (a proxy appends its own), its comma-separated entries that are not
//! addresses are skipped, and the rightmost address is taken unless `useLeftmostIP`. Beyond
//! PocketBase: a rightmost address that is itself a trusted proxy is skipped (a chain of our
//! own proxies), RFC 7239 `for=` nodes are read when the header is `Forwarded`, and IPv4-mapped
//! IPv6 addresses are the IPv4 client.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use poem::http::{HeaderMap, HeaderName};
use poem::Request;

use crate::service::Service;
use crate::settings::{AccessSettings, TrustedProxy};

/// The peers (`--trusted-proxy`) whose forwarding headers name the client.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// The client of `req` (`None` when the connection has no IP peer) and the access settings
/// it is judged by.
pub async fn client_of(req: &Request) -> (Option<IpAddr>, Arc<AccessSettings>) {
    let access = match req.data::<Arc<Service>>() {
        Some(service) => service.access_settings().await,
        None => Arc::new(AccessSettings::default()),
    };
    let trusted = req.data::<TrustedProxies>().map(|t| t.0.as_slice()).unwrap_or_default();
    let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
    let client = peer.map(|peer| client_ip(peer, req.headers(), trusted, &access.trusted_proxy));
    (client, access)
}

/// The client's address for a connection from `peer` carrying `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet], proxy: &TrustedProxy) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if proxy.headers.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    for name in &proxy.headers {
        let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) else { continue };
        let Some(last) = headers.get_all(&name).iter().next_back() else { continue };
        let hops: Vec<IpAddr> = String::from_utf8_lossy(last.as_bytes()).split(',').filter_map(parse_entry).collect();
        let client = if proxy.use_leftmost_ip {
            hops.first().copied()
        } else {
            // Right to left, past our own proxies; if every hop is one, the leftmost of them.
            let mut client = None;
            for hop in hops.iter().rev() {
                client = Some(*hop);
                if !is_trusted(hop) {
                    break;
                }
            }
            client
        };
        if let Some(client) = client {
            return client;
        }
    }
    peer
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One entry of a forwarding header: an address, or an RFC 7239 element with a `for=` node.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(canonical(ip));
    }
    entry.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| parse_node(value.trim().trim_matches('"')))?.map(canonical)
    })
}

/// A `Forwarded` node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let host = node.split_once(':').map_or(node, |(host, _)| host);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        h
    }

    fn proxy(headers: &[&str], use_leftmost_ip: bool) -> TrustedProxy {
        TrustedProxy { headers: headers.iter().map(|h| h.to_string()).collect(), use_leftmost_ip }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn headers_count_only_when_named_in_the_settings_and_sent_by_a_trusted_peer() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let settings = proxy(&["X-Forwarded-For"], false);
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &trusted, &settings), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("198.51.100.1"), &xff, &trusted, &settings), ip("198.51.100.1"), "untrusted peer");
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &[], &settings), ip("10.1.2.3"), "nobody trusted");
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &trusted, &proxy(&[], false)), ip("10.1.2.3"), "no header named");
        assert_eq!(client_ip(ip("10.1.2.3"), &headers(&[]), &trusted, &settings), ip("10.1.2.3"), "header absent");
        assert_eq!(client_ip(ip("::ffff:10.1.2.3"), &xff, &trusted, &settings), ip("203.0.113.9"), "mapped peer");
    }

    /// The case of issue 21: nginx appends to `X-Forwarded-For` and passes the client's own
    /// `Forwarded` on unchanged; only the header the settings name counts.
    #[test]
    fn a_client_s_own_forwarded_never_overrides_the_proxy_s_header() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[("forwarded", "for=198.51.100.77"), ("x-forwarded-for", "203.0.113.9")]);
        let settings = proxy(&["X-Forwarded-For"], false);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted, &settings), ip("203.0.113.9"));
    }

    #[test]
    fn rightmost_by_default_leftmost_on_request_as_pocketbase_reads_them() {
        let trusted = nets(&["10.0.0.0/8"]);
        let at = |pairs: &[(&str, &str)], leftmost| {
            client_ip(ip("10.0.0.1"), &headers(pairs), &trusted, &proxy(&["X-Real-IP"], leftmost))
        };
        assert_eq!(at(&[("x-real-ip", "198.51.100.1, 203.0.113.9")], false), ip("203.0.113.9"));
        assert_eq!(at(&[("x-real-ip", "198.51.100.1, 203.0.113.9")], true), ip("198.51.100.1"));
        // The last instance of the header is the proxy's.
        assert_eq!(at(&[("x-real-ip", "198.51.100.1"), ("x-real-ip", "203.0.113.9")], false), ip("203.0.113.9"));
        assert_eq!(at(&[("x-real-ip", "203.0.113.9"), ("x-real-ip", "198.51.100.1")], true), ip("198.51.100.1"));
        // Entries that are not addresses are skipped; none at all: the peer.
        assert_eq!(at(&[("x-real-ip", "203.0.113.9, garbage")], false), ip("203.0.113.9"));
        assert_eq!(at(&[("x-real-ip", "garbage, 203.0.113.9")], true), ip("203.0.113.9"));
        assert_eq!(at(&[("x-real-ip", "203.0.113.9:5555")], false), ip("10.0.0.1"), "an address with a port is not one");
        assert_eq!(at(&[("x-real-ip", "")], false), ip("10.0.0.1"));
        // Our own proxies on the right are passed over; if all are ours, the leftmost of them.
        assert_eq!(at(&[("x-real-ip", "203.0.113.9, 10.9.9.9")], false), ip("203.0.113.9"));
        assert_eq!(at(&[("x-real-ip", "10.8.8.8, 10.9.9.9")], false), ip("10.8.8.8"));
    }

    #[test]
    fn headers_are_tried_in_the_settings_order() {
        let trusted = nets(&["10.0.0.0/8"]);
        let settings = proxy(&["CF-Connecting-IP", "X-Forwarded-For"], false);
        let both = headers(&[("x-forwarded-for", "198.51.100.1"), ("cf-connecting-ip", "203.0.113.9")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &both, &trusted, &settings), ip("203.0.113.9"));
        let second = headers(&[("x-forwarded-for", "198.51.100.1"), ("cf-connecting-ip", "nonsense")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &second, &trusted, &settings), ip("198.51.100.1"));
        // A name that is no header name is passed over.
        let odd = proxy(&["X Bad", "X-Forwarded-For"], false);
        assert_eq!(client_ip(ip("10.0.0.1"), &second, &trusted, &odd), ip("198.51.100.1"));
    }

    #[test]
    fn forwarded_nodes_are_read_when_named() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let settings = proxy(&["Forwarded"], false);
        let h = headers(&[("forwarded", "for=1.2.3.4, For=\"[2001:db8::7]:4711\";proto=https")]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &trusted, &settings), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted, &settings), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted, &settings), ip("10.0.0.2"));
    }
}
