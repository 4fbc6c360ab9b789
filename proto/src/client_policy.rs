//! The client policy: what a client trusts, signed by the authority and shipped with the client.
//! It is never fetched from the relay (the relay is what it protects against).
//!
//! The policy is a C2SP signed note whose key name is [`POLICY_KEY_NAME`], signed by an authority
//! key. Its text:
//!
//! ```text
//! refuge client policy v1
//! authority <64 hex: Ed25519 public key>          one or more (see below)
//! freshness <seconds>                             optional, default 86400
//! relay-onion <56 base32>.onion                   optional
//! relay-quic <host:port> <64 hex: SHA-256 of the relay's SPKI, its quic-spki-pin> optional
//! post <id> <display name>                        one or more
//! log <vkey> [<url>]                              exactly one (C2SP tlog-policy)
//! witness <name> <vkey> [<url>]                   C2SP tlog-policy
//! group <name> all|any|<k> <name>...              C2SP tlog-policy
//! quorum <name>|none                              exactly one (C2SP tlog-policy)
//! deployment test                                 optional: a test deployment (see below)
//! ministry <display name>                         optional: whose deployment this is
//! bridge <Tor bridge line>                        zero or more: default bridges for the app
//! ```
//!
//! Blank lines and lines starting with `#` are ignored, as in tlog-policy. The parser is strict:
//! an unknown keyword, a second `freshness`, `relay-onion`, `relay-quic` or `ministry` line, a
//! repeated authority key, post id or bridge line, or a malformed value is refused with its line
//! number. The `log`, `witness`, `group` and `quorum` lines are handed to
//! [`crate::tlog::policy::Policy`], which reports the same line numbers.
//!
//! The `authority` keys are the trusted set the directory log starts with: its first entry must
//! be signed by one of them. After an authority rotation, a new policy keeps listing the keys the
//! log started with (the replay retires them at the rotation entry) and adds the new key, which
//! must be listed because it signs the policy.
//!
//! A policy with `quorum none` requires no witness, so no signed timestamp exists and a relay
//! could serve an old log (one without a revocation) for ever: it is refused unless it also says
//! `deployment test`. Clients refuse a test deployment unless the person running them opts in
//! explicitly, and then warn on every run.
//!
//! A signed policy is also the *deployment bundle* the desktop app is built with or imports: the
//! optional `ministry` line names the ministry the app shows it belongs to, and the `bridge`
//! lines are Tor bridge lines (`[transport] host:port FINGERPRINT [k=v ...]`, as
//! bridges.torproject.org gives them) the app offers when Tor is blocked. Display names (posts
//! and the ministry) may be any UTF-8 text up to [`MAX_POST_NAME_LEN`] bytes, but never a
//! control character or a Unicode bidirectional control (U+061C, U+200E, U+200F,
//! U+202A–U+202E, U+2066–U+2069) or line separator (U+2028, U+2029): these could make one name
//! render like another. Bridge lines are checked here for their shape only (printable ASCII, at
//! most [`MAX_BRIDGE_LINE_LEN`] bytes, an optional `Bridge` word and transport name, then a
//! `host:port`); the client parses each with its Tor implementation when it loads the bundle.
//!
//! The note signature is domain separated from the authority's other signatures by the text's
//! first line (directory entries start with `refuge/directory-entry/v1\n`).

use crate::tlog::note::{Ed25519Signer, Ed25519Verifier, NoteError, UncheckedNote, Verifier};
use crate::tlog::policy::{Policy, PolicyError, PolicyLog};
use crate::tlog::witness::parse_decimal;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// The first line of every policy text.
pub const POLICY_HEADER: &str = "refuge client policy v1";

/// The note key name of the authority's policy signature.
pub const POLICY_KEY_NAME: &str = "refuge-authority";

/// Largest signed policy accepted.
pub const MAX_CLIENT_POLICY_LEN: usize = 64 * 1024;

/// Default freshness: a client refuses a checkpoint whose witnesses last cosigned it longer ago.
pub const DEFAULT_FRESHNESS_SECS: u64 = 24 * 60 * 60;

/// Largest freshness a policy may set (a week): a longer one would let a relay hide revocations
/// for that long.
pub const MAX_FRESHNESS_SECS: u64 = 7 * 24 * 60 * 60;

/// Most authority keys and most posts (each) in a policy.
pub const MAX_POLICY_ITEMS: usize = 256;

