use super::*;
use crate::directory::IDENTITY_KEY_LEN;
use crate::directory_entry::{EntryBody, Revocation, sign_entry};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use std::collections::HashSet;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn enrolment(desk: &str, n: u8) -> Enrolment {
    Enrolment {
        post_id: "emb-xx".into(),
        label: format!("emb-xx/{desk}"),
        identity_key: [n; IDENTITY_KEY_LEN],
        auth_key: key(100 + n).verifying_key(),
        mailbox_id: MailboxId([n; 16]),
    }
}

fn enrol(e: Enrolment, not_before: u64, by: &SigningKey) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(e),
            not_before,
        },
        by,
    )
    .unwrap()
}

fn revoke(desk: &str, n: u8, by: &SigningKey) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/{desk}"),
                identity_key: [n; IDENTITY_KEY_LEN],
            }),
            not_before: 0,
        },
        by,
    )
    .unwrap()
}

fn rotate(to: &SigningKey, by: &SigningKey) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::RotateAuthority {
                new_key: to.verifying_key(),
            },
            not_before: 0,
        },
        by,
    )
    .unwrap()
}

fn posts() -> Vec<(String, String)> {
    vec![("emb-xx".into(), "Embassy of X".into())]
}

/// Applies `entry` as the next one, checking that `check` agrees and that a refusal changes
/// nothing.
fn next(r: &mut DirectoryReplay, entry: &[u8]) -> Result<VerifiedEntry, ReplayError> {
    let before = r.clone();
    let checked = r.check(entry);
    let applied = r.apply(r.size(), entry);
    assert_eq!(checked, applied);
    if applied.is_err() {
        assert_eq!(*r, before);
    }
    applied
}

fn labels(d: &VerifiedDirectory) -> Vec<String> {
    d.posts()
        .iter()
        .flat_map(|p| p.devices.iter().map(|d| d.label.clone()))
        .collect()
}

#[test]
fn enrol_revoke_and_succeed() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    next(&mut r, &enrol(enrolment("desk-1", 1), 0, &a)).unwrap();
    next(&mut r, &enrol(enrolment("desk-2", 2), 0, &a)).unwrap();
    // A successor cannot take a label still held.
    assert!(matches!(
        next(&mut r, &enrol(enrolment("desk-1", 3), 0, &a)),
        Err(ReplayError::LabelInUse {
            index: 2,
            holder: 0,
            ..
        })
    ));
    next(&mut r, &revoke("desk-1", 1, &a)).unwrap();
    next(&mut r, &enrol(enrolment("desk-1", 3), 50, &a)).unwrap();
    assert_eq!(r.size(), 4);

    let d = r.directory(&posts(), 100);
    assert_eq!(d.version(), 4);
    assert_eq!(d.issued_at(), 50);
    assert_eq!(d.authority(), &a.verifying_key());
    assert_eq!(d.posts()[0].name, "Embassy of X");
    assert_eq!(labels(&d), ["emb-xx/desk-2", "emb-xx/desk-1"]);
    let (_, dev) = d.device_by_label("emb-xx/desk-1").unwrap();
    assert_eq!(dev.identity_key, vec![3; IDENTITY_KEY_LEN]);
    assert!(d.device_by_mailbox(&MailboxId([1; 16])).is_none());
}

#[test]
fn future_enrolment_waits_but_revocation_is_immediate() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    next(&mut r, &enrol(enrolment("desk-1", 1), 1_000, &a)).unwrap();
    next(&mut r, &enrol(enrolment("desk-2", 2), 10, &a)).unwrap();
    assert_eq!(labels(&r.directory(&posts(), 999)), ["emb-xx/desk-2"]);
    assert_eq!(r.directory(&posts(), 999).issued_at(), 10);
    assert_eq!(
        labels(&r.directory(&posts(), 1_000)),
        ["emb-xx/desk-1", "emb-xx/desk-2"]
    );
    // The revocation says not_before = 5000, but applies as soon as it is logged.
    let late_revoke = sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: "emb-xx".into(),
                label: "emb-xx/desk-2".into(),
                identity_key: [2; IDENTITY_KEY_LEN],
            }),
            not_before: 5_000,
        },
        &a,
    )
    .unwrap();
    next(&mut r, &late_revoke).unwrap();
    assert_eq!(labels(&r.directory(&posts(), 1_000)), ["emb-xx/desk-1"]);
    // A pending enrolment holds its label and can be revoked before it starts.
    assert!(matches!(
        next(&mut r, &enrol(enrolment("desk-1", 3), 0, &a)),
        Err(ReplayError::LabelInUse { .. })
    ));
    next(&mut r, &revoke("desk-1", 1, &a)).unwrap();
    assert!(labels(&r.directory(&posts(), u64::MAX)).is_empty());
}

