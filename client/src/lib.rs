#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod app;
pub mod attachment;
pub mod audit;
pub mod authority;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod deployment;
pub mod directory;
pub mod disappearing;
pub mod envelope;
pub mod error;
pub mod events;
pub mod files;
pub mod net;
pub mod outbox;
pub mod peer;
pub mod prekeys;
pub mod relay;
pub mod secret;
pub mod staff;
pub mod store;
pub mod submit;
pub mod sync;
pub mod transfer;
pub mod transport;
pub mod user;

pub use error::{Blame, ClientError, Result};

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod forward_secrecy_tests;
#[cfg(test)]
mod kit_relay;
#[cfg(test)]
mod reader_tests;
