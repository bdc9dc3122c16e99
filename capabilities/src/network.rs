//! The `network` key: which sockets the guest may use.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Whatever the container's network namespace offers.
    All,
    /// Only what the rules allow (no rule: no network at all).
    Only(NetworkRules),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    /// Where the guest may connect (TCP) or send (UDP).
    pub connect: Vec<(Subnet, PortRange)>,
    /// The local ports the guest may bind, on any address.
    pub listen: Vec<PortRange>,
    /// Whether the guest may resolve names.
    pub lookup: bool,
}

/// An address block: the address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub addr: IpAddr,
    pub bits: u8,
}

/// Ports `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// What the guest wants to do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketUse {
    /// Connect (TCP) or send to (UDP) a remote address.
    Connect,
    /// Bind a local address. Port 0 (an ephemeral port, as a connect binds implicitly) is
    /// allowed to a guest that may use sockets at all; another port must be a listen port.
    Bind,
    /// Listen (TCP) on a local address, already bound.
    Listen,
    /// Accept a connection from the remote address given: any, on a port it may listen on.
    Accept,
    /// Receive a datagram from the remote address given: one it may send to, or any when it
    /// may listen.
    Receive,
}

impl Network {
    pub fn none() -> Self {
        Network::Only(NetworkRules::default())
    }

    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        match value {
            "all" => return Ok(Network::All),
            "none" => return Ok(Network::none()),
            _ => {}
        }
        let mut rules = NetworkRules::default();
        for rule in value.split(',').map(str::trim) {
            if rule == "lookup" {
                rules.lookup = true;
            } else if let Some(target) = rule.strip_prefix("connect=") {
                let (addr, ports) = target
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{rule:?}: write connect=ADDR[/BITS]:PORTS"))?;
                let subnet = Subnet::parse(addr).map_err(|e| format!("{rule:?}: {e}"))?;
                let ports = PortRange::parse(ports).map_err(|e| format!("{rule:?}: {e}"))?;
                rules.connect.push((subnet, ports));
            } else if let Some(ports) = rule.strip_prefix("listen=") {
                rules
                    .listen
                    .push(PortRange::parse(ports).map_err(|e| format!("{rule:?}: {e}"))?);
            } else {
                return Err(format!(
                    "{rule:?} is not a rule: use all, none, or connect=ADDR:PORTS, listen=PORTS and lookup"
                ));
            }
        }
        Ok(Network::Only(rules))
    }

    /// Whether the guest may use `addr` this way.
    pub fn allows(&self, addr: SocketAddr, how: SocketUse) -> bool {
        let rules = match self {
            Network::All => return true,
            Network::Only(rules) => rules,
        };
        match how {
            SocketUse::Connect => rules
                .connect
                .iter()
                .any(|(subnet, ports)| subnet.contains(addr.ip()) && ports.contains(addr.port())),
            SocketUse::Bind if addr.port() == 0 => self.allows_sockets(),
            SocketUse::Bind | SocketUse::Listen => {
                rules.listen.iter().any(|ports| ports.contains(addr.port()))
            }
            SocketUse::Accept => !rules.listen.is_empty(),
            SocketUse::Receive => !rules.listen.is_empty() || self.allows(addr, SocketUse::Connect),
        }
    }

    /// Whether the guest may resolve names.
    pub fn allows_lookup(&self) -> bool {
        match self {
            Network::All => true,
            Network::Only(rules) => rules.lookup,
        }
    }

    /// Whether any socket use at all is allowed.
    pub fn allows_sockets(&self) -> bool {
        match self {
            Network::All => true,
            Network::Only(rules) => !rules.connect.is_empty() || !rules.listen.is_empty(),
        }
    }

    /// `Ok` when everything `need` allows is allowed here; else the first rule that is not.
    pub(crate) fn covers(&self, need: &Network) -> Result<(), String> {
        let granted = match self {
            Network::All => return Ok(()),
            Network::Only(rules) => rules,
        };
        let wanted = match need {
            Network::All => return Err("all".to_string()),
            Network::Only(rules) => rules,
        };
        if wanted.lookup && !granted.lookup {
            return Err("lookup".to_string());
        }
        for (subnet, ports) in &wanted.connect {
            if !granted
                .connect
                .iter()
                .any(|(s, p)| s.contains_subnet(subnet) && p.contains_range(ports))
            {
                return Err(format!("connect={subnet}:{ports}"));
            }
        }
        for ports in &wanted.listen {
            if !granted.listen.iter().any(|p| p.contains_range(ports)) {
                return Err(format!("listen={ports}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = match self {
            Network::All => return f.write_str("all"),
            Network::Only(rules) => rules,
        };
        let mut parts: Vec<String> = rules
            .connect
            .iter()
            .map(|(subnet, ports)| format!("connect={subnet}:{ports}"))
            .collect();
        parts.extend(rules.listen.iter().map(|ports| format!("listen={ports}")));
        if rules.lookup {
            parts.push("lookup".to_string());
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(","))
    }
}

impl Subnet {
    fn parse(text: &str) -> Result<Self, String> {
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= max)
                .ok_or_else(|| format!("/{bits} is not a prefix length up to {max}"))?,
        };
        Ok(Subnet { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // A v4 rule also matches the same address written as v4-mapped v6.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.bits)
            }
            _ => false,
        }
    }

    fn contains_subnet(&self, other: &Subnet) -> bool {
        other.bits >= self.bits && self.contains(other.addr)
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    net[full] & mask == ip[full] & mask
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(addr) => write!(f, "{addr}")?,
            IpAddr::V6(addr) => write!(f, "[{addr}]")?,
        }
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.bits != max {
            write!(f, "/{}", self.bits)?;
        }
        Ok(())
    }
}

