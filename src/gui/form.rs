//! The Listen and Connect forms, checked before anything is created: a
//! mistake names the field and the problem (the words are in `copy.rs`).

use std::net::{IpAddr, SocketAddr};

use crate::net::{pairing, KeyPin, PeerLink};

use super::copy;

/// Checks the Listen / Connect form.
pub fn parse_form(name: &str, address: &str, port: &str, listen: bool) -> Result<SocketAddr, String> {
    if let Err(why) = crate::net::frame::check_name(name.trim()) {
        return Err(copy::bad_name(&why));
    }
    let address = address.trim();
    let ip: IpAddr = match address {
        "" if listen => IpAddr::from([0, 0, 0, 0]),
        "" => return Err(copy::NO_ADDRESS.into()),
        a => a.trim_matches(['[', ']']).parse().map_err(|_| copy::not_an_address(a))?,
    };
    if !listen && ip.is_unspecified() {
        return Err(copy::cannot_connect_to(ip));
    }
    let port = port.trim();
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        Ok(0) if listen => 0,
        Ok(p) => return Err(copy::port_out_of_range(p)),
        Err(_) if port.is_empty() => return Err(copy::NO_PORT.into()),
        Err(_) => return Err(copy::not_a_port(port)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Checks the pairing code field: `None` when it is empty (and not
/// required), the code as typed otherwise.
pub fn parse_code(code: &str, required: bool) -> Result<Option<String>, String> {
    let code = code.trim();
    if code.is_empty() {
        return if required { Err(copy::NO_PAIRING_CODE.into()) } else { Ok(None) };
    }
    pairing::check_code(code).map_err(|why| copy::bad_pairing_code(&why))?;
    Ok(Some(code.to_owned()))
}

/// What a link fills in the Connect form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkForm {
    pub address: String,
    pub port: String,
    pub code: String,
    /// The pinned key (for `parse_pin`) and its fingerprint to show.
    pub pin: String,
    pub fingerprint: String,
}

/// Reads `text` as a link: `None` when it is not meant as one (an address
/// being typed), the mistake when it is not whole.
pub fn read_link(text: &str) -> Option<Result<LinkForm, String>> {
    if !PeerLink::looks_like(text) {
        return None;
    }
    Some(PeerLink::parse(text).map_err(|e| copy::bad_link(&e.to_string())).map(|link| LinkForm {
        address: link.host.clone(),
        port: link.port.to_string(),
        code: link.code.clone().unwrap_or_default(),
        pin: link.pin.to_string(),
        fingerprint: link.pin.fingerprint(),
    }))
}

/// The pinned key from the form ("" for none).
pub fn parse_pin(pin: &str) -> Result<Option<KeyPin>, String> {
    match pin.trim() {
        "" => Ok(None),
        pin => KeyPin::parse(pin).map(Some).map_err(|e| copy::bad_pin(&e.to_string())),
    }
}

/// A port that is free right now, to propose in the Listen form.
pub fn free_port() -> Option<u16> {
    let probe = std::net::TcpListener::bind(("0.0.0.0", 0)).ok()?;
    Some(probe.local_addr().ok()?.port())
}

#[cfg(test)]
mod tests {
    use super::{parse_code, parse_form};

    #[test]
    fn form_mistakes_name_the_field() {
        assert!(parse_form("", "1.2.3.4", "5000", false).unwrap_err().starts_with("Name:"));
        assert!(parse_form("me", "1.2.3", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "0.0.0.0", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "1.2.3.4", "70000", false).unwrap_err().contains("out of range"));
        assert!(parse_form("me", "1.2.3.4", "", false).unwrap_err().starts_with("Port:"));
        assert!(parse_form("me", "1.2.3.4", "http", false).unwrap_err().starts_with("Port:"));
        assert_eq!(parse_form("me", "", "0", true).unwrap(), "0.0.0.0:0".parse().unwrap());
        assert_eq!(parse_form("me", "[::1]", "5000", false).unwrap(), "[::1]:5000".parse().unwrap());
    }

    #[test]
    fn a_pasted_link_fills_the_form_and_a_broken_one_names_what_is_missing() {
        use super::read_link;
        assert_eq!(read_link("192.168.1.7"), None, "an address being typed");
        let key = "85dfd0cd699079768b6828e8856eda34eb850e1ce6f4b38f84ddbd0a6790c23e";
        let form = read_link(&format!(" peerconn://[fe80::1]:50000?code=4821-0937#{key} ")).unwrap().unwrap();
        assert_eq!((form.address.as_str(), form.port.as_str(), form.code.as_str()), ("fe80::1", "50000", "4821-0937"));
        assert_eq!((form.pin.as_str(), form.fingerprint.as_str()), (key, "85df-d0cd-6990-7976-8b68"));
        assert_eq!(parse_form("me", &form.address, &form.port, false).unwrap(), "[fe80::1]:50000".parse().unwrap());
        assert!(super::parse_pin(&form.pin).unwrap().unwrap().is_full());
        let broken = read_link("peerconn://192.168.1.7:50000").unwrap().unwrap_err();
        assert!(broken.starts_with("Link: this link is not whole: it has no key"), "{broken}");
        assert!(super::parse_pin("3f2a").unwrap_err().starts_with("Key from the link:"));
    }

    #[test]
    fn pairing_code_mistakes_name_the_field() {
        assert_eq!(parse_code("", false), Ok(None));
        assert_eq!(parse_code("  4821-0937 ", true), Ok(Some("4821-0937".into())));
        assert!(parse_code("", true).unwrap_err().starts_with("Pairing code:"));
        assert!(parse_code("12", false).unwrap_err().starts_with("Pairing code:"));
        let generated = crate::net::pairing::new_code();
        assert_eq!(parse_code(&generated, true), Ok(Some(generated.clone())));
    }
}
