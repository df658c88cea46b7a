//! PeerConn: peer-to-peer chat and file transfer over direct TCP sockets.
//!
//! The library holds the network engine ([`net`], which knows nothing of
//! Slint), file transfer's disk workers ([`files`]), what this computer is
//! called and where it can be reached ([`hostinfo`]), where logs and data
//! live ([`logging`]), and the Slint window ([`gui`]) that drives the
//! engine. The binary adds the headless command line.

pub mod files;
#[cfg(feature = "gui")]
pub mod gui;
pub mod hostinfo;
pub mod logging;
pub mod nearby;
pub mod net;
pub mod reach;
pub mod text;
