//! Socket set-up the reactor needs: listeners made with socket2 so their
//! options are set before bind, stream tuning, and what a failed bind
//! means in words.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, TcpKeepalive, Type};

/// Backlog of a listening socket.
const LISTEN_BACKLOG: i32 = 128;

/// A listening socket made with socket2 so its options are set before bind.
pub(super) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // On Windows SO_REUSEADDR lets another program steal the port; its
    // default already allows a quick rebind.
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "::" then accepts IPv4 peers too, where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Chat wants small messages out at once; keepalive lets the OS notice a
/// vanished peer even between our own heartbeats.
pub(super) fn tune_stream(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY not set: {e}");
    }
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30));
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        log::debug!("keepalive not set: {e}");
    }
}

pub(super) fn listen_error(addr: SocketAddr, e: &io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {port} is already in use on {}", addr.ip()),
        io::ErrorKind::PermissionDenied if port != 0 && port < 1024 => {
            format!("port {port} is below 1024 and needs administrator rights; choose a port from 1024 to 65535")
        }
        io::ErrorKind::AddrNotAvailable => format!("{} is not an address of this computer", addr.ip()),
        _ => format!("cannot listen on {addr}: {e}"),
    }
}
