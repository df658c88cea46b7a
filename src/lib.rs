//! PeerConn: peer-to-peer chat and file transfer over direct TCP sockets.
//!
//! The library holds everything that does not draw pixels: the network
//! engine ([`net`]), what this computer is called and where it can be
//! reached ([`hostinfo`]), and where logs and data live ([`logging`]). The
//! binary adds the Slint window and the headless command line on top.

pub mod files;
pub mod hostinfo;
pub mod logging;
pub mod net;
