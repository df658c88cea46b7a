//! Reachable from another network: a port mapping asked of the router,
//! with PCP (RFC 6887) first and NAT-PMP (RFC 6886) after it, both small
//! enough to write here, over UDP to the default gateway's port 5351, and
//! UPnP IGD last (SSDP and SOAP, with `igd-next`'s blocking client: no
//! async runtime, no TLS).
//!
//! A [`Lease`] runs on its own thread (the requests wait on the network,
//! so never on the reactor or the window's thread): it maps the port,
//! says what it got or exactly why not, renews the mapping at half its
//! lifetime while it lives, and removes it when it is stopped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// The port PCP and NAT-PMP servers listen on.
pub const SERVER_PORT: u16 = 5351;

/// The lifetime asked for; the lease renews at half of what is granted.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// How a mapping was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Pcp,
    NatPmp,
    Upnp,
}

impl Via {
    /// A word for scripts (`reachable {addr, via}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Pcp => "pcp",
            Via::NatPmp => "nat-pmp",
            Via::Upnp => "upnp",
        }
    }
}

/// Why this listener cannot be reached from another network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// No default gateway, or none answered PCP or NAT-PMP.
    NoGateway(String),
    /// The router answered, and refused.
    Refused(String),
    /// The router's own outside address is private: another router is in
    /// front of it (double NAT).
    DoubleNat(Ipv4Addr),
    /// The outside address is in 100.64.0.0/10: the provider's carrier-
    /// grade NAT is in front, and no mapping on this router can help.
    CarrierGrade(Ipv4Addr),
    /// The router says it has no usable outside address (NAT-PMP result
    /// 3, PCP NETWORK_FAILURE): its own outside address is private or
    /// shared, so another NAT is in front of it.
    BehindAnotherNat,
    /// Only IPv4 listeners are mapped.
    NotIpv4,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::NoGateway(why) => write!(
                f,
                "no router answered a port mapping request ({why}); turn on UPnP/NAT-PMP in the router, or forward \
                 the port by hand"
            ),
            Unreachable::Refused(why) => write!(f, "the router refused the port mapping: {why}"),
            Unreachable::DoubleNat(ip) => write!(
                f,
                "the router's outside address {ip} is itself private: another router is in front of it (double \
                 NAT), so a mapping here cannot help; map the port on the outer router, or put this one in bridge mode"
            ),
            Unreachable::CarrierGrade(ip) => write!(
                f,
                "the router's outside address {ip} is in 100.64.0.0/10: your provider shares one address between \
                 customers (carrier-grade NAT), so no mapping can help; ask them for a public IPv4 address, or use \
                 IPv6"
            ),
            Unreachable::BehindAnotherNat => f.write_str(
                "the router has no usable outside address of its own: it sits behind another NAT (a second \
                 router, or the provider's carrier-grade NAT), so a mapping on it cannot help; map the port on the \
                 outer router, or ask the provider for a public IPv4 address, or use IPv6",
            ),
            Unreachable::NotIpv4 => f.write_str("only IPv4 listeners are mapped on the router"),
        }
    }
}

impl Unreachable {
    /// A word for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Unreachable::NoGateway(_) => "no_gateway",
            Unreachable::Refused(_) => "refused",
            Unreachable::DoubleNat(_) => "double_nat",
            Unreachable::CarrierGrade(_) => "carrier_grade_nat",
            Unreachable::BehindAnotherNat => "behind_another_nat",
            Unreachable::NotIpv4 => "not_ipv4",
        }
    }
}

/// A mapping the router granted.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Where other networks reach the listener.
    pub external: SocketAddr,
    pub via: Via,
    pub lifetime: Duration,
    gateway: Ipv4Addr,
    local: SocketAddrV4,
    nonce: [u8; 12],
    /// The UPnP gateway that granted it.
    upnp: Option<Box<igd_next::Gateway>>,
}

/// What a lease reports.
#[derive(Clone, Debug)]
pub enum LeaseEvent {
    Mapped(Mapping),
    Failed(Unreachable),
}

