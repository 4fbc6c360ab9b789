#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admission;
pub mod backup;
#[cfg(feature = "onion")]
pub mod cli;
pub mod config;
#[cfg(feature = "onion")]
pub mod config_file;
pub mod handler;
pub mod identity;
pub mod limits;
pub mod metrics;
#[cfg(feature = "onion")]
pub mod onion;
#[cfg(feature = "onion")]
pub mod ops;
pub mod quic;
pub mod reject;
pub mod roster;
#[cfg(feature = "onion")]
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod stream;
pub mod tcp;
pub mod tlog;

#[cfg(test)]
mod fixtures;
