//! The deployment bundle: what the desktop app is built with, or what a person imports into it,
//! so that they never type a key, a pin or an onion address.
//!
//! A bundle is the signed client policy itself ([`refuge_proto::client_policy`]: authority keys,
//! the relay's onion address, the log, witnesses and quorum, posts), with its optional
//! `ministry` line (the name the app shows as the one it belongs to) and `bridge` lines (default
//! Tor bridges). `refuge-admin policy` signs it like any policy; there is no second format.
//!
//! Two ways to trust one:
//! - [`Deployment::verify`]: an app built with a bundle embedded pins that bundle's authority
//!   keys; any bundle it loads (the embedded one, or a later one the person imports) must be
//!   signed by one of them.
//! - [`Deployment::first_import`]: an app built without a bundle accepts the first one it is
//!   given if it is signed by an authority key that the bundle lists itself (trust on first
//!   use). Nothing but a person can check such a bundle: the app shows
//!   [`Deployment::authority_fingerprint`] and the ministry's name, the person compares the
//!   digits with what the ministry publishes, and only then accepts. From then on the app pins
//!   the signing key ([`Deployment::policy_source`]).
//!
//! Either way, every bridge line must parse as arti parses bridges, or the bundle is refused
//! ([`DeploymentError::BadBridge`]): a bundle is refused whole, never used in part.
//!
//! Nothing here touches the network, the disk or the clock: bytes in, a [`Deployment`] or a
//! [`DeploymentError`] out.

use crate::config::PolicySource;
use arti_client::config::BridgeConfigBuilder;
use ed25519_dalek::VerifyingKey;
use refuge_proto::client_policy::{ClientPolicy, ClientPolicyError, MAX_CLIENT_POLICY_LEN};
use refuge_proto::tlog::note::NoteError;
use sha2::{Digest, Sha512};

/// Largest bundle accepted: the largest signed client policy.
pub const MAX_BUNDLE_LEN: usize = MAX_CLIENT_POLICY_LEN;

/// A deployment bundle whose authority signature verified and whose lines (bridges included)
/// are all usable.
#[derive(Clone, Debug)]
pub struct Deployment {
    policy: ClientPolicy,
    signed: Vec<u8>,
    pinned: Vec<VerifyingKey>,
    first_use: bool,
}