/// Which protocols to try, in order: `PEERCONN_PORT_MAPPING` may name
/// them (`pcp`, `nat-pmp`, comma-separated) where a router mishandles one.
pub fn protocols() -> Vec<Via> {
    match std::env::var("PEERCONN_PORT_MAPPING") {
        Ok(list) => list
            .split(',')
            .filter_map(|p| match p.trim() {
                "pcp" => Some(Via::Pcp),
                "nat-pmp" | "natpmp" => Some(Via::NatPmp),
                "upnp" => Some(Via::Upnp),
                _ => None,
            })
            .collect(),
        Err(_) => vec![Via::Pcp, Via::NatPmp, Via::Upnp],
    }
}

/// Maps `local` (the listener's address; an unspecified one is replaced
/// by the address this computer reaches the gateway from) on `gateway`.
pub fn map(gateway: Ipv4Addr, local: SocketAddr, lifetime: Duration) -> Result<Mapping, Unreachable> {
    let local = match local {
        SocketAddr::V4(local) => local,
        // `::` takes IPv4 too (where the system allows dual stack).
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, v6.port()),
        SocketAddr::V6(_) => return Err(Unreachable::NotIpv4),
    };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((gateway, SERVER_PORT)).map(|_| s))
        .map_err(|e| Unreachable::NoGateway(format!("cannot reach {gateway}: {e}")))?;
    let from = match socket.local_addr() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        _ => *local.ip(),
    };
    let local = SocketAddrV4::new(if local.ip().is_unspecified() { from } else { *local.ip() }, local.port());
    let (mut silent, mut refused) = (Vec::new(), None);
    for via in protocols() {
        let nonce = random_nonce();
        let mut mapping = Mapping { external: local.into(), via, lifetime, gateway, local, nonce, upnp: None };
        let got = match via {
            Via::Pcp => pcp_map(&socket, &mut mapping, lifetime),
            Via::NatPmp => natpmp_map(&socket, &mut mapping, lifetime),
            Via::Upnp => upnp_map(&mut mapping, lifetime),
        };
        match got {
            Ok(()) => return classify(mapping),
            Err(Step::Silent) => silent.push(via.as_str()),
            Err(Step::Unsupported) => silent.push(via.as_str()),
            Err(Step::NoOutside) => return Err(Unreachable::BehindAnotherNat),
            // The next protocol may say more (miniupnpd answers PCP with
            // NO_RESOURCES where NAT-PMP says it has no outside address).
            Err(Step::Refused(why)) => refused = refused.or(Some(why)),
        }
    }
    if let Some(why) = refused {
        // A router that refuses because its own outside address is
        // private says so in the address it reports, when it does.
        return Err(match natpmp_external(&socket) {
            Some(ip) if is_carrier_grade(ip) => Unreachable::CarrierGrade(ip),
            Some(ip) if ip.is_private() => Unreachable::DoubleNat(ip),
            _ => Unreachable::Refused(why),
        });
    }
    // Some routers answer a refused mapping with silence (miniupnpd does
    // for a port its rules deny, and when its own outside address is
    // private): if it still tells its outside address, it is there.
    match natpmp_external(&socket) {
        Some(ip) if is_carrier_grade(ip) => Err(Unreachable::CarrierGrade(ip)),
        Some(ip) if ip.is_private() => Err(Unreachable::DoubleNat(ip)),
        Some(_) => Err(Unreachable::Refused(format!(
            "it answers, but gave no mapping for port {} (it may allow mappings only for some ports or some \
             computers)",
            local.port()
        ))),
        None => Err(Unreachable::NoGateway(format!("{gateway} did not answer {}", silent.join(" or ")))),
    }
}