#[test]
fn keys_and_mailboxes_never_change_owner() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    next(&mut r, &enrol(enrolment("desk-1", 1), 0, &a)).unwrap();
    next(&mut r, &revoke("desk-1", 1, &a)).unwrap();
    type Tweak = fn(&mut Enrolment);
    let tweaks: [(&str, Tweak); 3] = [
        ("mailbox id", |e| e.mailbox_id = MailboxId([1; 16])),
        ("device auth key", |e| e.auth_key = key(101).verifying_key()),
        ("identity key", |e| e.identity_key = [1; IDENTITY_KEY_LEN]),
    ];
    for (what, tweak) in tweaks {
        let mut e = enrolment("desk-9", 9);
        tweak(&mut e);
        assert_eq!(
            next(&mut r, &enrol(e, 0, &a)),
            Err(ReplayError::Reused {
                index: 2,
                what,
                first: 0
            })
        );
    }
    next(&mut r, &enrol(enrolment("desk-9", 9), 0, &a)).unwrap();
}

#[test]
fn revocations_must_name_an_active_device() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    next(&mut r, &enrol(enrolment("desk-1", 1), 0, &a)).unwrap();
    for bad in [revoke("desk-2", 1, &a), revoke("desk-1", 2, &a)] {
        assert!(matches!(
            next(&mut r, &bad),
            Err(ReplayError::RevokeUnknown { index: 1, .. })
        ));
    }
    next(&mut r, &revoke("desk-1", 1, &a)).unwrap();
    assert!(matches!(
        next(&mut r, &revoke("desk-1", 1, &a)),
        Err(ReplayError::RevokeUnknown { index: 2, .. })
    ));
}

#[test]
fn rotation_replaces_the_trusted_set() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut r = DirectoryReplay::new(&[a.verifying_key(), c.verifying_key()]);
    next(&mut r, &enrol(enrolment("desk-1", 1), 0, &c)).unwrap();
    // Only a current key may rotate.
    assert!(matches!(
        next(&mut r, &rotate(&b, &b)),
        Err(ReplayError::Entry {
            index: 1,
            source: EntryError::UntrustedAuthority(_)
        })
    ));
    next(&mut r, &rotate(&b, &a)).unwrap();
    assert_eq!(r.authorities(), [b.verifying_key()]);
    // Both old keys are now refused, including the one that did not sign the rotation.
    for old in [&a, &c] {
        assert!(matches!(
            next(&mut r, &enrol(enrolment("desk-2", 2), 0, old)),
            Err(ReplayError::Entry {
                source: EntryError::UntrustedAuthority(_),
                ..
            })
        ));
    }
    next(&mut r, &enrol(enrolment("desk-2", 2), 0, &b)).unwrap();
    // Devices enrolled under the old key stay until revoked.
    assert_eq!(
        labels(&r.directory(&posts(), 0)),
        ["emb-xx/desk-1", "emb-xx/desk-2"]
    );
    assert_eq!(r.directory(&posts(), 0).authority(), &b.verifying_key());
    assert!(matches!(
        next(&mut r, &rotate(&b, &b)),
        Err(ReplayError::BadRotation { .. })
    ));
    assert!(matches!(
        next(&mut r, &rotate(&a, &b)),
        Err(ReplayError::BadRotation { .. })
    ));
}

#[test]
fn order_and_signatures_are_enforced() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    let e = enrol(enrolment("desk-1", 1), 0, &a);
    assert_eq!(
        r.apply(1, &e),
        Err(ReplayError::OutOfOrder {
            index: 1,
            expected: 0
        })
    );
    let mut altered = e.clone();
    altered[5] ^= 1;
    assert!(matches!(
        next(&mut r, &altered),
        Err(ReplayError::Entry { index: 0, .. })
    ));
    assert!(matches!(
        next(&mut r, &enrol(enrolment("desk-1", 1), 0, &key(7))),
        Err(ReplayError::Entry {
            source: EntryError::UntrustedAuthority(_),
            ..
        })
    ));
    assert!(matches!(
        next(&mut r, b"junk"),
        Err(ReplayError::Entry {
            source: EntryError::Malformed(_),
            ..
        })
    ));
    assert_eq!(r.size(), 0);
    next(&mut r, &e).unwrap();
    assert_eq!(
        r.apply(0, &e),
        Err(ReplayError::OutOfOrder {
            index: 0,
            expected: 1
        })
    );
    let err = next(&mut r, &e).unwrap_err();
    assert_eq!(err.index(), 1);
    assert!(err.to_string().contains("entry 1"), "{err}");
}