impl Deployment {
    /// Verifies a bundle against the authority keys this app pins (those of the bundle it was
    /// built with): signed by one of them, which the bundle also lists; every line valid; every
    /// bridge line usable by arti.
    pub fn verify(bytes: &[u8], pinned: &[VerifyingKey]) -> Result<Self, DeploymentError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(DeploymentError::TooLarge { len: bytes.len() });
        }
        let policy = ClientPolicy::verify(bytes, pinned)
            .map_err(|e| DeploymentError::from_policy(e, false))?;
        Self::checked(policy, bytes, pinned.to_vec(), false)
    }

    /// Trust on first use, for an app built without a bundle: accepts a bundle signed by one of
    /// the authority keys it lists itself, checked otherwise like [`Deployment::verify`]. The
    /// app must show [`Deployment::authority_fingerprint`] (and [`Deployment::ministry`]) and
    /// let the person compare it with what the ministry publishes before using the bundle. The
    /// signing key is then the only pinned key ([`Deployment::policy_source`]).
    pub fn first_import(bytes: &[u8]) -> Result<Self, DeploymentError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(DeploymentError::TooLarge { len: bytes.len() });
        }
        let policy = ClientPolicy::verify_self_signed(bytes)
            .map_err(|e| DeploymentError::from_policy(e, true))?;
        let pinned = vec![*policy.signer()];
        Self::checked(policy, bytes, pinned, true)
    }

    fn checked(
        policy: ClientPolicy,
        bytes: &[u8],
        pinned: Vec<VerifyingKey>,
        first_use: bool,
    ) -> Result<Self, DeploymentError> {
        for bridge in policy.bridges() {
            let reason = match bridge.parse::<BridgeConfigBuilder>() {
                Err(e) => Some(e.to_string()),
                Ok(builder) => builder.build().err().map(|e| e.to_string()),
            };
            if let Some(reason) = reason {
                return Err(DeploymentError::BadBridge {
                    line: bridge_line_number(policy.text(), bridge),
                    bridge: bridge.clone(),
                    reason,
                });
            }
        }
        Ok(Self {
            policy,
            signed: bytes.to_vec(),
            pinned,
            first_use,
        })
    }

    /// The ministry's name, as the app shows it ("which ministry this app belongs to"), if the
    /// bundle names one.
    pub fn ministry(&self) -> Option<&str> {
        self.policy.ministry()
    }

    /// The default Tor bridge lines, each accepted by arti, in bundle order.
    pub fn bridges(&self) -> &[String] {
        self.policy.bridges()
    }

    /// The posts (id, display name), in bundle order.
    pub fn posts(&self) -> &[(String, String)] {
        self.policy.posts()
    }

    /// Whether the authority marked the bundle as a test deployment: the app uses it only when
    /// told to and shows a warning ([`crate::config::test_deployment_warning`]) on every run.
    pub fn is_test_deployment(&self) -> bool {
        self.policy.is_test_deployment()
    }

    /// Whether this bundle was accepted by [`Deployment::first_import`] (trust on first use)
    /// rather than against keys built into the app.
    pub fn is_first_use(&self) -> bool {
        self.first_use
    }

    /// The authority key whose signature was accepted.
    pub fn signer(&self) -> &VerifyingKey {
        self.policy.signer()
    }

    /// The digits a person compares with what the ministry publishes, for the key that signed
    /// this bundle.
    pub fn authority_fingerprint(&self) -> AuthorityFingerprint {
        AuthorityFingerprint::of(self.policy.signer())
    }

    /// The verified policy.
    pub fn policy(&self) -> &ClientPolicy {
        &self.policy
    }

    /// The bundle exactly as the authority signed it (what the app stores).
    pub fn signed(&self) -> &[u8] {
        &self.signed
    }

    /// What `UserClient::init` takes: the policy, its signed bytes and the keys to pin (those
    /// given to [`Deployment::verify`], or the signing key after [`Deployment::first_import`]).
    /// A test deployment is not allowed until the app calls
    /// [`PolicySource::allow_test_deployment`].
    pub fn policy_source(self) -> PolicySource {
        PolicySource {
            policy: self.policy,
            signed: self.signed,
            pinned: self.pinned,
            test_deployment_allowed: false,
        }
    }
}

/// The 1-based number of the `bridge` line holding `bridge` in a verified policy text (0 if not
/// found, which a verified policy rules out).
fn bridge_line_number(text: &str, bridge: &str) -> usize {
    text.split('\n')
        .position(|raw| {
            raw.trim_matches([' ', '\t'])
                .strip_prefix("bridge")
                .is_some_and(|r| {
                    r.starts_with([' ', '\t']) && r.trim_start_matches([' ', '\t']) == bridge
                })
        })
        .map_or(0, |i| i + 1)
}

/// What kind of [`DeploymentError`] happened, without data: for the app to pick a translated
/// sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeploymentErrorKind {
    TooLarge,
    Damaged,
    Foreign,
    Invalid,
    BadBridge,
    AppKeys,
}

/// Why a deployment bundle was refused. Each message says whose fault it is and what to do.
/// [`DeploymentError::BadBridge`] names the bridge by its line number and holds the line for the
/// app to show, but its message does not repeat it (a bridge's address is best kept out of
/// logs; arti's reason may still quote the one word it refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The file is larger than any bundle: it is not one.
    #[error(
        "this file is {len} bytes, larger than any Refuge deployment bundle (at most \
         {MAX_BUNDLE_LEN}): it is not one; ask the ministry for the bundle again"
    )]
    TooLarge { len: usize },

    /// Not a signed policy at all, or its text no longer matches the authority's signature
    /// (damaged on the way, or altered).
    #[error(
        "this file is not a Refuge deployment bundle, or it was damaged or altered on the way \
         ({detail}); do not use it: ask the ministry for it again"
    )]
    Damaged { detail: String },

    /// A well-formed bundle signed by an authority this app does not trust.
    #[error(
        "this bundle was not issued by the authority this app was built for; do not use it: \
         get the bundle from the ministry itself"
    )]
    Foreign,

    /// Signed by a trusted authority, but a line is refused: the authority's mistake.
    #[error(
        "the ministry's deployment bundle is faulty ({reason}); the ministry must issue a \
         corrected one"
    )]
    Invalid { reason: ClientPolicyError },

    /// Signed by a trusted authority, but Tor cannot use one of its bridge lines: the
    /// authority's mistake.
    #[error(
        "the ministry's deployment bundle has a bridge line that Tor cannot use (line {line}: \
         {reason}); the ministry must issue a corrected one"
    )]
    BadBridge {
        /// The line's number in the bundle's text.
        line: usize,
        /// The bridge line (not part of the message).
        bridge: String,
        /// What arti said about it.
        reason: String,
    },

    /// The authority keys built into this app cannot be used: the build is broken.
    #[error(
        "the authority keys built into this app are unusable ({reason}): this build is broken; \
         get the app again from the ministry"
    )]
    AppKeys { reason: String },
}