/// Longest display name of a post, or of the ministry, in bytes.
pub const MAX_POST_NAME_LEN: usize = 128;

/// Most `bridge` lines in a policy.
pub const MAX_BRIDGES: usize = 32;

/// Longest bridge line (after the `bridge` keyword), in bytes.
pub const MAX_BRIDGE_LINE_LEN: usize = 1024;

/// Why a client policy was refused. A policy is made and signed by the authority: an error in
/// its text is the authority's to fix; a signature error means the file is not the authority's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientPolicyError {
    #[error("client policy is {len} bytes, larger than the limit of {MAX_CLIENT_POLICY_LEN}")]
    TooLarge { len: usize },
    #[error("client policy is not a valid signed note: {0}")]
    Note(NoteError),
    #[error(
        "client policy is not signed by an authority key this client trusts: it was not made by \
         the ministry authority, or this client is out of date ({0})"
    )]
    NotSignedByPinnedKey(NoteError),
    #[error(
        "client policy is signed by authority key {0}, which the policy itself does not list as \
         an authority: the authority must list its own key"
    )]
    SignerNotListed(String),
    #[error("client policy line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("client policy: {0}")]
    Tlog(#[from] PolicyError),
    #[error("client policy has no {0} line")]
    Missing(&'static str),
    #[error("cannot sign client policy: {0}")]
    Sign(String),
    #[error("an authority key built into this client is unusable ({0}): the build is broken")]
    PinnedKey(String),
    #[error(
        "client policy requires no witness (`quorum none`) and is not marked `deployment test`: \
         without witnesses a relay could serve an old staff directory (one without a \
         revocation) for ever; the authority must list witnesses and a quorum"
    )]
    Unwitnessed,
}

fn syntax(line: usize, what: impl Into<String>) -> ClientPolicyError {
    ClientPolicyError::Syntax {
        line,
        what: what.into(),
    }
}

/// The relay's QUIC address and certificate pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayQuic {
    /// `host:port`, as written in the policy.
    pub address: String,
    /// SHA-256 of the relay certificate's SubjectPublicKeyInfo: the pin the relay writes to its
    /// `quic-spki-pin` file and prints at start, which clients check the served certificate
    /// against.
    pub spki_sha256: [u8; 32],
}

/// A client policy whose authority signature verified against a key pinned in the client.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    text: String,
    signer: VerifyingKey,
    authorities: Vec<VerifyingKey>,
    freshness_secs: u64,
    relay_onion: Option<String>,
    relay_quic: Option<RelayQuic>,
    posts: Vec<(String, String)>,
    tlog: Policy,
    test_deployment: bool,
    ministry: Option<String>,
    bridges: Vec<String>,
}

/// Signs a policy text with an authority key (done offline by `refuge-admin`). The text must
/// parse and list the signing key as an authority.
pub fn sign_policy(text: &str, authority: &SigningKey) -> Result<Vec<u8>, ClientPolicyError> {
    let body = Body::parse(text)?;
    let key = authority.verifying_key();
    if !body.authorities.contains(&key) {
        return Err(ClientPolicyError::SignerNotListed(hex::encode(
            key.as_bytes(),
        )));
    }
    let seed = zeroize::Zeroizing::new(authority.to_bytes());
    let signer = Ed25519Signer::from_seed(POLICY_KEY_NAME, &seed)
        .map_err(|e| ClientPolicyError::Sign(e.to_string()))?;
    let note = signer
        .sign_note(text)
        .map_err(|e| ClientPolicyError::Sign(e.to_string()))?;
    Ok(note.into_bytes())
}