#[test]
fn posts_without_a_name_use_their_id() {
    let a = key(1);
    let mut r = DirectoryReplay::new(&[a.verifying_key()]);
    let mut e = enrolment("desk-1", 1);
    e.post_id = "con-yy".into();
    e.label = "con-yy/desk-1".into();
    next(&mut r, &enrol(e, 0, &a)).unwrap();
    let named = vec![
        ("emb-zz".to_string(), "Embassy Z".to_string()),
        ("emb-xx".to_string(), "Embassy X".to_string()),
        ("emb-zz".to_string(), "Embassy Z again".to_string()),
    ];
    let d = r.directory(&named, 0);
    let ids: Vec<(&str, &str, usize)> = d
        .posts()
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str(), p.devices.len()))
        .collect();
    assert_eq!(
        ids,
        [
            ("emb-zz", "Embassy Z", 0),
            ("emb-xx", "Embassy X", 0),
            ("con-yy", "con-yy", 1)
        ]
    );
}

/// One step of a random history, over small key spaces so that collisions are common.
#[derive(Clone, Debug)]
enum Op {
    Enrol {
        desk: u8,
        identity: u8,
        auth: u8,
        mailbox: u8,
        not_before: u64,
        signer: u8,
    },
    Revoke {
        desk: u8,
        identity: u8,
        signer: u8,
    },
    Rotate {
        to: u8,
        signer: u8,
    },
    Garbage(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u8, 0..6u8, 0..6u8, 0..6u8, 0..3u64, 0..3u8).prop_map(
            |(desk, identity, auth, mailbox, not_before, signer)| Op::Enrol {
                desk, identity, auth, mailbox, not_before, signer
            }
        ),
        3 => (0..3u8, 0..6u8, 0..3u8)
            .prop_map(|(desk, identity, signer)| Op::Revoke { desk, identity, signer }),
        1 => (0..3u8, 0..3u8).prop_map(|(to, signer)| Op::Rotate { to, signer }),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Op::Garbage),
    ]
}

fn encode(op: &Op) -> Vec<u8> {
    let authority = |n: u8| key(200 + n);
    match op {
        Op::Enrol {
            desk,
            identity,
            auth,
            mailbox,
            not_before,
            signer,
        } => enrol(
            Enrolment {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/d{desk}"),
                identity_key: [*identity; IDENTITY_KEY_LEN],
                auth_key: key(100 + auth).verifying_key(),
                mailbox_id: MailboxId([*mailbox; 16]),
            },
            *not_before,
            &authority(*signer),
        ),
        Op::Revoke {
            desk,
            identity,
            signer,
        } => revoke(&format!("d{desk}"), *identity, &authority(*signer)),
        Op::Rotate { to, signer } => rotate(&authority(*to), &authority(*signer)),
        Op::Garbage(b) => b.clone(),
    }
}

/// An independent statement of the rules: whether `op` is accepted, updating the model if so.
#[derive(Default)]
struct Model {
    trusted: HashSet<u8>,
    retired: HashSet<u8>,
    /// desk -> identity of the active device.
    active: std::collections::HashMap<u8, u8>,
    identities: HashSet<u8>,
    auths: HashSet<u8>,
    mailboxes: HashSet<u8>,
}