impl DeploymentError {
    /// The kind of error, for the app to pick a translated sentence.
    pub fn kind(&self) -> DeploymentErrorKind {
        match self {
            Self::TooLarge { .. } => DeploymentErrorKind::TooLarge,
            Self::Damaged { .. } => DeploymentErrorKind::Damaged,
            Self::Foreign => DeploymentErrorKind::Foreign,
            Self::Invalid { .. } => DeploymentErrorKind::Invalid,
            Self::BadBridge { .. } => DeploymentErrorKind::BadBridge,
            Self::AppKeys { .. } => DeploymentErrorKind::AppKeys,
        }
    }

    /// Sorts a policy error by fault. `first_use`: the trusted keys came from the bundle itself
    /// ([`Deployment::first_import`]), not from the app.
    fn from_policy(error: ClientPolicyError, first_use: bool) -> Self {
        use ClientPolicyError as E;
        match error {
            E::TooLarge { len } => Self::TooLarge { len },
            E::Note(e) => Self::Damaged {
                detail: e.to_string(),
            },
            // Signed by no key the app pins: someone else's bundle. (In a first import, the
            // trusted keys are those the text lists: a bundle signed by none of them had its
            // authority lines changed after signing.)
            E::NotSignedByPinnedKey(NoteError::NotSignedByTrustedKey { .. }) if !first_use => {
                Self::Foreign
            }
            E::NotSignedByPinnedKey(e @ NoteError::AmbiguousVerifier { .. }) if !first_use => {
                Self::AppKeys {
                    reason: e.to_string(),
                }
            }
            E::NotSignedByPinnedKey(e @ NoteError::AmbiguousVerifier { .. }) => Self::Invalid {
                reason: E::NotSignedByPinnedKey(e),
            },
            // A trusted key's signature that does not verify: the text changed after signing.
            E::NotSignedByPinnedKey(e) => Self::Damaged {
                detail: e.to_string(),
            },
            E::PinnedKey(reason) => Self::AppKeys { reason },
            // Signed by a trusted key, refused by the parser: the authority signed a bad text.
            other => Self::Invalid { reason: other },
        }
    }
}

/// Hash input prefix of [`AuthorityFingerprint`] (domain separation).
pub const FINGERPRINT_CONTEXT: &[u8] = b"refuge/authority-fingerprint/v1\n";

/// Number of 5-digit groups in an [`AuthorityFingerprint`].
pub const FINGERPRINT_GROUPS: usize = 12;

/// Sixty decimal digits, in twelve groups of five, that identify an authority key: what a person
/// compares, group by group, with what the ministry publishes (on its website, by phone) before
/// accepting an imported bundle. Digits read aloud the same in every language and can be shown
/// in the person's own numerals.
///
/// ```text
/// h = SHA-512("refuge/authority-fingerprint/v1\n" || the 32-byte Ed25519 public key)
/// group i (0..12) = (bytes 5i..5i+5 of h, as a big-endian 40-bit number) mod 100000, 5 digits
/// ```
///
/// About 199 bits: finding another key with the same digits is out of reach, so comparing all
/// the groups is as good as comparing the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthorityFingerprint {
    groups: [u32; FINGERPRINT_GROUPS],
}

impl AuthorityFingerprint {
    /// The fingerprint of an authority key.
    pub fn of(key: &VerifyingKey) -> Self {
        let hash = Sha512::new()
            .chain_update(FINGERPRINT_CONTEXT)
            .chain_update(key.as_bytes())
            .finalize();
        let mut groups = [0u32; FINGERPRINT_GROUPS];
        for (group, chunk) in groups.iter_mut().zip(hash.chunks_exact(5)) {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            *group = u32::try_from(value % 100_000).unwrap_or_default();
        }
        Self { groups }
    }