impl PortRange {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(PortRange {
                first: 0,
                last: u16::MAX,
            });
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(format!("the port range {text} is backwards"));
        }
        Ok(PortRange { first, last })
    }

    fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn contains_range(&self, other: &PortRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first, self.last) {
            (0, u16::MAX) => f.write_str("*"),
            (first, last) if first == last => write!(f, "{first}"),
            (first, last) => write!(f, "{first}-{last}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn rules_allow_only_what_they_name() {
        let network =
            Network::parse("connect=10.0.0.0/8:443, connect=[::1]:80-90,listen=8080").unwrap();
        assert!(network.allows(addr("10.1.2.3:443"), SocketUse::Connect));
        assert!(!network.allows(addr("11.1.2.3:443"), SocketUse::Connect));
        assert!(!network.allows(addr("10.1.2.3:444"), SocketUse::Connect));
        assert!(network.allows(addr("[::1]:85"), SocketUse::Connect));
        assert!(network.allows(addr("[::ffff:10.0.0.1]:443"), SocketUse::Connect));
        assert!(network.allows(addr("0.0.0.0:8080"), SocketUse::Bind));
        assert!(!network.allows(addr("0.0.0.0:8081"), SocketUse::Bind));
        assert!(network.allows(addr("0.0.0.0:0"), SocketUse::Bind));
        assert!(!network.allows(addr("0.0.0.0:40000"), SocketUse::Listen));
        assert!(network.allows(addr("127.0.0.1:8080"), SocketUse::Listen));
        let connect_only = Network::parse("connect=127.0.0.1:80").unwrap();
        assert!(connect_only.allows(addr("0.0.0.0:0"), SocketUse::Bind));
        assert!(!connect_only.allows(addr("0.0.0.0:80"), SocketUse::Bind));
        assert!(!connect_only.allows(addr("10.0.0.1:5555"), SocketUse::Accept));
        assert!(!network.allows_lookup());
        assert_eq!(
            network.to_string(),
            "connect=10.0.0.0/8:443,connect=[::1]:80-90,listen=8080"
        );
        let none = Network::parse("none").unwrap();
        assert!(!none.allows(addr("127.0.0.1:80"), SocketUse::Connect));
        assert!(!none.allows(addr("0.0.0.0:0"), SocketUse::Bind));
        assert!(!none.allows_sockets() && !none.allows_lookup());
        assert!(Network::All.allows(addr("1.1.1.1:1"), SocketUse::Bind));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "everything",
            "connect=10.0.0.1",
            "connect=300.0.0.1:80",
            "connect=10.0.0.0/33:80",
            "connect=10.0.0.1:99999",
            "listen=90-80",
            "listen=",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn coverage_by_subnet_and_port_range() {
        let granted = Network::parse("connect=10.0.0.0/8:400-500,listen=8000-9000,lookup").unwrap();
        let fits = Network::parse("connect=10.2.0.0/16:443,listen=8080,lookup").unwrap();
        assert!(granted.covers(&fits).is_ok());
        assert!(granted.covers(&Network::none()).is_ok());
        assert_eq!(
            granted.covers(&Network::parse("connect=10.0.0.0/7:443").unwrap()),
            Err("connect=10.0.0.0/7:443".to_string())
        );
        assert_eq!(granted.covers(&Network::All), Err("all".to_string()));
        assert!(Network::All.covers(&Network::All).is_ok());
    }
}