/// Renews `mapping` (same ports); its lifetime is updated.
pub fn renew(mapping: &mut Mapping) -> Result<(), Unreachable> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((mapping.gateway, SERVER_PORT)).map(|_| s))
        .map_err(|e| Unreachable::NoGateway(e.to_string()))?;
    let lifetime = LIFETIME;
    let result = match mapping.via {
        Via::Pcp => pcp_map(&socket, mapping, lifetime),
        Via::NatPmp => natpmp_map(&socket, mapping, lifetime),
        Via::Upnp => upnp_map(mapping, lifetime),
    };
    result.map_err(|step| match step {
        Step::Refused(why) => Unreachable::Refused(why),
        Step::NoOutside => Unreachable::BehindAnotherNat,
        Step::Silent | Step::Unsupported => Unreachable::NoGateway("the router stopped answering".into()),
    })
}

/// Removes `mapping` from the router (best effort).
pub fn unmap(mapping: &Mapping) {
    if let Some(gateway) = &mapping.upnp {
        let _ = gateway.remove_port(igd_next::PortMappingProtocol::TCP, mapping.external.port());
        return;
    }
    let Ok(socket) =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|s| s.connect((mapping.gateway, SERVER_PORT)).map(|_| s))
    else {
        return;
    };
    let mut gone = mapping.clone();
    let _ = match mapping.via {
        Via::Pcp => pcp_map(&socket, &mut gone, Duration::ZERO),
        Via::NatPmp | Via::Upnp => natpmp_map(&socket, &mut gone, Duration::ZERO),
    };
}

enum Step {
    Silent,
    Unsupported,
    /// The router has no usable outside address.
    NoOutside,
    Refused(String),
}

/// Sends `request` and waits for an answer that `accept` takes, resending
/// after 250, 500 and 1000 ms (the RFCs' schedule, shortened).
fn exchange(socket: &UdpSocket, request: &[u8], accept: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1100];
    for wait in [250, 500, 1000] {
        socket.send(request).ok()?;
        let _ = socket.set_read_timeout(Some(Duration::from_millis(wait)));
        let until = std::time::Instant::now() + Duration::from_millis(wait);
        while std::time::Instant::now() < until {
            match socket.recv(&mut buf) {
                Ok(n) if accept(&buf[..n]) => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                // Nothing listens on the gateway's port: no point waiting.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
                Err(_) => break,
            }
        }
    }
    None
}

fn pcp_map(socket: &UdpSocket, mapping: &mut Mapping, lifetime: Duration) -> Result<(), Step> {
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let mut request = Vec::with_capacity(60);
    request.extend_from_slice(&[2, 1, 0, 0]);
    request.extend_from_slice(&secs.to_be_bytes());
    request.extend_from_slice(&mapped(*mapping.local.ip()).octets());
    request.extend_from_slice(&mapping.nonce);
    request.extend_from_slice(&[6, 0, 0, 0]);
    request.extend_from_slice(&mapping.local.port().to_be_bytes());
    // The external port we had (renewal), or the same as ours.
    let suggested = if mapping.external.port() != 0 { mapping.external.port() } else { mapping.local.port() };
    request.extend_from_slice(&suggested.to_be_bytes());
    request.extend_from_slice(&mapped(Ipv4Addr::UNSPECIFIED).octets());
    let nonce = mapping.nonce;
    let answer = exchange(socket, &request, |r| {
        // A NAT-PMP server answers a PCP request with version 0.
        (r.len() >= 4 && r[0] == 0) || (r.len() >= 60 && r[0] == 2 && r[1] == 0x81 && r[24..36] == nonce)
    })
    .ok_or(Step::Silent)?;
    if answer[0] == 0 {
        return Err(Step::Unsupported);
    }
    match answer[3] {
        0 => {}
        1 => return Err(Step::Unsupported),
        7 => return Err(Step::NoOutside),
        code => return Err(Step::Refused(format!("{} (PCP result {code})", pcp_result(code)))),
    }
    let granted = u32::from_be_bytes([answer[4], answer[5], answer[6], answer[7]]);
    let port = u16::from_be_bytes([answer[42], answer[43]]);
    let ip: [u8; 16] = answer[44..60].try_into().map_err(|_| Step::Silent)?;
    let ip = Ipv6Addr::from(ip).to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(Ipv6Addr::from(ip)));
    mapping.external = SocketAddr::new(ip, port);
    mapping.lifetime = Duration::from_secs(granted.into());
    Ok(())
}