impl ClientPolicy {
    /// Verifies a signed policy: signed by one of the `pinned` authority keys (built into the
    /// client), which the policy must also list as an authority; then parses its text.
    pub fn verify(bytes: &[u8], pinned: &[VerifyingKey]) -> Result<Self, ClientPolicyError> {
        if bytes.len() > MAX_CLIENT_POLICY_LEN {
            return Err(ClientPolicyError::TooLarge { len: bytes.len() });
        }
        let note = UncheckedNote::parse(bytes).map_err(ClientPolicyError::Note)?;
        let mut verifiers: Vec<Ed25519Verifier> = Vec::new();
        for key in pinned {
            if verifiers.iter().all(|v| v.public_key() != key) {
                let v = Ed25519Verifier::new(POLICY_KEY_NAME, *key)
                    .map_err(|e| ClientPolicyError::PinnedKey(e.to_string()))?;
                verifiers.push(v);
            }
        }
        let trusted: Vec<&dyn Verifier> = verifiers.iter().map(|v| v as &dyn Verifier).collect();
        let note = note
            .verify(&trusted)
            .map_err(ClientPolicyError::NotSignedByPinnedKey)?;
        let body = Body::parse(note.text())?;
        // Every pinned key that signed must be listed; one listed signer is enough.
        let signer = verifiers
            .iter()
            .filter(|v| note.is_signed_by(*v))
            .map(|v| *v.public_key())
            .find(|k| body.authorities.contains(k));
        let Some(signer) = signer else {
            let first = verifiers
                .iter()
                .find(|v| note.is_signed_by(*v))
                .map(|v| hex::encode(v.public_key().as_bytes()))
                .unwrap_or_default();
            return Err(ClientPolicyError::SignerNotListed(first));
        };
        Ok(Self {
            text: note.text().to_string(),
            signer,
            authorities: body.authorities,
            freshness_secs: body.freshness_secs.unwrap_or(DEFAULT_FRESHNESS_SECS),
            relay_onion: body.relay_onion,
            relay_quic: body.relay_quic,
            posts: body.posts,
            tlog: body.tlog,
            test_deployment: body.test_deployment,
            ministry: body.ministry,
            bridges: body.bridges,
        })
    }

    /// Trust on first use: verifies a signed policy against the authority keys listed in its
    /// own (not yet verified) text, for an app that was built without a policy and imports one.
    /// Nothing vouches for such a policy but its signature by a key it names itself: the caller
    /// must have a person compare the signer ([`ClientPolicy::signer`]) with what the ministry
    /// publishes before trusting it, and pin that key afterwards.
    ///
    /// The candidate keys are read leniently (well-formed `authority` lines only); everything
    /// else is checked as in [`ClientPolicy::verify`], signature first, so that a damaged text
    /// is reported as a signature failure rather than as the authority's syntax error.
    pub fn verify_self_signed(bytes: &[u8]) -> Result<Self, ClientPolicyError> {
        if bytes.len() > MAX_CLIENT_POLICY_LEN {
            return Err(ClientPolicyError::TooLarge { len: bytes.len() });
        }
        // The note's format first: after it, `bytes` is UTF-8 with the text before the last
        // blank line.
        UncheckedNote::parse(bytes).map_err(ClientPolicyError::Note)?;
        let encoded = std::str::from_utf8(bytes)
            .map_err(|_| ClientPolicyError::Note(NoteError::Malformed("not valid UTF-8".into())))?;
        let text = encoded
            .rfind("\n\n")
            .map_or("", |split| &encoded[..split + 1]);
        let mut claimed: Vec<VerifyingKey> = Vec::new();
        for raw in text.split('\n') {
            let line = raw.trim_matches([' ', '\t']);
            let Some(rest) = line
                .strip_prefix("authority")
                .filter(|r| r.starts_with([' ', '\t']))
            else {
                continue;
            };
            let key = hex32(0, rest.trim_start_matches([' ', '\t']), "")
                .ok()
                .and_then(|k| VerifyingKey::from_bytes(&k).ok());
            if let Some(key) = key
                && !claimed.contains(&key)
                && claimed.len() < MAX_POLICY_ITEMS
            {
                claimed.push(key);
            }
        }
        Self::verify(bytes, &claimed)
    }

    /// Whether the authority marked this policy as a test deployment (`deployment test`).
    /// Clients use such a policy only when told to explicitly, and warn on every run.
    pub fn is_test_deployment(&self) -> bool {
        self.test_deployment
    }

    /// Whether the policy requires no witness cosignature (`quorum none`; only allowed in a
    /// test deployment).
    pub fn is_unwitnessed(&self) -> bool {
        self.tlog.quorum_name() == crate::tlog::policy::NONE
    }

    /// The policy text as signed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The pinned authority key whose signature was accepted.
    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// The authority keys that the directory log's first entries must be signed by.
    pub fn authorities(&self) -> &[VerifyingKey] {
        &self.authorities
    }

    /// The witness and log trust policy (C2SP tlog-policy).
    pub fn tlog_policy(&self) -> &Policy {
        &self.tlog
    }

    /// The directory log (the only `log` line).
    pub fn log(&self) -> &PolicyLog {
        &self.tlog.logs()[0]
    }

