//! `see-signer`: the only process that holds the PTO's P-384 signing key.
//!
//! The daemon (which parses the guest's rings) asks it to sign over a Unix socket, one
//! statement at a time ([`protocol`]); the signer signs only what its policy allows
//! ([`policy`]: the statement names a resource version in the signer's own read-only view of
//! the store, with the digest the store holds), within its rate limits ([`rate`]), and records
//! every signature in its own audit log ([`server`]). The key sits in locked, undumpable
//! memory ([`key`]), and the process is confined with `see-sandbox` ([`confine`]).
//!
//! Without the `service` feature the crate is [`protocol`] and [`statement`] alone: the
//! parsers the fuzz target drives.

#![warn(missing_docs)]

pub mod protocol;
pub mod statement;

#[cfg(feature = "service")]
pub mod client;
#[cfg(feature = "service")]
pub mod confine;
#[cfg(feature = "service")]
pub mod key;
#[cfg(feature = "service")]
pub mod policy;
#[cfg(feature = "service")]
pub mod rate;
#[cfg(feature = "service")]
pub mod server;

#[cfg(feature = "service")]
pub use client::RemoteSigner;
pub use protocol::{Refusal, Reply, Request};