fn natpmp_map(socket: &UdpSocket, mapping: &mut Mapping, lifetime: Duration) -> Result<(), Step> {
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let suggested = if lifetime.is_zero() { 0 } else { mapping.external.port() };
    let mut request = vec![0, 2, 0, 0];
    request.extend_from_slice(&mapping.local.port().to_be_bytes());
    request.extend_from_slice(&suggested.to_be_bytes());
    request.extend_from_slice(&secs.to_be_bytes());
    let answer = exchange(socket, &request, |r| r.len() >= 16 && r[0] == 0 && r[1] == 130).ok_or(Step::Silent)?;
    match u16::from_be_bytes([answer[2], answer[3]]) {
        0 => {}
        3 => return Err(Step::NoOutside),
        code => return Err(Step::Refused(format!("{} (NAT-PMP result {code})", natpmp_result(code)))),
    }
    if lifetime.is_zero() {
        return Ok(());
    }
    let port = u16::from_be_bytes([answer[10], answer[11]]);
    let granted = u32::from_be_bytes([answer[12], answer[13], answer[14], answer[15]]);
    let ip = natpmp_external(socket).ok_or(Step::Silent)?;
    mapping.external = SocketAddr::new(ip.into(), port);
    mapping.lifetime = Duration::from_secs(granted.into());
    Ok(())
}

/// UPnP IGD: finds the gateway by SSDP (or keeps the one found), and
/// asks it to forward the same port (or any port, when that one is taken).
fn upnp_map(mapping: &mut Mapping, lifetime: Duration) -> Result<(), Step> {
    use igd_next::PortMappingProtocol::TCP;
    let gateway = match &mapping.upnp {
        Some(gateway) => gateway.clone(),
        None => {
            let mut options = igd_next::SearchOptions::default();
            options.timeout = Some(Duration::from_secs(2));
            options.single_search_timeout = Some(Duration::from_secs(2));
            Box::new(igd_next::search_gateway(options).map_err(|_| Step::Silent)?)
        }
    };
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let external_ip = gateway.get_external_ip().map_err(|e| Step::Refused(format!("UPnP: {e}")))?;
    if let IpAddr::V4(ip) = external_ip {
        // A router whose own outside address is private or shared cannot
        // be reached through, whatever it maps.
        if ip.is_unspecified() {
            return Err(Step::NoOutside);
        }
    }
    let local = SocketAddr::V4(mapping.local);
    let wanted = if mapping.external.port() != 0 { mapping.external.port() } else { mapping.local.port() };
    let port = match gateway.add_port(TCP, wanted, local, secs, "PeerConn") {
        Ok(()) => wanted,
        Err(_) => {
            gateway.add_any_port(TCP, local, secs, "PeerConn").map_err(|e| Step::Refused(format!("UPnP: {e}")))?
        }
    };
    mapping.external = SocketAddr::new(external_ip, port);
    mapping.lifetime = if secs == 0 { LIFETIME } else { lifetime };
    mapping.upnp = Some(gateway);
    Ok(())
}

/// The router's outside address, by NAT-PMP.
fn natpmp_external(socket: &UdpSocket) -> Option<Ipv4Addr> {
    let answer = exchange(socket, &[0, 0], |r| r.len() >= 12 && r[0] == 0 && r[1] == 128)?;
    (u16::from_be_bytes([answer[2], answer[3]]) == 0)
        .then(|| Ipv4Addr::new(answer[8], answer[9], answer[10], answer[11]))
}

/// What the mapping's outside address means.
fn classify(mapping: Mapping) -> Result<Mapping, Unreachable> {
    match mapping.external.ip() {
        IpAddr::V4(ip) if is_carrier_grade(ip) => {
            unmap(&mapping);
            Err(Unreachable::CarrierGrade(ip))
        }
        IpAddr::V4(ip) if ip.is_private() => {
            unmap(&mapping);
            Err(Unreachable::DoubleNat(ip))
        }
        _ => Ok(mapping),
    }
}

