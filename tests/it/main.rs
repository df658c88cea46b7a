//! PeerConn's integration tests: one binary, a module per area.
//!
//! Everything talks over loopback (127.0.0.1 and ::1) only.

mod support;

mod channel_model;
mod channel_props;
mod chat;
mod cli;
#[cfg(target_os = "linux")]
mod flood;
mod folder;
mod hostile;
mod hostile_files;
mod hostile_table;
mod lifecycle;
mod link;
mod many;
mod mitm;
mod name_props;
mod name_rules;
#[cfg(target_os = "linux")]
mod nearby;
mod protocol;
#[cfg(target_os = "linux")]
mod reach;
mod reconnect;
mod resume;
mod security;
mod session;
mod session_props;
mod transfer;
