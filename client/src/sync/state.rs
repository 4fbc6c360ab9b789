//! The merge rule: a case's shared state as a fold over the operations a device holds
//! (ADR 0012, point 5; the rule itself is written out in the module docs of `crate::sync`).
//!
//! Each part of the state is a join of its own: a register keeps the value of the greatest
//! [`OrderKey`] offered to it, notes are such registers keyed by (author, note id), replies a
//! set keyed by their order key. So applying operations one at a time, in any order and any
//! number of times, ends where the fold over their set in order ends; the store keeps the
//! state up to date that way ([`Registers`] is its per-case row) and the tests below hold it
//! to the fold.

use super::op::{Change, Op, OrderKey, Status, device_name};
use crate::secret::SecretText;
use std::collections::BTreeMap;

/// A last-writer-wins register: the value of the greatest key offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lww<T> {
    slot: Option<(T, OrderKey)>,
}

impl<T> Default for Lww<T> {
    fn default() -> Self {
        Lww { slot: None }
    }
}

impl<T> Lww<T> {
    /// A register holding `value` written under `key`.
    pub fn holding(value: T, key: OrderKey) -> Lww<T> {
        Lww {
            slot: Some((value, key)),
        }
    }

    /// Takes `value` if `key` is greater than the key of the value held; whether it did.
    pub fn offer(&mut self, value: T, key: &OrderKey) -> bool {
        match &self.slot {
            Some((_, held)) if held >= key => false,
            _ => {
                self.slot = Some((value, key.clone()));
                true
            }
        }
    }

    pub fn value(&self) -> Option<&T> {
        self.slot.as_ref().map(|(v, _)| v)
    }

    /// The key of the write that won.
    pub fn key(&self) -> Option<&OrderKey> {
        self.slot.as_ref().map(|(_, k)| k)
    }
}

/// Who handles a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The device's label.
    pub to: String,
    /// The device's identity key (empty: not recorded, a handover kept before client schema
    /// v16 by another device than this one): a successor under the same label is another device.
    pub to_key: Vec<u8>,
    /// The note handed over with it (may be empty; emptied when the case's disappearing timer
    /// runs out for it).
    pub note: SecretText,
    /// The device that handed it over, and its identity key.
    pub by: String,
    pub by_key: Vec<u8>,
}

/// The registers of a case: what a cases list shows (the store keeps them as one row per
/// case, updated in the transaction that keeps each operation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub assignment: Lww<Assignment>,
    /// Written by status operations only.
    pub status: Lww<Status>,
    pub star: Lww<bool>,
    /// Whether any device replied.
    pub replied: bool,
}

impl Registers {
    /// The status: the last one set; with none set, `open` once a device replied, else `new`.
    pub fn status(&self) -> Status {
        match self.status.value() {
            Some(s) => *s,
            None if self.replied => Status::Open,
            None => Status::New,
        }
    }

    /// The device the case is assigned to: its label and identity key.
    pub fn assigned_to(&self) -> Option<(&str, &[u8])> {
        self.assignment
            .value()
            .map(|a| (a.to.as_str(), a.to_key.as_slice()))
    }

    pub fn starred(&self) -> bool {
        self.star.value().copied().unwrap_or(false)
    }

    /// Applies `op` to the registers (notes are not here: [`CaseState`]); whether they changed.
    pub fn apply(&mut self, op: &Op) -> bool {
        let key = op.key();
        match &op.change {
            Change::Assign { to, to_key, note } => self.assignment.offer(
                Assignment {
                    to: to.clone(),
                    to_key: to_key.clone(),
                    note: note.clone(),
                    by: op.author.clone(),
                    by_key: op.author_key.clone(),
                },
                &key,
            ),
            Change::Status(s) => self.status.offer(*s, &key),
            Change::Star(on) => self.star.offer(*on, &key),
            Change::Reply { .. } => !std::mem::replace(&mut self.replied, true),
            Change::Note { .. } => false,
        }
    }
}

/// A reply a device sent, as a conversation shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyEntry {
    /// The label of the device that sent it.
    pub author: String,
    /// Its identity key (empty: not recorded).
    pub author_key: Vec<u8>,
    pub text: SecretText,
    /// Unix seconds rounded down to the hour.
    pub at_hour: u64,
}

