use super::*;
use crate::tlog::cosignature::CosignatureSigner;

pub(crate) fn authority() -> SigningKey {
    SigningKey::from_bytes(&[41; 32])
}

pub(crate) fn log_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed("refuge.example/directory", &[42; 32]).unwrap()
}

pub(crate) fn witness_signers() -> Vec<CosignatureSigner> {
    (0..3u8)
        .map(|i| CosignatureSigner::from_seed(&format!("witness-{i}.example"), &[50 + i; 32]))
        .collect::<Result<_, _>>()
        .unwrap()
}

const ONION: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";

/// A policy text: the given authority, log and witnesses (2 of 3), and `extra` lines.
pub(crate) fn policy_text(authority: &VerifyingKey, extra: &str) -> String {
    let w = witness_signers();
    format!(
        "{POLICY_HEADER}\n\
         authority {}\n\
         post emb-xx Embassy of X in Y\n\
         post con-zz Consulate Z\n\
         log {}\n\
         witness w0 {}\n\
         witness w1 {}\n\
         witness w2 {}\n\
         group main 2 w0 w1 w2\n\
         quorum main\n\
         {extra}",
        hex::encode(authority.as_bytes()),
        log_signer().verifier().to_vkey(),
        w[0].verifier().to_vkey(),
        w[1].verifier().to_vkey(),
        w[2].verifier().to_vkey(),
    )
}

fn verify_text(text: &str) -> Result<ClientPolicy, ClientPolicyError> {
    let a = authority();
    let signed = Ed25519Signer::from_seed(POLICY_KEY_NAME, &a.to_bytes())
        .unwrap()
        .sign_note(text)
        .unwrap();
    ClientPolicy::verify(signed.as_bytes(), &[a.verifying_key()])
}