    /// The directory log's origin (the first line of its checkpoints).
    pub fn log_origin(&self) -> &str {
        self.log().origin()
    }

    /// The directory log's key.
    pub fn log_key(&self) -> &Ed25519Verifier {
        self.log().key()
    }

    /// The directory log's verifier key string (`<origin>+<key id>+<base64>`).
    pub fn log_vkey(&self) -> String {
        self.log().key().to_vkey()
    }

    /// How old the newest quorum of cosignatures may be before a checkpoint is stale.
    pub fn freshness_secs(&self) -> u64 {
        self.freshness_secs
    }

    /// The relay's onion address (`<56 base32>.onion`), if the policy names one.
    pub fn relay_onion(&self) -> Option<&str> {
        self.relay_onion.as_deref()
    }

    /// The relay's QUIC address and certificate pin, if the policy names them.
    pub fn relay_quic(&self) -> Option<&RelayQuic> {
        self.relay_quic.as_ref()
    }

    /// The posts (id, display name), in policy order.
    pub fn posts(&self) -> &[(String, String)] {
        &self.posts
    }

    /// The ministry's name (`ministry` line), which the app shows as the one it belongs to.
    pub fn ministry(&self) -> Option<&str> {
        self.ministry.as_deref()
    }

    /// The default Tor bridge lines (`bridge` lines), in policy order, as written. Checked for
    /// their shape only: the client parses them with its Tor implementation.
    pub fn bridges(&self) -> &[String] {
        &self.bridges
    }
}

/// The parsed text of a policy.
struct Body {
    authorities: Vec<VerifyingKey>,
    freshness_secs: Option<u64>,
    relay_onion: Option<String>,
    relay_quic: Option<RelayQuic>,
    posts: Vec<(String, String)>,
    tlog: Policy,
    test_deployment: bool,
    ministry: Option<String>,
    bridges: Vec<String>,
}

fn hex32(line: usize, s: &str, what: &str) -> Result<[u8; 32], ClientPolicyError> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(syntax(
            line,
            format!("{what} must be 64 lowercase hex digits"),
        ));
    }
    let mut out = [0; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| syntax(line, format!("{what}: {e}")))?;
    Ok(out)
}

