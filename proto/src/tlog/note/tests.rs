use super::*;
use crate::tlog::vectors::{self, Record, files};

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn peter() -> Ed25519Verifier {
    Ed25519Verifier::from_vkey(PETER_VKEY).unwrap()
}

fn records(kind: &str) -> Vec<Record> {
    let all: Vec<Record> = vectors::parse(files::SIGNED_NOTE)
        .into_iter()
        .filter(|r| r.is(kind))
        .collect();
    assert!(!all.is_empty(), "no {kind} records");
    all
}

fn open(note: &[u8], trusted: &[&dyn Verifier]) -> Result<VerifiedNote, NoteError> {
    UncheckedNote::parse(note)?.verify(trusted)
}

#[test]
fn vkey_vectors() {
    for r in records("vkey") {
        let got = Ed25519Verifier::from_vkey(r.get("vkey"));
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(v) = got {
            assert_eq!(v.to_vkey(), r.get("vkey"));
        }
    }
}

#[test]
fn skey_vectors() {
    for r in records("skey") {
        let got = Ed25519Signer::from_skey(r.get("skey"));
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(s) = got {
            assert_eq!(s.verifier().to_vkey(), r.get("vkey"));
            assert_eq!(s.to_skey().as_str(), r.get("skey"));
        }
    }
}

#[test]
fn sign_vectors() {
    for r in records("sign") {
        let s = Ed25519Signer::from_skey(r.get("skey")).unwrap();
        assert_eq!(
            s.sign_note(r.get("text")).unwrap(),
            r.get("note"),
            "line {}",
            r.line
        );
    }
}

#[test]
fn note_vectors() {
    for r in records("note") {
        let keys: Vec<Ed25519Verifier> = r
            .all("trusted")
            .into_iter()
            .map(|k| Ed25519Verifier::from_vkey(k).unwrap())
            .collect();
        let trusted: Vec<&dyn Verifier> = keys.iter().map(|k| k as &dyn Verifier).collect();
        let got = open(r.get("note").as_bytes(), &trusted);
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(n) = got {
            let names = |s: &[SignatureLine]| s.iter().map(|l| l.name().to_string()).collect();
            let verified: Vec<String> = names(n.verified_signatures());
            let ignored: Vec<String> = names(n.ignored_signatures());
            assert_eq!(verified, r.all("verified"), "line {}", r.line);
            assert_eq!(ignored, r.all("ignored"), "line {}", r.line);
            assert_eq!(n.text(), r.get("text"), "line {}", r.line);
            assert_eq!(n.as_str(), r.get("note"));
            for k in &keys {
                assert!(n.is_signed_by(k));
            }
        }
        if let Some(text) = r.opt("unchecked-text") {
            let n = UncheckedNote::parse(r.get("note").as_bytes()).unwrap();
            assert_eq!(n.dangerously_assume_verified().text(), text);
        }
    }
}

#[test]
fn mangled_keys_are_refused() {
    // As golang.org/x/mod/sumdb/note does: every proper substring and every one-byte change.
    for key in [PETER_VKEY, PETER_SKEY] {
        let parse = |k: &str| {
            if key == PETER_VKEY {
                Ed25519Verifier::from_vkey(k).is_ok()
            } else {
                Ed25519Signer::from_skey(k).is_ok()
            }
        };
        assert!(parse(key));
        let b = key.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    assert!(!parse(&key[i..j]), "{:?}", &key[i..j]);
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let m = String::from_utf8(m).unwrap();
            assert!(!parse(&m), "{m:?}");
        }
    }
}

#[test]
fn key_ids_use_the_signature_type() {
    let v = peter();
    assert_eq!(v.key_id().to_hex(), "c74f20a3");
    assert_eq!(
        KeyId::compute("PeterNeumann", ED25519_TYPE, v.public_key().as_bytes()),
        v.key_id()
    );
    assert_ne!(
        KeyId::compute("PeterNeumann", 0x04, v.public_key().as_bytes()),
        v.key_id()
    );
    assert_eq!(format!("{:?}", v.key_id()), "KeyId(c74f20a3)");
}

#[test]
fn key_names() {
    assert!(is_valid_key_name("example.com/log"));
    assert!(is_valid_key_name("ünïcödé"));
    for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b", "a\u{2003}b", "a\nb"] {
        assert!(!is_valid_key_name(bad), "{bad:?}");
        assert!(Ed25519Signer::from_seed(bad, &[1; 32]).is_err());
    }
}

#[test]
fn malformed_notes_built_in_code() {
    let v = peter();
    let good = format!("{TEXT}\n{PETER_SIG}");
    assert!(open(good.as_bytes(), &[&v]).is_ok());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "no final newline",
            good.as_bytes()[..good.len() - 1].to_vec(),
        ),
        ("control character", format!("\x01{good}").into_bytes()),
        (
            "carriage return",
            good.replace("problem,\n", "problem,\r\n").into_bytes(),
        ),
        (
            "tab in signature line",
            good.replace("— PeterNeumann ", "— PeterNeumann\t")
                .into_bytes(),
        ),
        (
            "invalid UTF-8",
            [b"\xff".as_slice(), good.as_bytes()].concat(),
        ),
        ("empty", Vec::new()),
        ("only a blank line", b"\n\n".to_vec()),
        (
            "short signature",
            format!("{TEXT}\n— PeterNeumann AAAA\n").into_bytes(),
        ),
        (
            "empty signature",
            format!("{TEXT}\n— PeterNeumann \n").into_bytes(),
        ),
        (
            "unpadded signature",
            good.replace("JnAM=", "JnAM").into_bytes(),
        ),
    ];
    for (what, note) in cases {
        let err = UncheckedNote::parse(&note).unwrap_err();
        assert!(matches!(err, NoteError::Malformed(_)), "{what}: {err:?}");
    }
}

