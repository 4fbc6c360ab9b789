//! Refuge's desktop apps (ADR 0011): the Slint component library and screens (`slint/`), their
//! translations (`lang/`), and the Rust that drives them. `refuge-app` is the at-risk user's
//! app ([`user`]); `refuge-inbox-app` is the post staff's Inbox ([`inbox`], issue 17), built on the
//! same parts.

/// The Rust that slint-build generates from `slint/*.slint`: Slint's own code, held to Slint's
/// standards rather than ours (it unwraps, and holds `todo!()` for paths it never takes).
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::todo,
    clippy::unimplemented,
    missing_docs,
    unused,
    unused_qualifications,
    path_statements
)]
mod generated {
    slint::include_modules!();
}
pub use generated::*;

pub mod bidi;
pub mod files;
pub mod inbox;
pub mod lang;
pub mod offscreen;
pub mod prefs;
pub mod qr;
pub mod strength;
pub mod user;

/// The deployment bundle built into this binary (`REFUGE_DEPLOYMENT_BUNDLE` at build time), or
/// empty.
pub const EMBEDDED_BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/deployment.bundle"));

/// What the Licences page says.
pub const LICENCES: &str = "Refuge: GNU Affero General Public License v3.0 only.\n\
Slint: GNU General Public License v3.0 only (the option Refuge uses; see docs/adr/0011).\n\
Signal's libsignal: GNU Affero General Public License v3.0 only.\n\
Arti (Tor): MIT or Apache-2.0.\n\
Noto Sans, Noto Sans Arabic: SIL Open Font License 1.1.\n\
The other Rust crates: MIT, Apache-2.0, BSD or ISC (listed in the package's copyright file).";
