//! Who is at the other end of an upgrade: the client address it is counted under, and the
//! count of WebSocket connections per address (`limits.max_connections_per_ip`).
//!
//! The address is the TCP peer's, unless the peer is one of `limits.trusted_proxies`: then
//! `X-Forwarded-For` names it. Anyone can write that header, so it is believed only as far as
//! trusted proxies wrote it: read from the right, each entry appended by a trusted proxy is
//! skipped, and the first entry that is not a trusted proxy is the client. An entry that is not
//! an address ends the walk at the last address read, so a forged or garbled left part can only
//! make a client count under a proxy's own address, never under someone else's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;
use parking_lot::Mutex;

/// The forwarding header of de-facto standard: `client, proxy1, proxy2`, each proxy appending
/// the address it received the request from.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request that arrived from `peer` (see the module docs).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|network| network.contains(address));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Several header lines are one list, in order (RFC 9110, 5.3).
    let values: Vec<_> = headers.get_all(FORWARDED_FOR).iter().collect();
    for value in values.into_iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for entry in value.rsplit(',') {
            let Some(address) = forwarded_address(entry) else {
                return client;
            };
            client = address;
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`203.0.113.7:5123`,
/// `[2001:db8::7]:443`). `unknown`, host names and garbage are `None`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let address = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()?;
    Some(address.to_canonical())
}

/// WebSocket connections per client address on this gateway.
#[derive(Debug)]
pub struct ConnectionsPerAddress {
    /// `limits.max_connections_per_ip`; 0: not counted.
    limit: usize,
    /// Open connections per address; an address leaves the map with its last connection, so
    /// the map holds at most as many entries as there are connections.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerAddress {
    /// A counter allowing `limit` connections per address; 0 allows any number.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `address`, held until the slot drops; `None`
    /// when the address already holds `limit` connections.
    pub fn reserve(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        if self.limit == 0 {
            return Some(AddressSlot { owner: None });
        }
        let mut counts = self.counts.lock();
        let count = counts.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: Some(Box::new((self.clone(), address))),
        })
    }

    /// The connections counted for `address`.
    pub fn count(&self, address: IpAddr) -> usize {
        self.counts.lock().get(&address).copied().unwrap_or(0)
    }
}

/// One connection's place under its address's cap; dropping it frees the place.
///
/// Every connection holds one for its life, so it is one pointer wide: with the cap off (the
/// default) it holds nothing at all.
#[derive(Debug)]
pub struct AddressSlot {
    /// The counter and the address counted; `None` when nothing is counted (no cap).
    owner: Option<Box<(Arc<ConnectionsPerAddress>, IpAddr)>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        let (owner, address) = *owner;
        let mut counts = owner.counts.lock();
        if let Some(count) = counts.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn networks(entries: &[&str]) -> Vec<IpNet> {
        entries.iter().map(|entry| entry.parse().unwrap()).collect()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// From a peer that is not a trusted proxy, `X-Forwarded-For` is ignored: anyone can
    /// write it.
    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(
            client_address(ip("198.51.100.1"), &headers, &[]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(ip("198.51.100.1"), &headers, &networks(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
    }

    /// Behind trusted proxies the client is the rightmost entry that is not a trusted proxy;
    /// what the client itself wrote further left is not believed.
    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_wrote() {
        let trusted = networks(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.5");
        let cases = [
            (vec!["203.0.113.7"], "203.0.113.7"),
            (vec!["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
            (vec!["1.1.1.1, 203.0.113.7, 10.0.0.9"], "203.0.113.7"),
            (vec!["1.1.1.1", "203.0.113.7, 10.0.0.9"], "203.0.113.7"),
            (vec!["203.0.113.7:5123"], "203.0.113.7"),
            (vec!["[2001:db8::7]:443"], "2001:db8::7"),
            (vec!["2001:db8::7"], "2001:db8::7"),
            (vec!["::ffff:203.0.113.7"], "203.0.113.7"),
            // Garbage ends the walk at the last address read.
            (vec!["203.0.113.7, unknown"], "10.0.0.5"),
            (vec!["203.0.113.7, garbage, 10.0.0.9"], "10.0.0.9"),
            (vec![""], "10.0.0.5"),
            // Only trusted proxies: the leftmost of them.
            (vec!["10.0.0.8, 10.0.0.9"], "10.0.0.8"),
            (vec![], "10.0.0.5"),
        ];
        for (values, client) in cases {
            assert_eq!(
                client_address(peer, &forwarded(&values), &trusted),
                ip(client),
                "{values:?}"
            );
        }
    }

    /// An IPv4 peer seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address, so
    /// the two forms neither match different proxies nor count separately.
    #[test]
    fn mapped_ipv4_peers_are_their_ipv4_address() {
        let trusted = networks(&["127.0.0.2/32"]);
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(
            client_address(ip("::ffff:127.0.0.2"), &headers, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers, &trusted),
            ip("127.0.0.1")
        );
    }

    /// An address gets `limit` slots; a dropped slot frees its place, and an address without
    /// connections leaves the map. A limit of 0 counts nothing.
    #[test]
    fn each_address_holds_at_most_its_limit() {
        let counter = ConnectionsPerAddress::new(2);
        let a = ip("203.0.113.7");
        let b = ip("203.0.113.8");
        let first = counter.reserve(a);
        let second = counter.reserve(a);
        assert!(first.is_some() && second.is_some());
        assert!(counter.reserve(a).is_none());
        assert!(
            counter.reserve(b).is_some(),
            "other addresses are not affected"
        );
        drop(first);
        assert_eq!(counter.count(a), 1);
        let third = counter.reserve(a);
        assert!(third.is_some());
        drop((second, third));
        assert!(counter.counts.lock().is_empty());

        let unlimited = ConnectionsPerAddress::new(0);
        let slots: Vec<_> = (0..100).map(|_| unlimited.reserve(a)).collect();
        assert!(slots.iter().all(Option::is_some));
        assert_eq!(unlimited.count(a), 0);
    }
}