fn line_error(text: &str) -> usize {
    match verify_text(text) {
        Err(ClientPolicyError::Syntax { line, .. }) => line,
        Err(ClientPolicyError::Tlog(PolicyError::Syntax { line, .. })) => line,
        Err(ClientPolicyError::Tlog(PolicyError::Key { line, .. })) => line,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn signed_policy_round_trips() {
    let a = authority();
    let extra = format!(
        "# comment\n\nfreshness 3600\nrelay-onion {ONION}\nrelay-quic relay.example:4433 {}\n",
        "ab".repeat(32)
    );
    let text = policy_text(&a.verifying_key(), &extra);
    let bytes = sign_policy(&text, &a).unwrap();
    let p = ClientPolicy::verify(&bytes, &[a.verifying_key()]).unwrap();
    assert_eq!(p.text(), text);
    assert_eq!(p.signer(), &a.verifying_key());
    assert_eq!(p.authorities(), [a.verifying_key()]);
    assert_eq!(p.freshness_secs(), 3600);
    assert_eq!(p.relay_onion(), Some(ONION));
    let quic = p.relay_quic().unwrap();
    assert_eq!(quic.address, "relay.example:4433");
    assert_eq!(quic.spki_sha256, [0xab; 32]);
    assert_eq!(
        p.posts(),
        [
            ("emb-xx".to_string(), "Embassy of X in Y".to_string()),
            ("con-zz".to_string(), "Consulate Z".to_string())
        ]
    );
    assert_eq!(p.log_origin(), "refuge.example/directory");
    assert_eq!(p.log_vkey(), log_signer().verifier().to_vkey());
    assert_eq!(p.tlog_policy().witnesses().len(), 3);
    assert_eq!(p.tlog_policy().quorum_name(), "main");

    let minimal = ClientPolicy::verify(
        &sign_policy(&policy_text(&a.verifying_key(), ""), &a).unwrap(),
        &[a.verifying_key()],
    )
    .unwrap();
    assert_eq!(minimal.freshness_secs(), DEFAULT_FRESHNESS_SECS);
    assert_eq!(minimal.relay_onion(), None);
    assert_eq!(minimal.relay_quic(), None);
}

#[test]
fn only_a_pinned_and_listed_authority_is_accepted() {
    let a = authority();
    let other = SigningKey::from_bytes(&[7; 32]);
    let bytes = sign_policy(&policy_text(&a.verifying_key(), ""), &a).unwrap();
    assert!(matches!(
        ClientPolicy::verify(&bytes, &[other.verifying_key()]),
        Err(ClientPolicyError::NotSignedByPinnedKey(_))
    ));
    // A pinned key must also be listed in the body it signs.
    assert!(matches!(
        sign_policy(&policy_text(&a.verifying_key(), ""), &other),
        Err(ClientPolicyError::SignerNotListed(_))
    ));
    let forged = Ed25519Signer::from_seed(POLICY_KEY_NAME, &other.to_bytes())
        .unwrap()
        .sign_note(&policy_text(&a.verifying_key(), ""))
        .unwrap();
    assert!(matches!(
        ClientPolicy::verify(
            forged.as_bytes(),
            &[other.verifying_key(), a.verifying_key()]
        ),
        Err(ClientPolicyError::SignerNotListed(_))
    ));
    // Any altered byte of the text is refused.
    let text_len = policy_text(&a.verifying_key(), "").len();
    for i in 0..text_len {
        let mut b = bytes.clone();
        b[i] ^= 1;
        assert!(
            ClientPolicy::verify(&b, &[a.verifying_key()]).is_err(),
            "flip at byte {i} accepted"
        );
    }
    assert!(matches!(
        ClientPolicy::verify(&vec![b'a'; MAX_CLIENT_POLICY_LEN + 1], &[a.verifying_key()]),
        Err(ClientPolicyError::TooLarge { .. })
    ));
}

#[test]
fn strict_parsing_names_the_line() {
    let a = authority().verifying_key();
    let base = policy_text(&a, "");
    let at_end = base.lines().count() + 1;
    let bad_extras = [
        "colour blue\n".to_string(),
        "freshness 60\nfreshness 60\n".to_string(),
        "freshness 0\n".to_string(),
        "freshness 007\n".to_string(),
        format!("freshness {}\n", MAX_FRESHNESS_SECS + 1),
        format!("authority {}\n", hex::encode(a.as_bytes())),
        format!("authority {}\n", hex::encode(a.as_bytes()).to_uppercase()),
        "authority 00\n".to_string(),
        "post emb-xx Again\n".to_string(),
        "post EMB Bad id\n".to_string(),
        "post emb-qq\n".to_string(),
        format!("post emb-qq {}\n", "n".repeat(MAX_POST_NAME_LEN + 1)),
        "relay-onion example.onion\n".to_string(),
        format!("relay-onion {ONION}\nrelay-onion {ONION}\n"),
        format!("relay-quic relay.example {}\n", "ab".repeat(32)),
        format!("relay-quic relay.example:0 {}\n", "ab".repeat(32)),
        "relay-quic relay.example:443 abcd\n".to_string(),
        format!("log {}\n", log_signer().verifier().to_vkey()),
        "witness w9 nonsense\n".to_string(),
        "quorum none\n".to_string(),
        "deployment production\n".to_string(),
        "deployment test\ndeployment test\n".to_string(),
    ];
    for extra in bad_extras {
        let line = line_error(&policy_text(&a, &extra));
        // The first offending line is the last one of `extra`, or the one before for duplicates.
        let extra_lines = extra.lines().count();
        assert_eq!(line, at_end + extra_lines - 1, "for {extra:?}");
    }
    assert_eq!(line_error(&base.replacen("v1", "v2", 1)), 1);
}

#[test]
fn an_unwitnessed_policy_is_refused_unless_marked_as_a_test_deployment() {
    let a = authority().verifying_key();
    let unwitnessed = |extra: &str| {
        format!(
            "{POLICY_HEADER}\nauthority {}\npost emb-xx Embassy\nlog {}\nquorum none\n{extra}",
            hex::encode(a.as_bytes()),
            log_signer().verifier().to_vkey(),
        )
    };
    assert!(matches!(
        verify_text(&unwitnessed("")),
        Err(ClientPolicyError::Unwitnessed)
    ));
    // The authority cannot even sign one.
    assert!(matches!(
        sign_policy(&unwitnessed(""), &authority()),
        Err(ClientPolicyError::Unwitnessed)
    ));
    let test = verify_text(&unwitnessed("deployment test\n")).unwrap();
    assert!(test.is_test_deployment() && test.is_unwitnessed());
    // A witnessed policy is a real deployment unless marked, and may be marked.
    let real = verify_text(&policy_text(&a, "")).unwrap();
    assert!(!real.is_test_deployment() && !real.is_unwitnessed());
    let marked = verify_text(&policy_text(&a, "deployment test\n")).unwrap();
    assert!(marked.is_test_deployment() && !marked.is_unwitnessed());
}

#[test]
fn required_lines_are_required() {
    let a = authority().verifying_key();
    let text = policy_text(&a, "");
    let without = |prefix: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert!(matches!(
        verify_text(&without("post ")),
        Err(ClientPolicyError::Missing("post"))
    ));
    assert!(matches!(
        verify_text(&without("log ")),
        Err(ClientPolicyError::Missing("log"))
    ));
    assert!(matches!(
        verify_text(&without("quorum ")),
        Err(ClientPolicyError::Tlog(PolicyError::NoQuorum))
    ));
    // Without any authority line the signer cannot be listed either; the text is refused first.
    assert!(matches!(
        verify_text(&without("authority ")),
        Err(ClientPolicyError::Missing("authority"))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any text gets an answer, never a panic; lines start with real keywords often enough to
    /// reach every branch.
    #[test]
    fn parser_never_panics(
        lines in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "authority", "freshness", "relay-onion", "relay-quic", "post", "log",
                    "witness", "group", "quorum", "deployment", "ministry", "bridge", "#", "",
                    "other",
                ]),
                "[ -~\t]{0,70}",
            ),
            0..12,
        ),
        header in proptest::bool::weighted(0.9),
    ) {
        let mut text = if header { format!("{POLICY_HEADER}\n") } else { String::new() };
        for (keyword, rest) in &lines {
            text.push_str(&format!("{keyword} {rest}\n"));
        }
        let _ = Body::parse(&text);
    }
}