/// A note's key: (author, note id), the author named by label and identity key
/// ([`device_name`]), so that a device revoked and replaced under the same label is another
/// author: its successor neither owns nor edits its notes. A read model may show a device this
/// device knows by its label alone (`InboxClient::case_state`: this device, and the devices the
/// verified directory lists with their key).
pub type NoteKey = (String, u64);

/// A case's shared state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseState {
    pub registers: Registers,
    /// Internal notes, by (author, id); each the text of the latest operation with its key.
    /// A note whose text is gone (it disappeared with the case's timer) is not listed.
    pub notes: BTreeMap<NoteKey, Lww<SecretText>>,
    /// Each note author's name in `notes`, with the label and identity key it names.
    pub note_authors: BTreeMap<String, (String, Vec<u8>)>,
    /// Replies, in the merge order.
    pub replies: BTreeMap<OrderKey, ReplyEntry>,
}

impl CaseState {
    /// The state of the operations `ops` (any order, repeats allowed): their set, folded in the
    /// merge order.
    pub fn fold<'a>(ops: impl IntoIterator<Item = &'a Op>) -> CaseState {
        let mut sorted: Vec<&Op> = ops.into_iter().collect();
        sorted.sort_by_key(|op| op.key());
        sorted.dedup_by_key(|op| op.key());
        let mut state = CaseState::default();
        for op in sorted {
            state.apply(op);
        }
        state.drop_gone_notes();
        state
    }

    /// Forgets the notes whose text is gone: an empty text, which no note operation carries,
    /// is what a store reads back for a note whose time came (the case's disappearing timer)
    /// or for an edit that a later one replaced. [`CaseState::apply`] keeps them (their key
    /// still wins over older edits, so an older text never comes back); the state a store
    /// shows has none.
    pub fn drop_gone_notes(&mut self) {
        self.notes
            .retain(|_, n| n.value().is_some_and(|t| !t.expose().is_empty()));
        let notes = &self.notes;
        self.note_authors
            .retain(|name, _| notes.keys().any(|(n, _)| n == name));
    }

    /// Names the devices in this state for a person to read: `show(label, key)` for each note's
    /// author (the notes' keys), the assignment's device and its author, and each reply's
    /// author. What the merge rule needs (keys, order keys) is left as it is; a state so shown
    /// is for reading, not for applying operations to.
    pub fn show_devices(&mut self, show: impl Fn(&str, &[u8]) -> String) {
        let authors = std::mem::take(&mut self.note_authors);
        let renamed: BTreeMap<String, String> = authors
            .iter()
            .map(|(name, (label, key))| (name.clone(), show(label, key)))
            .collect();
        self.notes = std::mem::take(&mut self.notes)
            .into_iter()
            .map(|((name, id), note)| {
                let shown = renamed.get(&name).cloned().unwrap_or(name);
                ((shown, id), note)
            })
            .collect();
        self.note_authors = authors
            .into_iter()
            .map(|(name, who)| (renamed.get(&name).cloned().unwrap_or(name), who))
            .collect();
        if let Some((a, key)) = self.registers.assignment.slot.take() {
            let a = Assignment {
                to: show(&a.to, &a.to_key),
                by: show(&a.by, &a.by_key),
                ..a
            };
            self.registers.assignment = Lww::holding(a, key);
        }
        for reply in self.replies.values_mut() {
            reply.author = show(&reply.author, &reply.author_key);
        }
    }

    /// Applies one operation; whether the state changed.
    pub fn apply(&mut self, op: &Op) -> bool {
        let registers = self.registers.apply(op);
        match &op.change {
            Change::Note { id, text } => {
                let name = device_name(&op.author, &op.author_key);
                self.note_authors
                    .entry(name.clone())
                    .or_insert_with(|| (op.author.clone(), op.author_key.clone()));
                self.notes
                    .entry((name, *id))
                    .or_default()
                    .offer(text.clone(), &op.key())
            }
            Change::Reply { text, at_hour, .. } => {
                let entry = ReplyEntry {
                    author: op.author.clone(),
                    author_key: op.author_key.clone(),
                    text: text.clone(),
                    at_hour: *at_hour,
                };
                self.replies.insert(op.key(), entry).is_none() || registers
            }
            _ => registers,
        }
    }

    pub fn status(&self) -> Status {
        self.registers.status()
    }

    pub fn assigned_to(&self) -> Option<(&str, &[u8])> {
        self.registers.assigned_to()
    }

    pub fn starred(&self) -> bool {
        self.registers.starred()
    }

    /// The notes as (author, id, text), by author then id.
    pub fn note_texts(&self) -> impl Iterator<Item = (&str, u64, &SecretText)> {
        self.notes
            .iter()
            .filter_map(|((author, id), n)| n.value().map(|t| (author.as_str(), *id, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::hlc::{Hlc, HybridClock};
    use crate::sync::test_key;
    use proptest::prelude::*;

    const CASE: &str = "0123456789abcdef0123456789abcdef";
    const DESK1: &str = "emb-xx/desk-1";
    const DESK2: &str = "emb-xx/desk-2";

    fn text(s: &str) -> SecretText {
        SecretText::new(s.into())
    }

    /// A device in these tests: its label, its clock and the operations it holds.
    struct Device {
        label: &'static str,
        clock: HybridClock,
        held: Vec<Op>,
        next_id: u8,
    }

    impl Device {
        fn new(label: &'static str) -> Device {
            Device {
                label,
                clock: HybridClock::default(),
                held: Vec::new(),
                next_id: 0,
            }
        }

        fn make(&mut self, now_ms: u64, change: Change) -> Op {
            self.next_id += 1;
            let mut id = [self.next_id; 16];
            id[0] = self.label.as_bytes()[self.label.len() - 1];
            let op = Op {
                id,
                case_id: CASE.into(),
                clock: self.clock.tick(now_ms).unwrap(),
                author: self.label.into(),
                author_key: test_key(self.label, 0),
                change,
            };
            self.held.push(op.clone());
            op
        }

        fn receive(&mut self, ops: &[Op], now_ms: u64) {
            for op in ops {
                self.clock.observe(op.clock, now_ms).unwrap();
                self.held.push(op.clone());
            }
        }

        fn state(&self) -> CaseState {
            CaseState::fold(&self.held)
        }
    }

    #[test]
    fn two_devices_change_the_same_case_offline_and_converge_once_they_exchange() {
        // Both devices hold the case (each got the first contact) and go offline. Desk 2's
        // clock runs 2 s behind desk 1's.
        let t = 1_800_000_000_000;
        let mut d1 = Device::new(DESK1);
        let mut d2 = Device::new(DESK2);

        // Offline, each assigns, sets a status and writes a note.
        let mut from1 = vec![
            d1.make(
                t,
                Change::Assign {
                    to: DESK1.into(),
                    to_key: test_key(DESK1, 0),
                    note: text("I take it"),
                },
            ),
            d1.make(t + 10, Change::Status(Status::Waiting)),
            d1.make(
                t + 20,
                Change::Note {
                    id: 1,
                    text: text("asked for documents"),
                },
            ),
        ];
        let from2 = vec![
            d2.make(
                t - 2_000 + 5_000,
                Change::Assign {
                    to: DESK1.into(),
                    to_key: test_key(DESK1, 0),
                    note: text("for desk 1, they speak Farsi"),
                },
            ),
            d2.make(t + 3_010, Change::Status(Status::Open)),
            d2.make(
                t + 3_020,
                Change::Note {
                    id: 1,
                    text: text("the user prefers evenings"),
                },
            ),
        ];
        // Desk 1 also stars it and edits its note (same key: replaces its text).
        from1.push(d1.make(t + 30, Change::Star(true)));
        from1.push(d1.make(
            t + 40,
            Change::Note {
                id: 1,
                text: text("asked for documents; received two"),
            },
        ));
        assert_ne!(d1.state(), d2.state(), "offline, they differ");

        // They exchange both ways, in opposite orders, and one copy arrives twice.
        let mut reversed = from2.clone();
        reversed.reverse();
        d1.receive(&reversed, t + 10_000);
        d2.receive(&from1, t + 10_000);
        d2.receive(&from1[..1], t + 10_000);

        let s1 = d1.state();
        assert_eq!(s1, d2.state(), "after the exchange, the same state");
        // And the state is what the rule says: each register takes the write with the
        // greatest (clock, author): desk 2's clock readings were later for all three.
        assert_eq!(s1.assigned_to(), Some((DESK1, &test_key(DESK1, 0)[..])));
        let a = s1.registers.assignment.value().unwrap();
        assert_eq!(
            (a.by.as_str(), a.note.expose()),
            (DESK2, "for desk 1, they speak Farsi")
        );
        assert_eq!(s1.status(), Status::Open);
        assert!(s1.starred());
        // Notes are kept from both, keyed by (author, id); desk 1's edit replaced its text.
        let notes: Vec<(&str, u64, &str)> = s1
            .note_texts()
            .map(|(a, id, t)| (a, id, t.expose()))
            .collect();
        assert_eq!(
            notes,
            [
                (
                    device_name(DESK1, &test_key(DESK1, 0)).as_str(),
                    1,
                    "asked for documents; received two"
                ),
                (
                    device_name(DESK2, &test_key(DESK2, 0)).as_str(),
                    1,
                    "the user prefers evenings"
                )
            ]
        );

        // Each applying the other's operations one at a time reaches the same state too.
        let mut inc1 = CaseState::default();
        for op in d1.held.iter().rev() {
            inc1.apply(op);
        }
        assert_eq!(inc1, s1);

        // After the exchange, a change by either device reads later than everything seen:
        // desk 1 closes, and both agree it is closed.
        let close = d1.make(t + 10_001, Change::Status(Status::Closed));
        d2.receive(&[close], t + 10_002);
        assert_eq!(d1.state().status(), Status::Closed);
        assert_eq!(d1.state(), d2.state());
    }

    #[test]
    fn a_reply_opens_a_new_case_unless_a_status_was_set() {
        let t = 1_800_000_000_000;
        let mut d = Device::new(DESK1);
        assert_eq!(d.state().status(), Status::New);
        d.make(
            t,
            Change::Reply {
                text: text("we hear you"),
                files: Vec::new(),
                at_hour: 1_800_000_000 / 3600 * 3600,
                timer_seconds: 0,
            },
        );
        assert_eq!(d.state().status(), Status::Open);
        // A status set before the reply (in the merge order) stays: the reply does not write
        // the status register, so the order the two arrive in does not matter.
        let mut other = Device::new(DESK2);
        let waiting = other.make(t - 1, Change::Status(Status::Waiting));
        d.receive(&[waiting], t + 1);
        assert_eq!(d.state().status(), Status::Waiting);
        let replies: Vec<_> = d.state().replies.into_values().collect();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].author, DESK1);
    }

    #[test]
    fn replies_of_every_device_are_kept_in_the_merge_order_with_their_author() {
        let t = 1_800_000_000_000;
        let mut d1 = Device::new(DESK1);
        let mut d2 = Device::new(DESK2);
        let reply = |s: &str| Change::Reply {
            text: text(s),
            files: Vec::new(),
            at_hour: 0,
            timer_seconds: 0,
        };
        let a = d1.make(t, reply("first"));
        let b = d2.make(t + 1, reply("second"));
        let c = d1.make(t + 2, reply("third"));
        let state = CaseState::fold([&c, &a, &b, &a]);
        let got: Vec<(&str, &str)> = state
            .replies
            .values()
            .map(|r| (r.author.as_str(), r.text.expose()))
            .collect();
        assert_eq!(got, [(DESK1, "first"), (DESK2, "second"), (DESK1, "third")]);
    }

    #[test]
    fn a_note_whose_text_is_gone_shows_nowhere_and_an_older_edit_does_not_bring_it_back() {
        // As a store reads its operations back once the newest edit's time came: the edits'
        // texts are gone (empty), the newest edit's key still wins.
        let t = 1_800_000_000_000;
        let mut d = Device::new(DESK1);
        let older = d.make(
            t,
            Change::Note {
                id: 1,
                text: text("an older text"),
            },
        );
        let mut newest = d.make(
            t + 1,
            Change::Note {
                id: 1,
                text: text("the newest text"),
            },
        );
        let kept = d.make(
            t + 2,
            Change::Note {
                id: 2,
                text: text("another note"),
            },
        );
        newest.change = Change::Note {
            id: 1,
            text: text(""),
        };
        let state = CaseState::fold([&older, &newest, &kept]);
        let notes: Vec<(u64, &str)> = state
            .note_texts()
            .map(|(_, id, t)| (id, t.expose()))
            .collect();
        assert_eq!(notes, [(2, "another note")]);
        assert_eq!(state.notes.len(), 1);
        // Applied one at a time, the gone note keeps its key: the older edit arriving after it
        // does not bring a text back.
        let mut inc = CaseState::default();
        inc.apply(&kept);
        inc.apply(&newest);
        assert!(!inc.apply(&older));
        inc.drop_gone_notes();
        assert_eq!(inc, state);
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let label = prop_oneof![Just(DESK1), Just(DESK2), Just("emb-xx/desk-3")];
        prop_oneof![
            (label, "[a-c]{0,2}").prop_map(|(to, note)| Change::Assign {
                to: to.into(),
                to_key: test_key(to, 0),
                note: SecretText::new(note),
            }),
            prop::sample::select(Status::ALL.to_vec()).prop_map(Change::Status),
            (1u64..4, "[a-c]{1,2}").prop_map(|(id, t)| Change::Note {
                id,
                text: SecretText::new(t),
            }),
            any::<bool>().prop_map(Change::Star),
            ("[a-c]{1,2}", 0u64..3).prop_map(|(t, h)| Change::Reply {
                text: SecretText::new(t),
                files: Vec::new(),
                at_hour: h * 3600,
                timer_seconds: 0,
            }),
        ]
    }

    /// A set of operations by three devices, with clocks that collide on purpose (few
    /// milliseconds, few counters), distinct ids.
    fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            (
                prop_oneof![Just(DESK1), Just(DESK2), Just("emb-xx/desk-3")],
                0u64..4,
                0u32..2,
                arb_change(),
            ),
            0..24,
        )
        .prop_map(|ops| {
            ops.into_iter()
                .enumerate()
                .map(|(i, (author, wall_ms, counter, change))| {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    Op {
                        id,
                        case_id: CASE.into(),
                        clock: Hlc { wall_ms, counter },
                        author: author.into(),
                        author_key: test_key(author, 0),
                        change,
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// Any permutation of the same operations, with any of them repeated, folds to the same
        /// state, and applying them one at a time in that order reaches it too.
        #[test]
        fn any_order_and_any_repeats_give_the_same_state(
            ops in arb_ops(),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..48),
            seed in any::<u64>(),
        ) {
            let expected = CaseState::fold(&ops);
            // A delivery: every operation at least once, some again, in a shuffled order.
            let mut delivered: Vec<&Op> = ops.iter().collect();
            if !ops.is_empty() {
                delivered.extend(order.iter().map(|i| &ops[i.index(ops.len())]));
            }
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            rand::seq::SliceRandom::shuffle(delivered.as_mut_slice(), &mut rng);

            prop_assert_eq!(&CaseState::fold(delivered.iter().copied()), &expected);
            let mut incremental = CaseState::default();
            for op in &delivered {
                incremental.apply(op);
            }
            prop_assert_eq!(&incremental, &expected);
        }

        /// Two devices that each hold some of the operations agree once each holds them all.
        #[test]
        fn two_partial_holders_converge_after_exchanging(
            ops in arb_ops(),
            split in prop::collection::vec(any::<bool>(), 24),
        ) {
            let (mut mine, mut theirs) = (Vec::new(), Vec::new());
            for (op, in_mine) in ops.iter().zip(&split) {
                if *in_mine { mine.push(op) } else { theirs.push(op) }
            }
            let mut a = CaseState::default();
            let mut b = CaseState::default();
            for op in &mine { a.apply(op); }
            for op in &theirs { b.apply(op); }
            for op in &theirs { a.apply(op); }
            for op in &mine { b.apply(op); }
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &CaseState::fold(&ops));
        }
    }
}