#[test]
fn signature_count_and_size_are_bounded() {
    let v = peter();
    let other = "— someone.else AAAAAAE=\n";
    let at_limit = format!("{TEXT}\n{PETER_SIG}{}", other.repeat(MAX_SIGNATURES - 1));
    let n = open(at_limit.as_bytes(), &[&v]).unwrap();
    assert_eq!(n.ignored_signatures().len(), MAX_SIGNATURES - 1);

    let over = format!("{TEXT}\n{PETER_SIG}{}", other.repeat(MAX_SIGNATURES));
    assert_eq!(
        UncheckedNote::parse(over.as_bytes()).unwrap_err(),
        NoteError::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            max: MAX_SIGNATURES
        }
    );

    let huge = format!("{}\n{PETER_SIG}", "a\n".repeat(MAX_NOTE_LEN / 2));
    assert!(matches!(
        UncheckedNote::parse(huge.as_bytes()),
        Err(NoteError::TooLarge { .. })
    ));
    let signer = Ed25519Signer::from_skey(PETER_SKEY).unwrap();
    assert!(matches!(
        signer.sign(&"a\n".repeat(MAX_NOTE_LEN)),
        Err(NoteError::TooLarge { .. })
    ));
}

/// A verifier that accepts everything, to test which lines are matched to which key.
struct Accepting {
    name: &'static str,
    id: KeyId,
}

impl Verifier for Accepting {
    fn name(&self) -> &str {
        self.name
    }
    fn key_id(&self) -> KeyId {
        self.id
    }
    fn verify(&self, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

#[test]
fn a_key_matches_only_by_name_and_id_together() {
    let note = format!("{TEXT}\n{PETER_SIG}");
    let id = peter().key_id();
    let same_id = Accepting {
        name: "Impostor",
        id,
    };
    let same_name = Accepting {
        name: "PeterNeumann",
        id: KeyId([0, 0, 0, 0]),
    };
    assert_eq!(
        open(note.as_bytes(), &[&same_id, &same_name]).unwrap_err(),
        NoteError::NotSignedByTrustedKey { signatures: 1 }
    );
}

#[test]
fn ambiguous_trusted_keys_are_a_configuration_error() {
    let (a, b) = (peter(), peter());
    let note = format!("{TEXT}\n{PETER_SIG}");
    assert!(matches!(
        open(note.as_bytes(), &[&a, &b]),
        Err(NoteError::AmbiguousVerifier { .. })
    ));
}

#[test]
fn encode_and_sign_round_trip() {
    let peter_signer = Ed25519Signer::from_skey(PETER_SKEY).unwrap();
    let other = Ed25519Signer::from_seed("example.com/other", &[7; 32]).unwrap();
    let text = "line one\n\nline three after a blank line\n";
    let lines = [peter_signer.sign(text).unwrap(), other.sign(text).unwrap()];
    let note = encode(text, &lines).unwrap();
    let (pv, ov) = (peter_signer.verifier(), other.verifier());
    let n = open(note.as_bytes(), &[&pv, &ov]).unwrap();
    assert_eq!(n.text(), text);
    assert_eq!(n.verified_signatures(), &lines);
    assert_eq!(n.signature_by(&ov), Some(&lines[1]));

    // Lines survive a round trip through their text form.
    for l in &lines {
        let line = l.to_line();
        assert_eq!(
            &SignatureLine::parse(line.trim_end_matches('\n')).unwrap(),
            l
        );
    }

    assert_eq!(encode(text, &[]), Err(NoteError::NoSignatures));
    assert!(matches!(
        encode(text, &[lines[0].clone(), lines[0].clone()]),
        Err(NoteError::DuplicateSignature { .. })
    ));
    assert!(matches!(
        encode("no newline", &lines),
        Err(NoteError::Malformed(_))
    ));
    assert!(matches!(
        peter_signer.sign("bell\x07\n"),
        Err(NoteError::Malformed(_))
    ));
    assert!(SignatureLine::new("bad name", KeyId([0; 4]), vec![1]).is_err());
    assert!(SignatureLine::new("name", KeyId([0; 4]), vec![]).is_err());
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let s = Ed25519Signer::from_skey(PETER_SKEY).unwrap();
    let shown = format!("{s:?}");
    assert!(shown.contains("PeterNeumann+c74f20a3"), "{shown}");
    assert!(!shown.contains("AYEKFALV"), "{shown}");
    let unchecked = UncheckedNote::parse(format!("{TEXT}\n{PETER_SIG}").as_bytes()).unwrap();
    assert!(!format!("{unchecked:?}").contains("cryptography"));
}

#[test]
fn weak_public_keys_are_refused() {
    // The identity point (small order) encoded as a verifier key with a matching key ID.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut data = vec![ED25519_TYPE];
    data.extend_from_slice(&identity);
    let id = KeyId::compute("weak", ED25519_TYPE, &identity);
    let vkey = format!("weak+{id}+{}", STANDARD.encode(data));
    assert_eq!(
        Ed25519Verifier::from_vkey(&vkey).unwrap_err(),
        KeyError::BadPublicKey("it has small order")
    );
}
