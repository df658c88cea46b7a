//! One small adapter per Slint global (`HostAdapter`, `PeerAdapter`,
//! `ChatAdapter` in ui/adapters.slint), in the manner of Slint's todo-mvc:
//! each maps the plain state (`state.rs`) to its global's Slint structs and
//! enums in one place, and connects the global's callbacks to the
//! controller. Nothing else in the crate sets a Slint property.

pub mod chat;
pub mod host;
pub mod peers;
pub mod qr;
