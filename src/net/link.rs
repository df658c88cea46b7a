//! Links that carry the key: `peerconn://HOST:PORT?code=CODE#FINGERPRINT`.
//!
//! A listener gives its link to the person who should connect (copied,
//! or as a QR code). The fragment pins the listener's key: the connecting
//! side checks the key the handshake presents against it and stops before
//! it sends its own key or any frame when they differ, so a first contact
//! by link is authenticated, not trust on first use. The code, when the
//! listener asks for one, rides in the query.
//!
//! The pin in links we make is the whole 256-bit key hash (64 hex digits);
//! its first 20 digits are the fingerprint people compare, so a person
//! can still read it off. A pin of those 20 digits alone (80 bits) is
//! accepted too, for links typed from a fingerprint.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::pairing;
use super::secure::{self, hex, unhex};

/// The scheme of our links.
pub const SCHEME: &str = "peerconn://";

/// A key expected from the peer, by (a prefix of) its fingerprint hash.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPin {
    /// 10 bytes (a typed fingerprint) or 32 (a link we made).
    hash: Vec<u8>,
}

impl KeyPin {
    /// The pin of `key`, at full length.
    pub fn of(key: &[u8; 32]) -> KeyPin {
        KeyPin { hash: secure::fingerprint_hash(key).to_vec() }
    }

    /// Reads a pin: 64 hex digits, or the 20 of a fingerprint, with or
    /// without the dashes between groups.
    pub fn parse(text: &str) -> Result<KeyPin, LinkError> {
        let digits: String = text.trim().chars().filter(|c| *c != '-' && *c != ' ').collect();
        let digits = digits.to_ascii_lowercase();
        if !matches!(digits.len(), 20 | 64) {
            return Err(LinkError::Pin(format!(
                "the key's fingerprint has {} hex digits; it needs 64 (or the 20 of a fingerprint like \
                 3f2a-9b1c-0d4e-77a1-c0de)",
                digits.chars().count()
            )));
        }
        match unhex(&digits) {
            Some(hash) => Ok(KeyPin { hash }),
            None => Err(LinkError::Pin("the key's fingerprint may only hold the hex digits 0-9 and a-f".into())),
        }
    }

    /// True when `key` is the key pinned.
    pub fn matches(&self, key: &[u8; 32]) -> bool {
        let hash = secure::fingerprint_hash(key);
        // Not secret (anyone may know a key's hash), so a plain compare.
        hash.starts_with(&self.hash)
    }

    /// The fingerprint people compare (the first 20 digits, grouped).
    pub fn fingerprint(&self) -> String {
        let hex = hex(&self.hash[..10]);
        let groups: Vec<&str> = (0..5).map(|i| &hex[i * 4..i * 4 + 4]).collect();
        groups.join("-")
    }

    /// True for a pin of the whole hash (not a typed 80-bit fingerprint).
    pub fn is_full(&self) -> bool {
        self.hash.len() == 32
    }
}

impl fmt::Debug for KeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPin({})", hex(&self.hash))
    }
}

impl fmt::Display for KeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.hash))
    }
}

/// A parsed link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    /// The host as written: an IP address or a name to look up.
    pub host: String,
    pub port: u16,
    pub pin: KeyPin,
    /// The pairing code the listener asks for, when it asks for one.
    pub code: Option<String>,
}

/// Why a text is not a link we can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// It does not start with `peerconn://`.
    NotALink,
    /// The host or port is missing or wrong.
    Address(String),
    /// No key, or a key that is not a fingerprint.
    Pin(String),
    /// The pairing code in it is not one.
    Code(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::NotALink => write!(f, "a link starts with {SCHEME}"),
            LinkError::Address(why) | LinkError::Pin(why) => write!(f, "this link is not whole: {why}"),
            LinkError::Code(why) => write!(f, "the pairing code in this link is not valid: {why}"),
        }
    }
}

impl std::error::Error for LinkError {}

impl PeerLink {
    /// The link to a listener at `host`:`port` whose key is `key`.
    pub fn new(host: IpAddr, port: u16, key: &[u8; 32], code: Option<&str>) -> PeerLink {
        PeerLink { host: host.to_string(), port, pin: KeyPin::of(key), code: code.map(str::to_owned) }
    }

    /// True when `text` looks meant as a link (so a form should read it
    /// as one and report what is wrong with it, not as an address).
    pub fn looks_like(text: &str) -> bool {
        text.trim().get(..SCHEME.len()).is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
    }

    /// Reads a link, with an error a person can act on.
    pub fn parse(text: &str) -> Result<PeerLink, LinkError> {
        let text = text.trim();
        if !PeerLink::looks_like(text) {
            return Err(LinkError::NotALink);
        }
        let rest = &text[SCHEME.len()..];
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = split_host_port(authority)?;
        let Some(fragment) = fragment.filter(|f| !f.trim().is_empty()) else {
            return Err(LinkError::Pin("it has no key after '#' (copy the whole link)".into()));
        };
        let pin = KeyPin::parse(fragment)?;
        let mut code = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "code" {
                let value = percent_decode(value).ok_or_else(|| LinkError::Code("it is not written right".into()))?;
                pairing::check_code(&value).map_err(LinkError::Code)?;
                code = Some(value);
            }
            // Other parameters are for later versions: ignored.
        }
        Ok(PeerLink { host, port, pin, code })
    }

    /// The host and port, as `HOST:PORT` (brackets around IPv6).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address when the host is an IP address (no lookup needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for PeerLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.address())?;
        if let Some(code) = &self.code {
            write!(f, "?code={}", percent_encode(code))?;
        }
        write!(f, "#{}", self.pin)
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), LinkError> {
    let missing = || LinkError::Address("it has no port after the host (like 192.168.1.7:50000)".into());
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) =
            inner.split_once(']').ok_or_else(|| LinkError::Address("an IPv6 address lacks its ']'".into()))?;
        (host, after.strip_prefix(':').ok_or_else(missing)?)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or_else(missing)?;
        if host.contains(':') {
            return Err(LinkError::Address("an IPv6 address must be in brackets, like [fe80::1]:50000".into()));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(LinkError::Address("it has no host before the port".into()));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || "/@\\".contains(c)) {
        return Err(LinkError::Address(format!("'{}' is not a host name or address", super::printable(host))));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(LinkError::Address(format!("'{}' is not an IPv6 address", super::printable(host))));
    }
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            return Err(LinkError::Address(format!(
                "'{}' is not a port; ports go from 1 to 65535",
                super::printable(port)
            )))
        }
        Ok(p) => p,
    };
    Ok((host.to_owned(), port))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
