//! The staff device's case list at issue 17's size: 10,000 cases of 20 messages each, in a
//! store built with the store's own insert functions (one transaction). Times one page of 50
//! cases for each filter (the first page, and for "all" a page half-way down), a case open's
//! data (its messages, `case_page`, and its shared state, `case_state`), and compares each
//! with a ceiling measured in the same run: a bare read of 50 rows of the list's table
//! (`Store::case_list_ceiling`). Issue 17's budgets: a case open within 50 ms, a frame of list
//! scrolling within 16 ms.
//!
//! `cargo bench -p refuge-client --bench cases` (cases from `CASES_BENCH_N`, runs from
//! `CASES_BENCH_RUNS`).

use refuge_client::disappearing::Timer;
use refuge_client::secret::SecretText;
use refuge_client::store::{
    CaseFilter, KdfParams, Passphrase, StaffDeviceRecord, Store, generate_signing_key,
};
use refuge_client::sync::{LocalAuthor, LocalChange, Roster, Status};
use refuge_proto::ids::{DepositToken, MailboxId};
use std::time::{Duration, Instant};

const ME: &str = "emb-xx/desk-1";
const COLLEAGUE: &str = "emb-xx/desk-2";
const PAGE: u32 = 50;

/// Min, median and 99th percentile of `runs` runs of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> [Duration; 3] {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    [
        t[0],
        t[t.len() / 2],
        t[(t.len() * 99 / 100).min(t.len() - 1)],
    ]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let n = env("CASES_BENCH_N", 10_000);
    let runs = env("CASES_BENCH_RUNS", 200);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::create(
        dir.path(),
        &Passphrase::new("correct horse battery staple".into()),
        KdfParams::dangerously_weak_for_tests(),
    )
    .expect("store");
    store
        .save_staff_device(&StaffDeviceRecord {
            label: ME.into(),
            post_id: "emb-xx".into(),
            mailbox_id: MailboxId([3; 16]),
            auth_key: generate_signing_key(),
        })
        .expect("staff device");
    // Stand-in identity keys (33 bytes): devices are named by label and key (ADR 0012).
    let key = |n: u8| vec![n; 33];
    let roster = Roster::of(
        "emb-xx",
        ME,
        &key(1),
        [(ME.to_string(), key(1)), (COLLEAGUE.to_string(), key(2))]
            .into_iter()
            .collect(),
    );
    let me = LocalAuthor::new(ME, &key(1));
    let hour = (store.unix_now() / 3600 * 3600) as u64;
    let text = SecretText::new("Bonjour, j'ai besoin d'aide pour un visa.".into());

    // The post's cases: 30% nobody answered yet (new), the others answered by the post's
    // devices (open), of which some waiting, some closed, some assigned, some starred; 10%
    // with messages from the user not seen here, 5% with a reply the relay has not
    // confirmed. Interleaved, so that each filter's cases are spread down the list.
    let t = Instant::now();
    let tx = store.begin().expect("transaction");
    let mut cases = Vec::with_capacity(n);
    for i in 0..n {
        let case = format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15);
        store
            .upsert_case(
                &case,
                &format!("user:{case}"),
                Some((&MailboxId([1; 16]), &DepositToken([2; 32]))),
            )
            .expect("case");
        store.open_case_state(&case).expect("case state");
        let answered = i % 10 >= 3;
        let mut first = None;
        for m in 0..20 {
            if answered && m % 3 == 2 {
                let reply = LocalChange::Reply {
                    text: text.clone(),
                    files: Vec::new(),
                    at_hour: hour,
                    timer_seconds: Timer::OFF.seconds(),
                };
                store
                    .record_case_op(&me, &case, reply, None)
                    .expect("reply")
                    .expect("reply taken");
            } else {
                let id = store
                    .add_case_message(&case, true, &text, hour, None)
                    .expect("message");
                first.get_or_insert(id);
            }
        }
        if i % 10 != 1 {
            store
                .mark_case_seen(&case, first.unwrap_or(0)..=i64::MAX)
                .expect("seen");
        }
        if i % 20 == 7 {
            store
                .add_case_message(&case, false, &text, hour, None)
                .expect("queued reply");
        }
        let change = |c| {
            store
                .record_case_op(&me, &case, c, None)
                .expect("operation")
                .expect("operation taken");
        };
        match i % 10 {
            3 => change(LocalChange::Status(Status::Waiting)),
            4 => change(LocalChange::Status(Status::Closed)),
            _ => {}
        }
        if i % 5 == 0 || i % 10 == 4 {
            let to = roster
                .assignee(if i % 3 == 0 { COLLEAGUE } else { ME })
                .expect("assignee");
            change(LocalChange::Assign {
                to,
                note: SecretText::new(String::new()),
            });
        }
        if i % 7 == 0 {
            change(LocalChange::Star(true));
        }
        cases.push(case);
    }
    tx.commit().expect("commit");
    println!(
        "built {n} cases of 20 messages in {:.1} s (not timed below); {runs} runs each",
        t.elapsed().as_secs_f64()
    );

    let ceiling = time(runs, || {
        assert_eq!(
            store.case_list_ceiling(PAGE).expect("ceiling"),
            PAGE as usize
        );
    });
    let report = |what: &str, t: [Duration; 3]| {
        println!(
            "{what:<34} min {:>8.3} ms  median {:>8.3} ms  p99 {:>8.3} ms  median/ceiling {:>6.1}",
            ms(t[0]),
            ms(t[1]),
            ms(t[2]),
            t[1].as_secs_f64() / ceiling[1].as_secs_f64()
        );
    };
    report("ceiling: bare read of 50 rows", ceiling);
    for (name, filter) in [
        ("all", CaseFilter::All),
        ("unread", CaseFilter::Unread),
        ("pending", CaseFilter::Pending),
        ("new", CaseFilter::New),
        ("mine", CaseFilter::Mine),
        ("closed", CaseFilter::Closed),
    ] {
        let mut listed = 0;
        let t = time(runs, || {
            listed = store.case_list(filter, None, PAGE).expect("page").len();
        });
        report(&format!("page of 50, {name} ({listed} listed)"), t);
    }
    // A page half-way down the list, as scrolling reaches it.
    let mut after = None;
    for _ in 0..(n / 2 / PAGE as usize) {
        let page = store
            .case_list(
                CaseFilter::All,
                after
                    .as_ref()
                    .map(|(l, c): &(i64, String)| (*l, c.as_str())),
                PAGE,
            )
            .expect("page");
        let last = page.last().expect("a full page");
        after = Some((last.last_id, last.case_id.clone()));
    }
    let t = time(runs, || {
        let page = store
            .case_list(
                CaseFilter::All,
                after.as_ref().map(|(l, c)| (*l, c.as_str())),
                PAGE,
            )
            .expect("page");
        assert_eq!(page.len(), PAGE as usize);
    });
    report(&format!("page of 50, all, after {}", n / 2), t);

    let case = &cases[n / 2 + 5];
    let t = time(runs, || {
        assert_eq!(
            store.case_page(case, None, PAGE).expect("messages").len(),
            20
        );
    });
    report("case open: its 20 messages", t);
    let t = time(runs, || {
        store.case_state(case).expect("state").expect("a case");
    });
    report("case open: its shared state", t);
}
