//! The Listen and Connect forms, checked before anything is created: a
//! mistake names the field and the problem (the words are in `copy.rs`).

use std::net::{IpAddr, SocketAddr};

use crate::net::pairing;

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
    fn pairing_code_mistakes_name_the_field() {
        assert_eq!(parse_code("", false), Ok(None));
        assert_eq!(parse_code("  4821-0937 ", true), Ok(Some("4821-0937".into())));
        assert!(parse_code("", true).unwrap_err().starts_with("Pairing code:"));
        assert!(parse_code("12", false).unwrap_err().starts_with("Pairing code:"));
        let generated = crate::net::pairing::new_code();
        assert_eq!(parse_code(&generated, true), Ok(Some(generated.clone())));
    }
}