    /// The twelve groups of five digits, each zero-padded.
    pub fn groups(&self) -> [String; FINGERPRINT_GROUPS] {
        self.groups.map(|g| format!("{g:05}"))
    }

    /// All sixty digits, no separators.
    pub fn digits(&self) -> String {
        self.groups().concat()
    }

    /// The groups separated by single spaces, as shown to people.
    pub fn display(&self) -> String {
        self.groups().join(" ")
    }
}

impl std::fmt::Display for AuthorityFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl std::fmt::Debug for AuthorityFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthorityFingerprint({})", self.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use refuge_proto::client_policy::{POLICY_HEADER, POLICY_KEY_NAME, sign_policy};
    use refuge_proto::tlog::cosignature::CosignatureSigner;
    use refuge_proto::tlog::note::Ed25519Signer;
    use refuge_testkit::fixtures::authority;

    const ONION: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";
    const MINISTRY: &str = "Ministère de l’Europe et des Affaires étrangères";
    /// Bridge lines as bridges.torproject.org gives them (documentation addresses, made-up
    /// fingerprints).
    const BRIDGES: [&str; 2] = [
        "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 \
         cert=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA iat-mode=0",
        "192.0.2.2:9001 FEDCBA9876543210FEDCBA9876543210FEDCBA98",
    ];

    /// A witnessed bundle text listing `key` as its authority, with `extra` lines.
    fn text(key: &VerifyingKey, extra: &str) -> String {
        let log = Ed25519Signer::from_seed("refuge.example/directory", &[42; 32]).unwrap();
        let witness = CosignatureSigner::from_seed("witness.example", &[50; 32]).unwrap();
        format!(
            "{POLICY_HEADER}\n\
             authority {}\n\
             relay-onion {ONION}\n\
             post emb-xx Embassy of X in Y\n\
             log {}\n\
             witness w0 {}\n\
             quorum w0\n\
             ministry {MINISTRY}\n\
             bridge {}\n\
             bridge {}\n\
             {extra}",
            hex::encode(key.as_bytes()),
            log.verifier().to_vkey(),
            witness.verifier().to_vkey(),
            BRIDGES[0],
            BRIDGES[1],
        )
    }

    fn bundle(key: &SigningKey, extra: &str) -> Vec<u8> {
        sign_policy(&text(&key.verifying_key(), extra), key).unwrap()
    }

    fn other_authority() -> SigningKey {
        SigningKey::from_bytes(&[0xb8; 32])
    }

    #[test]
    fn a_bundle_signed_by_refuge_admin_verifies_and_shows_its_ministry_and_bridges() {
        // Signed the way `refuge-admin policy` signs, from a text file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.txt");
        let key = authority();
        std::fs::write(&path, text(&key.verifying_key(), "")).unwrap();
        let signed = crate::authority::sign_policy_file(&key, &path).unwrap();

        let d = Deployment::verify(
            &signed,
            &[other_authority().verifying_key(), key.verifying_key()],
        )
        .unwrap();
        assert_eq!(d.ministry(), Some(MINISTRY));
        assert_eq!(d.bridges(), BRIDGES);
        assert_eq!(
            d.posts(),
            [("emb-xx".to_string(), "Embassy of X in Y".to_string())]
        );
        assert!(!d.is_test_deployment() && !d.is_first_use());
        assert_eq!(d.signer(), &key.verifying_key());
        assert_eq!(d.signed(), signed);
        assert_eq!(d.policy().relay_onion(), Some(ONION));

        let source = d.policy_source();
        assert_eq!(source.signed, signed);
        assert_eq!(
            source.pinned,
            [other_authority().verifying_key(), key.verifying_key()]
        );
        assert!(!source.test_deployment_allowed);
        assert!(source.check_deployment().is_ok());
    }

    #[test]
    fn a_test_deployment_stays_refused_until_the_app_allows_it() {
        let d = Deployment::verify(
            &bundle(&authority(), "deployment test\n"),
            &[authority().verifying_key()],
        )
        .unwrap();
        assert!(d.is_test_deployment());
        let mut source = d.policy_source();
        assert!(source.check_deployment().is_err());
        assert!(source.allow_test_deployment(true).is_some());
        assert!(source.check_deployment().is_ok());
    }

    /// A changed byte of the text makes the trusted authority's signature fail to verify: the
    /// signature line still names the app's authority, so this is a damaged (or altered) copy
    /// of a bundle, not another authority's bundle: `Damaged` ("ask for it again"), never
    /// `Foreign` and never `Invalid` (the text is not the authority's).
    #[test]
    fn a_bundle_changed_in_one_byte_is_damaged() {
        let key = authority();
        let signed = bundle(&key, "");
        let text_len = text(&key.verifying_key(), "").len();
        for i in 0..text_len {
            let mut changed = signed.clone();
            changed[i] ^= 1;
            let error = Deployment::verify(&changed, &[key.verifying_key()]).unwrap_err();
            assert_eq!(
                error.kind(),
                DeploymentErrorKind::Damaged,
                "byte {i}: {error}"
            );
        }
        // The ministry's name, say, spoofed in place:
        let spoofed = String::from_utf8(signed)
            .unwrap()
            .replace("Europe", "Europa");
        let error = Deployment::verify(spoofed.as_bytes(), &[key.verifying_key()]).unwrap_err();
        assert_eq!(error.kind(), DeploymentErrorKind::Damaged);
        assert!(error.to_string().contains("damaged or altered"), "{error}");

        for junk in [&b""[..], b"refuge client policy v1\n", &[0xff; 100]] {
            let error = Deployment::verify(junk, &[key.verifying_key()]).unwrap_err();
            assert_eq!(error.kind(), DeploymentErrorKind::Damaged);
            let error = Deployment::first_import(junk).unwrap_err();
            assert_eq!(error.kind(), DeploymentErrorKind::Damaged);
        }
        let huge = vec![b'a'; MAX_BUNDLE_LEN + 1];
        assert_eq!(
            Deployment::verify(&huge, &[key.verifying_key()]).unwrap_err(),
            DeploymentError::TooLarge { len: huge.len() }
        );
        assert_eq!(
            Deployment::first_import(&huge).unwrap_err().kind(),
            DeploymentErrorKind::TooLarge
        );
    }

    #[test]
    fn a_bundle_from_another_authority_is_foreign() {
        let foreign = bundle(&other_authority(), "");
        let error = Deployment::verify(&foreign, &[authority().verifying_key()]).unwrap_err();
        assert_eq!(error, DeploymentError::Foreign);
        assert!(error.to_string().contains("do not use it"), "{error}");
    }

    #[test]
    fn a_bad_line_signed_by_the_authority_is_the_authoritys_mistake() {
        // `sign_policy` refuses such a text, so sign the note directly, as a broken tool would.
        let key = authority();
        let bad = text(&key.verifying_key(), "ministry Second\n");
        let note = Ed25519Signer::from_seed(POLICY_KEY_NAME, &key.to_bytes())
            .unwrap()
            .sign_note(&bad)
            .unwrap();
        let error = Deployment::verify(note.as_bytes(), &[key.verifying_key()]).unwrap_err();
        assert_eq!(error.kind(), DeploymentErrorKind::Invalid);
        let line = bad.lines().count();
        assert!(
            matches!(
                &error,
                DeploymentError::Invalid {
                    reason: ClientPolicyError::Syntax { line: l, .. }
                } if *l == line
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("ministry must issue"), "{error}");
        // In a first import too.
        let error = Deployment::first_import(note.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), DeploymentErrorKind::Invalid);
    }

    #[test]
    fn a_bridge_line_arti_refuses_is_named_by_its_line() {
        let key = authority();
        for bad in [
            // Not a fingerprint, not key=value.
            "obfs4 192.0.2.9:443 NOTAFINGERPRINT",
            // A direct bridge needs a numeric address.
            "bridge.example:443 0123456789ABCDEF0123456789ABCDEF01234567",
            // A direct bridge takes no parameters.
            "192.0.2.9:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=x",
        ] {
            let t = text(&key.verifying_key(), &format!("bridge {bad}\n"));
            let signed = sign_policy(&t, &key).expect("proto checks only the shape");
            let line = t.lines().count();
            for result in [
                Deployment::verify(&signed, &[key.verifying_key()]),
                Deployment::first_import(&signed),
            ] {
                match result {
                    Err(DeploymentError::BadBridge {
                        line: l,
                        bridge,
                        reason,
                    }) => {
                        assert_eq!((l, bridge.as_str()), (line, bad));
                        assert!(!reason.is_empty());
                    }
                    other => panic!("{bad:?}: expected BadBridge, got {other:?}"),
                }
            }
            // The message names the line, not the bridge's address.
            let error = Deployment::verify(&signed, &[key.verifying_key()]).unwrap_err();
            assert_eq!(error.kind(), DeploymentErrorKind::BadBridge);
            assert!(
                error.to_string().contains(&format!("line {line}")),
                "{error}"
            );
            assert!(!error.to_string().contains("192.0.2.9"), "{error}");
        }
        // A foreign bundle with a bad bridge is foreign first.
        let other = other_authority();
        let signed = sign_policy(
            &text(
                &other.verifying_key(),
                "bridge obfs4 192.0.2.9:443 NOTAFINGERPRINT\n",
            ),
            &other,
        )
        .unwrap();
        assert_eq!(
            Deployment::verify(&signed, &[key.verifying_key()]).unwrap_err(),
            DeploymentError::Foreign
        );
    }

    #[test]
    fn first_import_trusts_the_bundles_own_authority_and_shows_its_fingerprint() {
        let key = authority();
        let signed = bundle(&key, "");
        let d = Deployment::first_import(&signed).unwrap();
        assert!(d.is_first_use());
        assert_eq!(d.ministry(), Some(MINISTRY));
        assert_eq!(d.bridges(), BRIDGES);
        assert_eq!(d.signer(), &key.verifying_key());

        // Deterministic, and different for another key.
        let fingerprint = d.authority_fingerprint();
        assert_eq!(
            fingerprint,
            Deployment::first_import(&signed)
                .unwrap()
                .authority_fingerprint()
        );
        assert_eq!(fingerprint, AuthorityFingerprint::of(&key.verifying_key()));
        let other = Deployment::first_import(&bundle(&other_authority(), ""))
            .unwrap()
            .authority_fingerprint();
        assert_ne!(fingerprint, other);
        assert_eq!(fingerprint.groups().len(), FINGERPRINT_GROUPS);
        assert!(fingerprint.groups().iter().all(|g| g.len() == 5));
        assert_eq!(fingerprint.digits().len(), 60);
        assert!(fingerprint.digits().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(
            fingerprint.to_string().split(' ').count(),
            FINGERPRINT_GROUPS
        );

        // After the import the app pins the signing key: a bundle from another authority is
        // foreign from then on, one from the same authority verifies.
        let source = d.policy_source();
        assert_eq!(source.pinned, [key.verifying_key()]);
        assert_eq!(
            Deployment::verify(&bundle(&other_authority(), ""), &source.pinned).unwrap_err(),
            DeploymentError::Foreign
        );
        assert!(Deployment::verify(&bundle(&key, "freshness 3600\n"), &source.pinned).is_ok());

        // A bundle whose listed authority was swapped for another key after signing.
        let swapped = String::from_utf8(signed).unwrap().replace(
            &hex::encode(key.verifying_key().as_bytes()),
            &hex::encode(other_authority().verifying_key().as_bytes()),
        );
        assert_eq!(
            Deployment::first_import(swapped.as_bytes())
                .unwrap_err()
                .kind(),
            DeploymentErrorKind::Damaged
        );
    }

    /// Known answer: the fingerprint of the key of 32 bytes 0xa7, computed independently
    /// (Python's hashlib) from the rule in [`AuthorityFingerprint`]'s documentation.
    #[test]
    fn the_fingerprint_follows_its_documented_rule() {
        let key = authority().verifying_key();
        assert_eq!(
            AuthorityFingerprint::of(&key).display(),
            KNOWN_FINGERPRINT,
            "key {}",
            hex::encode(key.as_bytes())
        );
    }

    /// Public key c9571eeb4aa9de1159858bc6a3d4a626c4f4845e8eebd5f554b2ec0f50c68860.
    const KNOWN_FINGERPRINT: &str =
        "31894 02811 07600 10851 69840 85390 74189 61969 37744 59003 63960 89007";

    #[test]
    fn every_error_has_its_own_kind() {
        let errors = [
            DeploymentError::TooLarge { len: 1 },
            DeploymentError::Damaged {
                detail: String::new(),
            },
            DeploymentError::Foreign,
            DeploymentError::Invalid {
                reason: ClientPolicyError::Missing("post"),
            },
            DeploymentError::BadBridge {
                line: 1,
                bridge: String::new(),
                reason: String::new(),
            },
            DeploymentError::AppKeys {
                reason: String::new(),
            },
        ];
        let kinds: std::collections::HashSet<_> = errors.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds.len(), errors.len());
    }
}