fn valid_post_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A v3 onion address: 56 base32 characters (35 bytes: key, checksum, version 3, so the last
/// character is `d`) and `.onion`. The checksum is left to the Tor client that connects.
fn valid_onion(s: &str) -> bool {
    s.strip_suffix(".onion").is_some_and(|host| {
        host.len() == 56
            && host.ends_with('d')
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// Characters refused in a display name besides control characters: the Unicode bidirectional
/// controls (embeddings, overrides, isolates, marks), which can make a name render as another
/// (reordered, or mirrored into the surrounding text), and the line and paragraph separators.
const REFUSED_IN_NAMES: &[char] = &[
    '\u{061C}', // ARABIC LETTER MARK
    '\u{200E}', // LEFT-TO-RIGHT MARK
    '\u{200F}', // RIGHT-TO-LEFT MARK
    '\u{2028}', // LINE SEPARATOR
    '\u{2029}', // PARAGRAPH SEPARATOR
    '\u{202A}', // LEFT-TO-RIGHT EMBEDDING
    '\u{202B}', // RIGHT-TO-LEFT EMBEDDING
    '\u{202C}', // POP DIRECTIONAL FORMATTING
    '\u{202D}', // LEFT-TO-RIGHT OVERRIDE
    '\u{202E}', // RIGHT-TO-LEFT OVERRIDE
    '\u{2066}', // LEFT-TO-RIGHT ISOLATE
    '\u{2067}', // RIGHT-TO-LEFT ISOLATE
    '\u{2068}', // FIRST STRONG ISOLATE
    '\u{2069}', // POP DIRECTIONAL ISOLATE
];

/// Checks a display name (a post's or the ministry's) on line `line`: not blank, at most
/// [`MAX_POST_NAME_LEN`] bytes, no control character (tab included) or character of
/// [`REFUSED_IN_NAMES`]. Letters of any script, and the joiners Persian needs (U+200C, U+200D),
/// are allowed.
fn check_display_name(line: usize, what: &str, name: &str) -> Result<(), ClientPolicyError> {
    if name.trim().is_empty() {
        return Err(syntax(line, format!("{what} is empty")));
    }
    if name.len() > MAX_POST_NAME_LEN {
        return Err(syntax(
            line,
            format!("{what} is longer than {MAX_POST_NAME_LEN} bytes"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || REFUSED_IN_NAMES.contains(c))
    {
        return Err(syntax(
            line,
            format!(
                "{what} contains U+{:04X}, a control or bidirectional formatting character that \
                 could make it display as another name",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Checks the shape of a bridge line (`[Bridge] [transport] host:port [FINGERPRINT...]
/// [k=v...]`): printable ASCII without tabs, bounded, with a `host:port` as its first field
/// or after a transport name. Whether Tor accepts it is for the client to check.
fn check_bridge_line(line: usize, bridge: &str) -> Result<(), ClientPolicyError> {
    if bridge.len() > MAX_BRIDGE_LINE_LEN {
        return Err(syntax(
            line,
            format!("bridge line longer than {MAX_BRIDGE_LINE_LEN} bytes"),
        ));
    }
    if !bridge.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(syntax(
            line,
            "a bridge line is printable ASCII only (no control character or tab)",
        ));
    }
    let mut fields = bridge.split(' ').filter(|f| !f.is_empty()).peekable();
    if fields
        .peek()
        .is_some_and(|f| f.eq_ignore_ascii_case("bridge"))
    {
        fields.next();
    }
    let first = fields.next().unwrap_or_default();
    let is_transport = !first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let address = if is_transport {
        fields.next()
    } else {
        Some(first)
    };
    if !address.is_some_and(valid_host_port) {
        return Err(syntax(
            line,
            "expected `bridge [transport] <host:port> <fingerprint> [key=value ...]`, as \
             bridges.torproject.org gives bridge lines",
        ));
    }
    Ok(())
}

/// A bridge line with its spaces normalised, to find duplicates.
fn bridge_words(bridge: &str) -> Vec<&str> {
    bridge.split(' ').filter(|f| !f.is_empty()).collect()
}

fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    host_ok && parse_decimal(port).is_some_and(|p| (1..=65535).contains(&p))
}

impl Body {
    fn parse(text: &str) -> Result<Self, ClientPolicyError> {
        if text.len() > MAX_CLIENT_POLICY_LEN {
            return Err(ClientPolicyError::TooLarge { len: text.len() });
        }
        let mut lines = text.split('\n');
        if lines.next() != Some(POLICY_HEADER) {
            return Err(syntax(
                1,
                format!("the first line must be {POLICY_HEADER:?}"),
            ));
        }
        let mut authorities = Vec::new();
        let mut freshness_secs = None;
        let mut relay_onion = None;
        let mut relay_quic = None;
        let mut posts: Vec<(String, String)> = Vec::new();
        let mut test_deployment = false;
        let mut ministry = None;
        let mut bridges: Vec<String> = Vec::new();
        let mut logs = 0;
        // The tlog-policy lines, with every other line blanked so that line numbers agree.
        let mut tlog = String::from("\n");
        for (i, raw) in lines.enumerate() {
            let n = i + 2;
            if raw.chars().any(|c| c.is_control() && c != '\t') {
                return Err(syntax(n, "control character"));
            }
            let line = raw.trim_matches([' ', '\t']);
            let (keyword, rest) = line
                .split_once([' ', '\t'])
                .map_or((line, ""), |(k, r)| (k, r.trim_start_matches([' ', '\t'])));
            match keyword {
                "" => {}
                k if k.starts_with('#') => {}
                "log" | "witness" | "group" | "quorum" => {
                    logs += usize::from(keyword == "log");
                    if logs > 1 {
                        return Err(syntax(n, "a second `log` line (a client follows one log)"));
                    }
                    tlog.push_str(raw);
                }
                "authority" => {
                    let key = hex32(n, rest, "an authority key")?;
                    let key = VerifyingKey::from_bytes(&key)
                        .map_err(|_| syntax(n, "not a valid Ed25519 public key"))?;
                    if authorities.contains(&key) {
                        return Err(syntax(n, "this authority key is already listed"));
                    }
                    if authorities.len() == MAX_POLICY_ITEMS {
                        return Err(syntax(
                            n,
                            format!("more than {MAX_POLICY_ITEMS} authorities"),
                        ));
                    }
                    authorities.push(key);
                }
                "freshness" => {
                    if freshness_secs.is_some() {
                        return Err(syntax(n, "a second `freshness` line"));
                    }
                    let secs = parse_decimal(rest)
                        .filter(|s| (1..=MAX_FRESHNESS_SECS).contains(s))
                        .ok_or_else(|| {
                            syntax(
                                n,
                                format!(
                                    "freshness must be a number of seconds from 1 to \
                                     {MAX_FRESHNESS_SECS}"
                                ),
                            )
                        })?;
                    freshness_secs = Some(secs);
                }
                "relay-onion" => {
                    if relay_onion.is_some() {
                        return Err(syntax(n, "a second `relay-onion` line"));
                    }
                    if !valid_onion(rest) {
                        return Err(syntax(
                            n,
                            "expected `relay-onion <56 base32 characters>.onion` (a v3 address)",
                        ));
                    }
                    relay_onion = Some(rest.to_string());
                }
                "relay-quic" => {
                    if relay_quic.is_some() {
                        return Err(syntax(n, "a second `relay-quic` line"));
                    }
                    let (address, pin) = rest
                        .split_once([' ', '\t'])
                        .map(|(a, p)| (a, p.trim_start_matches([' ', '\t'])))
                        .filter(|(a, _)| valid_host_port(a))
                        .ok_or_else(|| {
                            syntax(n, "expected `relay-quic <host:port> <sha256 hex>`")
                        })?;
                    relay_quic = Some(RelayQuic {
                        address: address.to_string(),
                        spki_sha256: hex32(n, pin, "the SPKI pin")?,
                    });
                }
                "post" => {
                    let (id, name) = rest
                        .split_once([' ', '\t'])
                        .map(|(i, n)| (i, n.trim_start_matches([' ', '\t'])))
                        .ok_or_else(|| syntax(n, "expected `post <id> <display name>`"))?;
                    if !valid_post_id(id) {
                        return Err(syntax(
                            n,
                            format!("post id {id:?} is not a short lowercase name"),
                        ));
                    }
                    check_display_name(n, "post name", name)?;
                    if posts.iter().any(|(p, _)| p == id) {
                        return Err(syntax(n, format!("post {id:?} is already listed")));
                    }
                    if posts.len() == MAX_POLICY_ITEMS {
                        return Err(syntax(n, format!("more than {MAX_POLICY_ITEMS} posts")));
                    }
                    posts.push((id.to_string(), name.to_string()));
                }
                "deployment" => {
                    if test_deployment {
                        return Err(syntax(n, "a second `deployment` line"));
                    }
                    if rest != "test" {
                        return Err(syntax(
                            n,
                            "expected `deployment test` (a policy without it is a real \
                             deployment)",
                        ));
                    }
                    test_deployment = true;
                }
                "ministry" => {
                    if ministry.is_some() {
                        return Err(syntax(n, "a second `ministry` line"));
                    }
                    check_display_name(n, "the ministry name", rest)?;
                    ministry = Some(rest.to_string());
                }
                "bridge" => {
                    check_bridge_line(n, rest)?;
                    if bridges
                        .iter()
                        .any(|b| bridge_words(b) == bridge_words(rest))
                    {
                        return Err(syntax(n, "this bridge line is already listed"));
                    }
                    if bridges.len() == MAX_BRIDGES {
                        return Err(syntax(n, format!("more than {MAX_BRIDGES} bridge lines")));
                    }
                    bridges.push(rest.to_string());
                }
                other => {
                    return Err(syntax(
                        n,
                        format!(
                            "unknown keyword {other:?} (expected authority, freshness, \
                             relay-onion, relay-quic, post, log, witness, group, quorum, \
                             deployment, ministry or bridge)"
                        ),
                    ));
                }
            }
            tlog.push('\n');
        }
        // `split` yields one empty piece after the final newline; drop its newline again.
        tlog.pop();
        let tlog = Policy::parse(tlog.as_bytes())?;
        if authorities.is_empty() {
            return Err(ClientPolicyError::Missing("authority"));
        }
        if posts.is_empty() {
            return Err(ClientPolicyError::Missing("post"));
        }
        if tlog.logs().is_empty() {
            return Err(ClientPolicyError::Missing("log"));
        }
        if tlog.quorum_name() == crate::tlog::policy::NONE && !test_deployment {
            return Err(ClientPolicyError::Unwitnessed);
        }
        Ok(Self {
            authorities,
            freshness_secs,
            relay_onion,
            relay_quic,
            posts,
            tlog,
            test_deployment,
            ministry,
            bridges,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