impl Model {
    fn step(&mut self, op: &Op) -> bool {
        match *op {
            Op::Enrol {
                desk,
                identity,
                auth,
                mailbox,
                signer,
                ..
            } => {
                if !self.trusted.contains(&signer)
                    || self.active.contains_key(&desk)
                    || self.identities.contains(&identity)
                    || self.auths.contains(&auth)
                    || self.mailboxes.contains(&mailbox)
                {
                    return false;
                }
                self.active.insert(desk, identity);
                self.identities.insert(identity);
                self.auths.insert(auth);
                self.mailboxes.insert(mailbox);
                true
            }
            Op::Revoke {
                desk,
                identity,
                signer,
            } => {
                if !self.trusted.contains(&signer) || self.active.get(&desk) != Some(&identity) {
                    return false;
                }
                self.active.remove(&desk);
                true
            }
            Op::Rotate { to, signer } => {
                if !self.trusted.contains(&signer)
                    || self.retired.contains(&to)
                    || (self.trusted.len() == 1 && self.trusted.contains(&to))
                {
                    return false;
                }
                self.retired.extend(self.trusted.drain());
                self.retired.remove(&to);
                self.trusted.insert(to);
                true
            }
            Op::Garbage(_) => false,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn replay_follows_the_rules_and_is_deterministic(
        ops in proptest::collection::vec(op(), 1..40),
        split in any::<prop::sample::Index>(),
    ) {
        let initial = [key(200).verifying_key(), key(201).verifying_key()];
        let mut model = Model { trusted: [0, 1].into(), ..Model::default() };
        let mut r = DirectoryReplay::new(&initial);
        let mut log = Vec::new();
        for op in &ops {
            let bytes = encode(op);
            let result = next(&mut r, &bytes);
            prop_assert_eq!(result.is_ok(), model.step(op), "{:?}: {:?}", op, result);
            if result.is_ok() {
                log.push(bytes);
            }
        }
        // The directory lists exactly the model's active devices (every not_before is < 3).
        let mut want: Vec<String> = model.active.keys().map(|d| format!("emb-xx/d{d}")).collect();
        want.sort();
        let mut got = labels(&r.directory(&posts(), 3));
        got.sort();
        prop_assert_eq!(got, want);

        // Replaying the log in one pass, or stopping at any point and going on from a copy,
        // reaches the same state.
        let mut whole = DirectoryReplay::new(&initial);
        for (i, e) in log.iter().enumerate() {
            whole.apply(i as u64, e).unwrap();
        }
        prop_assert_eq!(&whole, &r);
        let at = if log.is_empty() { 0 } else { split.index(log.len() + 1) };
        let mut first = DirectoryReplay::new(&initial);
        for (i, e) in log[..at].iter().enumerate() {
            first.apply(i as u64, e).unwrap();
        }
        let mut rest = first.clone();
        for (i, e) in log[at..].iter().enumerate() {
            rest.apply((at + i) as u64, e).unwrap();
        }
        prop_assert_eq!(&rest, &r);

        // All the ops in one batch, refused ones included: the same as one by one up to the
        // first refusal, which is the batch's error.
        let all: Vec<Vec<u8>> = ops.iter().map(encode).collect();
        let (want, single) = one_by_one(&initial, &all);
        let mut batch = DirectoryReplay::new(&initial);
        prop_assert_eq!(batch.apply_all(0, &all, 2), want);
        prop_assert_eq!(&batch, &single);
    }
}

fn one_by_one(
    initial: &[VerifyingKey],
    entries: &[Vec<u8>],
) -> (Result<Vec<VerifiedEntry>, ReplayError>, DirectoryReplay) {
    let mut r = DirectoryReplay::new(initial);
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match r.apply(i as u64, e) {
            Ok(v) => out.push(v),
            Err(e) => return (Err(e), r),
        }
    }
    (Ok(out), r)
}

/// Enough entries for several threads and batches, with a rotation in the middle: an entry's
/// key is trusted or not by the state before it, whichever thread checked its signature.
#[test]
fn batched_replay_across_threads_matches_one_by_one() {
    let (old, new) = (key(200), key(201));
    let device = |n: u32, by: &SigningKey| {
        let mut identity = [9; IDENTITY_KEY_LEN];
        identity[..4].copy_from_slice(&n.to_be_bytes());
        let mut mailbox = [3; 16];
        mailbox[..4].copy_from_slice(&n.to_be_bytes());
        let mut auth = [4; 32];
        auth[..4].copy_from_slice(&n.to_be_bytes());
        let e = Enrolment {
            post_id: "emb-xx".into(),
            label: format!("emb-xx/d{n}"),
            identity_key: identity,
            auth_key: SigningKey::from_bytes(&auth).verifying_key(),
            mailbox_id: MailboxId(mailbox),
        };
        enrol(e, 0, by)
    };
    let mut log: Vec<Vec<u8>> = (0..700).map(|n| device(n, &old)).collect();
    log.push(rotate(&new, &old));
    log.extend((701..1100).map(|n| device(n, &new)));
    let initial = [old.verifying_key()];

    let (want, single) = one_by_one(&initial, &log);
    assert_eq!(want.as_ref().map(Vec::len), Ok(1100));
    for threads in [1, 2, 3] {
        let mut batch = DirectoryReplay::new(&initial);
        assert_eq!(batch.apply_all(0, &log, threads), want);
        assert_eq!(batch, single);
    }

    // A malformed entry in the second thread's part.
    let mut broken = log.clone();
    broken[800].truncate(10);
    let (want, single) = one_by_one(&initial, &broken);
    assert!(matches!(
        want,
        Err(ReplayError::Entry {
            index: 800,
            source: EntryError::Malformed(_)
        })
    ));
    let mut batch = DirectoryReplay::new(&initial);
    assert_eq!(batch.apply_all(0, &broken, 2), want);
    assert_eq!(batch, single);

    // The retired key signs entry 1000; an entry after it is altered.
    log[1000] = device(1000, &old);
    log[1050][20] ^= 1;
    let (want, single) = one_by_one(&initial, &log);
    assert!(matches!(
        want,
        Err(ReplayError::Entry {
            index: 1000,
            source: EntryError::UntrustedAuthority(_)
        })
    ));
    let mut batch = DirectoryReplay::new(&initial);
    assert_eq!(batch.apply_all(0, &log, 2), want);
    assert_eq!(batch, single);
    assert_eq!(batch.size(), 1000);

    // Out of order.
    assert!(matches!(
        batch.apply_all(7, &log[..1], 2),
        Err(ReplayError::OutOfOrder {
            index: 7,
            expected: 1000
        })
    ));
}