/// Bridge lines in the forms bridges.torproject.org gives them (documentation addresses, made-up
/// fingerprints and certificates).
pub(crate) const BRIDGES: [&str; 3] = [
    "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 \
     cert=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA iat-mode=0",
    "webtunnel [2001:db8::1]:443 89ABCDEF0123456789ABCDEF0123456789ABCDEF \
     url=https://bridge.example/path ver=0.0.1",
    "192.0.2.2:9001 FEDCBA9876543210FEDCBA9876543210FEDCBA98",
];

#[test]
fn ministry_and_bridges_are_read() {
    let a = authority();
    let extra = format!(
        "ministry Ministère de l’Europe et des Affaires étrangères\nbridge {}\nbridge  {}\nbridge {}\n",
        BRIDGES[0], BRIDGES[1], BRIDGES[2]
    );
    let bytes = sign_policy(&policy_text(&a.verifying_key(), &extra), &a).unwrap();
    let p = ClientPolicy::verify(&bytes, &[a.verifying_key()]).unwrap();
    assert_eq!(
        p.ministry(),
        Some("Ministère de l’Europe et des Affaires étrangères")
    );
    assert_eq!(p.bridges(), BRIDGES);

    // Arabic and Persian names (with the zero-width non-joiner Persian spelling needs) are
    // display names like any other.
    let extra = "ministry وزارة الخارجية\npost emb-ir سفارت\u{200c}خانه\n";
    let p = verify_text(&policy_text(&a.verifying_key(), extra)).unwrap();
    assert_eq!(p.ministry(), Some("وزارة الخارجية"));
    assert_eq!(p.posts()[2].1, "سفارت\u{200c}خانه");

    // Both are optional.
    let p = verify_text(&policy_text(&a.verifying_key(), "")).unwrap();
    assert_eq!(p.ministry(), None);
    assert!(p.bridges().is_empty());
}

#[test]
fn ministry_and_bridge_lines_are_refused_with_their_line() {
    let a = authority().verifying_key();
    let at_end = policy_text(&a, "").lines().count() + 1;
    let many: String = (0..=MAX_BRIDGES)
        .map(|i| format!("bridge 192.0.2.{i}:443 {:040X}\n", i))
        .collect();
    let bad_extras = [
        // second ministry
        "ministry A\nministry B\n".to_string(),
        // empty ministry (also when only Unicode spaces)
        "ministry\n".to_string(),
        "ministry \u{a0}\u{3000}\n".to_string(),
        // too long
        format!("ministry {}\n", "é".repeat(MAX_POST_NAME_LEN / 2 + 1)),
        // bidi override and other formatting characters that make a name render as another
        "ministry Ministry of \u{202e}sriaffA ngieroF\n".to_string(),
        "ministry A\u{2067}B\u{2069}\n".to_string(),
        "ministry A\u{200f}\n".to_string(),
        "ministry A\u{061c}\n".to_string(),
        "ministry A\u{2028}B\n".to_string(),
        // a control character (DEL; a signed note cannot hold those below U+0020)
        "ministry A\u{7f}B\n".to_string(),
        "ministry A\u{85}B\n".to_string(),
        // bridges: control character, non-ASCII, no address, bad port, too long, duplicate
        "bridge obfs4 192.0.2.1:443\u{7f} ABCD\n".to_string(),
        "bridge obfs4 192.0.2.1:443 ABCD cert=é\n".to_string(),
        "bridge\n".to_string(),
        "bridge obfs4\n".to_string(),
        "bridge obfs4 ABCDEF cert=x\n".to_string(),
        "bridge obfs4 192.0.2.1:0 ABCD\n".to_string(),
        "bridge obfs-4 192.0.2.1:443 ABCD\n".to_string(),
        format!(
            "bridge obfs4 192.0.2.1:443 ABCD cert={}\n",
            "A".repeat(MAX_BRIDGE_LINE_LEN)
        ),
        format!("bridge {}\nbridge {}\n", BRIDGES[0], BRIDGES[0]),
        format!(
            "bridge {}\nbridge   {}\n",
            BRIDGES[2],
            BRIDGES[2].replace(' ', "  ")
        ),
        // too many bridges
        many,
    ];
    for extra in bad_extras {
        let line = line_error(&policy_text(&a, &extra));
        let extra_lines = extra.lines().count();
        assert_eq!(line, at_end + extra_lines - 1, "for {extra:?}");
    }
    // Exactly the maximum is accepted.
    let most: String = (0..MAX_BRIDGES)
        .map(|i| format!("bridge 192.0.2.{i}:443 {:040X}\n", i))
        .collect();
    assert_eq!(
        verify_text(&policy_text(&a, &most))
            .unwrap()
            .bridges()
            .len(),
        MAX_BRIDGES
    );
}

