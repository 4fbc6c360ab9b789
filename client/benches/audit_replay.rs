//! Auditor replay rate: `refuge-audit`'s full check of a log of N = 100,000 authority-signed
//! entries (enrolments and revocations) served from memory: bundle parsing, every leaf hash,
//! every tile at every level recomputed and compared, the root, and every entry replayed
//! (Ed25519 signature and semantics). Compared with the 50,000 entries/s target and with this
//! machine's own ceilings measured in the same run: the batch signature check alone over all
//! cores (what the replay's signature checks cost at best), and one-by-one RFC 8032
//! `verify_strict` on one core (what they cost before ADR 0009).
//!
//! `cargo bench -p refuge-client --bench audit_replay` (N from `AUDIT_BENCH_N`).

use ed25519_dalek::{Signature, SigningKey};
use refuge_client::audit::AuditError;
use refuge_client::audit::replay::{AuditConfig, AuditedLog};
use refuge_client::audit::source::LogSource;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{
    Enrolment, EntryAction, EntryBody, Revocation, UncheckedEntry, check_signatures, sign_entry,
};
use refuge_proto::directory_log::{DirectoryReplay, replay_threads};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::MemoryTree;
use refuge_proto::tlog::note::Ed25519Signer;
use refuge_proto::tlog::tiles::{encode_bundle, tile_data, tiles_for_size};
use std::collections::HashMap;
use std::time::Instant;

const ORIGIN: &str = "refuge.bench/log";
const TARGET: f64 = 50_000.0;

/// The log as served: every path the auditor asks for, precomputed.
struct Served(HashMap<String, Vec<u8>>);

#[async_trait::async_trait]
impl LogSource for Served {
    async fn get(&self, path: &str, max_len: usize) -> Result<Option<Vec<u8>>, AuditError> {
        Ok(self.0.get(path).filter(|b| b.len() <= max_len).cloned())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

fn identity(i: u32) -> [u8; IDENTITY_KEY_LEN] {
    let mut id = [5u8; IDENTITY_KEY_LEN];
    id[1..5].copy_from_slice(&i.to_be_bytes());
    id
}

/// Every fifth entry revokes the device enrolled just before it.
fn entries(n: u32, authority: &SigningKey) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let action = if i % 5 == 4 {
                EntryAction::Revoke(Revocation {
                    post_id: "emb-xx".into(),
                    label: format!("emb-xx/desk-{}", i - 1),
                    identity_key: identity(i - 1),
                })
            } else {
                let mut seed = [8u8; 32];
                seed[..4].copy_from_slice(&i.to_be_bytes());
                let mut mailbox = [2u8; 16];
                mailbox[..4].copy_from_slice(&i.to_be_bytes());
                EntryAction::Enrol(Enrolment {
                    post_id: "emb-xx".into(),
                    label: format!("emb-xx/desk-{i}"),
                    identity_key: identity(i),
                    auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                    mailbox_id: MailboxId(mailbox),
                })
            };
            sign_entry(
                &EntryBody {
                    action,
                    not_before: 1_700_000_000,
                },
                authority,
            )
            .expect("sign entry")
        })
        .collect()
}

fn main() {
    let n: u32 = std::env::var("AUDIT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let authority = SigningKey::from_bytes(&[0x41; 32]);
    let log_key = Ed25519Signer::from_seed(ORIGIN, &[0x10; 32]).expect("log key");

    let t = Instant::now();
    let all = entries(n, &authority);
    let tree = MemoryTree::from_entries(all.iter().map(Vec::as_slice));
    let mut served = HashMap::new();
    for tile in tiles_for_size(tree.size()) {
        served.insert(tile.path(), tile_data(&tile, &tree).expect("tile"));
        if let Some(b) = tile.bundle() {
            let first = b.index() as usize * 256;
            let end = first + usize::from(b.width());
            served.insert(b.path(), encode_bundle(&all[first..end]).expect("bundle"));
        }
    }
    let cp = Checkpoint::new(ORIGIN, tree.size(), tree.root()).expect("checkpoint");
    served.insert(
        "checkpoint".into(),
        log_key.sign_note(&cp.to_text()).expect("sign").into_bytes(),
    );
    let served = Served(served);
    println!(
        "generated {n} signed entries and the served tiles in {:.2} s (not timed below)",
        t.elapsed().as_secs_f64()
    );

    // Ceilings: the signature checks alone, batched over every core as the replay does them,
    // and one-by-one verify_strict on one core (signature over context + body).
    let public = authority.verifying_key();
    let threads = replay_threads();
    let parsed: Vec<UncheckedEntry> = all
        .iter()
        .map(|e| UncheckedEntry::parse(e).expect("entry"))
        .collect();
    let t = Instant::now();
    let checked = check_signatures(parsed, threads);
    let batch = f64::from(n) / t.elapsed().as_secs_f64();
    assert!(checked.into_iter().all(|c| c.trusted_by(&[public]).is_ok()));
    // The entries alone through the replay (parse, batched signatures, rules), without the
    // tree, tiles and bundles around them.
    let t = Instant::now();
    let mut alone = DirectoryReplay::new(&[public]);
    alone
        .apply_all(0, &all, threads)
        .expect("the entries replay");
    let entries_only = f64::from(n) / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for e in &all {
        let (body, sig) = e.split_at(e.len() - 64);
        let mut msg = refuge_proto::directory_entry::ENTRY_CONTEXT.to_vec();
        msg.extend_from_slice(body);
        let sig = Signature::from_slice(sig).expect("64 bytes");
        public.verify_strict(&msg, &sig).expect("valid signature");
    }
    let raw = f64::from(n) / t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("temp dir");
    let config = AuditConfig {
        log: log_key.verifier(),
        authorities: vec![public],
        witnesses: Vec::new(),
        data_dir: dir.path().to_path_buf(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let step = runtime.block_on(async {
        let audited = AuditedLog::new(&config);
        let cp = AuditedLog::fetch_checkpoint(&served, &config)
            .await
            .expect("checkpoint");
        audited
            .advance(cp, &served, &config, 0)
            .await
            .expect("the log verifies")
            .expect("a step")
    });
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(step.entries.len(), n as usize);
    let rate = f64::from(n) / secs;
    println!(
        "full replay: {n} entries, {} tiles recomputed and compared, in {secs:.3} s",
        step.tiles_checked
    );
    println!(
        "  {rate:.0} entries/s; target {TARGET:.0}/s: {:.2}x the target ({})",
        rate / TARGET,
        if rate >= TARGET { "met" } else { "NOT met" }
    );
    println!(
        "  ceiling, batch signature checks alone on {threads} thread(s): {batch:.0}/s; replay \
         runs at {:.0}% of it",
        100.0 * rate / batch
    );
    println!(
        "  of which the entries alone through the replay (parse, signatures, rules): \
         {entries_only:.0}/s"
    );
    println!(
        "  reference, one-by-one verify_strict on one core: {raw:.0}/s; replay runs at {:.0}% of \
         it",
        100.0 * rate / raw
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average during the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