fn is_carrier_grade(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (64..128).contains(&b)
}

fn mapped(ip: Ipv4Addr) -> Ipv6Addr {
    ip.to_ipv6_mapped()
}

/// PCP's mapping nonce: random (from a fresh X25519 public key, the same
/// source as the Noise keys).
fn random_nonce() -> [u8; 12] {
    let mut nonce = [0; 12];
    nonce.copy_from_slice(&crate::net::Identity::generate().public()[..12]);
    nonce
}

/// RFC 6887's result codes.
fn pcp_result(code: u8) -> &'static str {
    match code {
        2 => "not authorized (the router does not allow mappings for this computer)",
        3 | 6 => "the router did not understand the request",
        4 | 5 | 9 => "the router does not support this kind of mapping",
        8 => "the router has no resources for another mapping",
        10 => "this computer has used up its mappings on the router",
        11 => "the router cannot give an outside port",
        12 => "the router sees this computer at another address (another NAT in between?)",
        _ => "the router gave another PCP error",
    }
}

fn natpmp_result(code: u16) -> &'static str {
    match code {
        2 => "not authorized (port mapping is off in the router, or not allowed for this computer)",
        4 => "the router has no resources left for another mapping",
        _ => "the router gave another NAT-PMP error",
    }
}

/// The default IPv4 gateway: from the routing table on Linux; elsewhere
/// the first address of this computer's /24 (what home routers use).
pub fn default_gateway() -> Option<Ipv4Addr> {
    #[cfg(target_os = "linux")]
    if let Ok(table) = std::fs::read_to_string("/proc/net/route") {
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 2 && fields[1] == "00000000" {
                if let Ok(gw) = u32::from_str_radix(fields[2], 16) {
                    return Some(Ipv4Addr::from(gw.to_le_bytes()));
                }
            }
        }
        return None;
    }
    let [a, b, c, _] = crate::hostinfo::HostInfo::detect().primary().octets();
    (a != 127).then_some(Ipv4Addr::new(a, b, c, 1))
}

/// A mapping kept while it lives, on its own thread.
pub struct Lease {
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Maps `local` and keeps it; what happens arrives on the receiver.
    pub fn start(local: SocketAddr) -> (Lease, Receiver<LeaseEvent>) {
        let (tx, events) = crossbeam_channel::bounded(8);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("peerconn-map".into())
            .spawn(move || {
                let Some(gateway) = default_gateway() else {
                    let _ = tx
                        .send(LeaseEvent::Failed(Unreachable::NoGateway("this computer has no default route".into())));
                    return;
                };
                let mut mapping = match map(gateway, local, LIFETIME) {
                    Ok(mapping) => mapping,
                    Err(why) => {
                        let _ = tx.send(LeaseEvent::Failed(why));
                        return;
                    }
                };
                log::info!("port {} mapped to {} by {}", local.port(), mapping.external, mapping.via.as_str());
                let _ = tx.send(LeaseEvent::Mapped(mapping.clone()));
                loop {
                    let half = (mapping.lifetime / 2).max(Duration::from_secs(10));
                    match stopped.recv_timeout(half) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                    let before = mapping.external;
                    match renew(&mut mapping) {
                        Ok(()) if mapping.external == before => {}
                        Ok(()) => {
                            let _ = tx.send(LeaseEvent::Mapped(mapping.clone()));
                        }
                        Err(why) => {
                            log::warn!("the port mapping could not be renewed: {why}");
                            let _ = tx.send(LeaseEvent::Failed(why));
                        }
                    }
                }
                unmap(&mapping);
                log::info!("port mapping {} removed", mapping.external);
            })
            .ok();
        (Lease { stop, thread }, events)
    }

    /// Removes the mapping without waiting (its thread tells the router,
    /// then ends): for the window's thread, which must not wait.
    pub fn stop_soon(mut self) {
        let _ = self.stop.try_send(());
        self.thread = None;
    }

    /// Removes the mapping and waits for the router to hear it (at most
    /// the request's retries, under 2 s).
    pub fn stop(mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