#[test]
fn a_tab_inside_a_display_name_or_bridge_line_is_refused() {
    // A signed note cannot hold a tab; the text parser refuses one anyway (it is what
    // `refuge-admin policy` runs before signing).
    let a = authority().verifying_key();
    let at_end = policy_text(&a, "").lines().count() + 1;
    for extra in [
        "ministry A\tB\n",
        "post emb-qq A\tB\n",
        "bridge obfs4\t192.0.2.1:443 ABCD\n",
    ] {
        match Body::parse(&policy_text(&a, extra)) {
            Err(ClientPolicyError::Syntax { line, .. }) => assert_eq!(line, at_end, "{extra:?}"),
            other => panic!(
                "{extra:?}: expected a syntax error, got {:?}",
                other.is_ok()
            ),
        }
    }
}

#[test]
fn post_names_refuse_bidi_controls_too() {
    let a = authority().verifying_key();
    let at_end = policy_text(&a, "").lines().count() + 1;
    for c in [
        '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}',
    ] {
        let extra = format!("post emb-qq Embassy{c} of Q\n");
        assert_eq!(
            line_error(&policy_text(&a, &extra)),
            at_end,
            "U+{:04X}",
            u32::from(c)
        );
        let extra = format!("ministry Ministry{c}\n");
        assert_eq!(
            line_error(&policy_text(&a, &extra)),
            at_end,
            "U+{:04X}",
            u32::from(c)
        );
    }
    // Blank post names are refused as well.
    assert_eq!(
        line_error(&policy_text(&a, "post emb-qq \u{3000}\n")),
        at_end
    );
}

#[test]
fn a_self_signed_policy_verifies_against_its_own_authorities() {
    let a = authority();
    let other = SigningKey::from_bytes(&[7; 32]);
    let text = policy_text(&a.verifying_key(), "ministry Ministry of X\n");
    let bytes = sign_policy(&text, &a).unwrap();
    let p = ClientPolicy::verify_self_signed(&bytes).unwrap();
    assert_eq!(p.signer(), &a.verifying_key());
    assert_eq!(p.ministry(), Some("Ministry of X"));

    // Signed by a key the text does not list: no listed key signed it.
    let forged = Ed25519Signer::from_seed(POLICY_KEY_NAME, &other.to_bytes())
        .unwrap()
        .sign_note(&text)
        .unwrap();
    assert!(matches!(
        ClientPolicy::verify_self_signed(forged.as_bytes()),
        Err(ClientPolicyError::NotSignedByPinnedKey(
            NoteError::NotSignedByTrustedKey { .. }
        ))
    ));
    // Someone replaced the listed key with their own: the original signature no longer matches
    // a listed key.
    let replaced = String::from_utf8(bytes.clone()).unwrap().replace(
        &hex::encode(a.verifying_key().as_bytes()),
        &hex::encode(other.verifying_key().as_bytes()),
    );
    assert!(matches!(
        ClientPolicy::verify_self_signed(replaced.as_bytes()),
        Err(ClientPolicyError::NotSignedByPinnedKey(_))
    ));
    // Any altered byte of the text is refused, as a signature failure.
    for i in 0..text.len() {
        let mut b = bytes.clone();
        b[i] ^= 1;
        assert!(
            matches!(
                ClientPolicy::verify_self_signed(&b),
                Err(ClientPolicyError::NotSignedByPinnedKey(_) | ClientPolicyError::Note(_))
            ),
            "flip at byte {i}"
        );
    }
    assert!(matches!(
        ClientPolicy::verify_self_signed(b"not a note"),
        Err(ClientPolicyError::Note(_))
    ));
    assert!(matches!(
        ClientPolicy::verify_self_signed(&vec![b'a'; MAX_CLIENT_POLICY_LEN + 1]),
        Err(ClientPolicyError::TooLarge { .. })
    ));
}
