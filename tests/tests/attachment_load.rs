//! Relay memory stays bounded while 20 clients upload attachments at once (issue 18: streaming,
//! not whole files in memory; 20 x 5 MiB here, 20 x 50 MiB in `benches/attachments.rs`).
//!
//! The real relay binary on loopback QUIC with its default chunk budget; 20 clients, each on its
//! own connection, upload a 5 MiB attachment (80 chunks) to a mailbox of their own at the same
//! time, then download it back and acknowledge it at the same time: every upload completes,
//! every download is byte for byte what was sent, and the relay's peak resident memory (VmHWM)
//! grows by far less than the 100 MiB it was sent (see [`MAX_GROWTH_KIB`]).
//!
//! The chunks are random bytes of a sealed chunk's exact length, not `attachment::Sealer`'s
//! output: the relay never sees anything else than such bytes, and in a debug build the client's
//! sealing (its generic code is compiled unoptimised with `refuge-client`, about 8 MiB/s) would
//! take most of the test's time. The benchmark seals and opens.

#![forbid(unsafe_code)]

use ed25519_dalek::SigningKey;
use rand::RngCore;
use refuge_client::disappearing::Timer;
use refuge_client::relay::{self as api, BlobUpload};
use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_tests::{RelayProcess, vm_kib};
use std::time::{Duration, Instant};

const UPLOADS: usize = 20;
/// Each upload's padded size: 80 chunks of 64 KiB.
const PADDED: u64 = 5 << 20;
/// What the test may take in all (2 cores, debug build: 5 to 6 s measured).
const DEADLINE: Duration = Duration::from_secs(60);

/// How much the relay's peak resident memory (VmHWM) may grow over its resident memory before
/// the uploads (VmRSS; 27 MiB measured), by the end of the uploads, and by the end of the
/// downloads and acknowledgements that follow.
///
/// Measured (debug build, 2 cores): 39 to 42 MiB by the end of the uploads, 3 MiB more for the
/// downloads, nothing more for the acknowledgements (11 MiB more before blobs were deleted in
/// bounded steps without a savepoint: see [`deleting_a_64_mib_attachment_costs_the_relay_a_bounded_amount_of_memory`]).
/// Most of it does not depend on how much is uploaded: SQLite's writer page cache alone grows
/// to 32 MiB (`WRITER_CACHE_KIB`) as the chunks' pages are written, its four readers keep caches
/// of 2 MiB each, and each connection has QUIC and frame buffers. A relay that held the uploads
/// whole would grow by the 100 MiB sent on top of its caches; the bounds leave room above the
/// measures for allocator noise and stay well below that.
const MAX_UPLOAD_GROWTH_KIB: u64 = 56 * 1024;
const MAX_GROWTH_KIB: u64 = 72 * 1024;

/// One client: its mailbox, the session it uploads and downloads on, its blob.
struct Client {
    mailbox: MailboxId,
    session: Session,
    upload: BlobUpload,
}

/// Chunk `index` of upload `u`: bytes made on the fly from both (xorshift64*), so that the
/// test holds no whole upload either.
fn chunk(u: usize, index: u32) -> Vec<u8> {
    chunk_of(PADDED, u, index)
}

/// [`chunk`] of a blob of `padded` bytes.
fn chunk_of(padded: u64, u: usize, index: u32) -> Vec<u8> {
    let len = refuge_proto::blob_chunk_len(padded, u64::from(index)).expect("in range") as usize;
    let mut x = ((u as u64) << 32 | u64::from(index)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; len];
    for word in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    out
}

/// A client on a connection of its own with a fresh mailbox, which it has proved, and a blob
/// of `padded` bytes for that mailbox.
async fn new_client(endpoint: &RelayEndpoint, padded: u64) -> Client {
    let mut rng = rand::rng();
    let (mut id, mut seed, mut token) = ([0u8; 16], [0u8; 32], [0u8; 32]);
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut seed);
    rng.fill_bytes(&mut token);
    let (mailbox, key, token) = (
        MailboxId(id),
        SigningKey::from_bytes(&seed),
        DepositToken(token),
    );
    let mut session = Session::connect(endpoint, &ConnectOptions::default())
        .await
        .expect("a session");
    api::create_mailbox(&mut session, &mailbox, &key, &token)
        .await
        .expect("a mailbox");
    let mut idempotency_id = [0u8; 16];
    rng.fill_bytes(&mut idempotency_id);
    let upload = api::create_blob(
        &mut session,
        padded,
        &[(mailbox, token)],
        Timer::OFF,
        idempotency_id,
    )
    .await
    .expect("a blob");
    api::authenticate(&mut session, &mailbox, &key)
        .await
        .expect("the mailbox proved, for the download");
    Client {
        mailbox,
        session,
        upload,
    }
}

/// The relay's peak resident memory (VmHWM, KiB) at the end of each phase.
#[derive(Debug)]
struct Peaks {
    uploads: u64,
    downloads: u64,
    acks: u64,
}

#[test]
fn twenty_concurrent_uploads_complete_download_intact_and_the_relay_holds_no_whole_file() {
    refuge_client::transport::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let pid = relay.pid();
    let endpoint =
        RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)).expect("the relay's URL");
    let chunks = refuge_proto::blob_chunk_count(PADDED) as u32;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The request functions' futures are not Send: the clients share one local task set.
    let local = tokio::task::LocalSet::new();
    let (baseline, peaks) = runtime.block_on(local.run_until(async {
        let mut clients = Vec::with_capacity(UPLOADS);
        for _ in 0..UPLOADS {
            clients.push(new_client(&endpoint, PADDED).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (baseline, _) = vm_kib(pid);

        // Every client uploads at once, one chunk request at a time.
        let mut set = tokio::task::JoinSet::new();
        for (u, mut c) in clients.into_iter().enumerate() {
            set.spawn_local(async move {
                let mut complete = false;
                for index in 0..chunks {
                    complete = api::put_chunk(&mut c.session, &c.upload, index, chunk(u, index))
                        .await
                        .unwrap_or_else(|e| panic!("upload {u}, chunk {index}: {e}"));
                }
                assert!(complete, "upload {u}: the relay has every chunk");
                (u, c)
            });
        }
        let mut clients = Vec::with_capacity(UPLOADS);
        while let Some(done) = set.join_next().await {
            clients.push(done.expect("an upload"));
        }
        let uploads = vm_kib(pid).1;

        // Every client downloads its attachment back at once, chunk by chunk.
        let mut set = tokio::task::JoinSet::new();
        for (u, mut c) in clients {
            set.spawn_local(async move {
                for index in 0..chunks {
                    let data = api::get_chunk(&mut c.session, &c.mailbox, &c.upload.blob_id, index)
                        .await
                        .unwrap_or_else(|e| panic!("download {u}, chunk {index}: {e}"));
                    assert!(
                        data == chunk(u, index),
                        "download {u}, chunk {index} differs"
                    );
                }
                c
            });
        }
        let mut clients = Vec::with_capacity(UPLOADS);
        while let Some(done) = set.join_next().await {
            clients.push(done.expect("a download"));
        }
        let downloads = vm_kib(pid).1;

        // And acknowledges it: the relay deletes it.
        let mut set = tokio::task::JoinSet::new();
        for mut c in clients {
            set.spawn_local(async move {
                api::ack_blob(&mut c.session, &c.mailbox, &c.upload.blob_id)
                    .await
                    .expect("acknowledged");
                c.session.close().await;
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("an acknowledgement");
        }
        let acks = vm_kib(pid).1;
        (
            baseline,
            Peaks {
                uploads,
                downloads,
                acks,
            },
        )
    }));
    let upload_growth = peaks.uploads.saturating_sub(baseline);
    let growth = peaks.acks.saturating_sub(baseline);
    eprintln!(
        "relay VmRSS before the uploads {baseline} KiB; VmHWM after them {} KiB, after the \
         downloads {} KiB, after the acknowledgements {} KiB: {growth} KiB of growth for \
         {UPLOADS} x {} MiB, in {:?}",
        peaks.uploads,
        peaks.downloads,
        peaks.acks,
        PADDED >> 20,
        started.elapsed()
    );
    assert!(
        upload_growth <= MAX_UPLOAD_GROWTH_KIB,
        "the relay's peak memory grew by {upload_growth} KiB while {UPLOADS} clients uploaded \
         {} MiB each at once; at most {MAX_UPLOAD_GROWTH_KIB} KiB expected of a relay that \
         streams chunks to its database",
        PADDED >> 20
    );
    assert!(
        growth <= MAX_GROWTH_KIB,
        "the relay's peak memory grew by {growth} KiB ({peaks:?} over {baseline}) while \
         {UPLOADS} x {} MiB went through it; at most {MAX_GROWTH_KIB} KiB expected of a relay that \
         streams chunks to and from its database",
        PADDED >> 20
    );
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
}

/// A blob this large (1,024 chunks) was deleted in one writer job inside a savepoint, and SQLite
/// kept a copy of every freed page in the writer's in-memory sub-journal: the relay grew by about
/// as much as it deleted (53 to 106 MiB measured for 100 MiB, ADR 0013). It now releases the
/// blob, then deletes it 64 chunks per transaction in jobs that need no savepoint.
const BIG: u64 = 64 << 20;

/// How much the relay's peak resident memory may grow over its resident memory while the
/// acknowledgement of [`BIG`] is answered (after its deletion). Measured (debug build, 2 cores,
/// three runs): 0 KiB. The same deletion as one writer job in a savepoint, as before, grew the
/// relay by 66 MiB.
const MAX_DELETION_GROWTH_KIB: u64 = 16 * 1024;

/// Writes "5" to /proc/PID/clear_refs: the process's peak resident memory (VmHWM) starts again
/// from its resident memory now.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("/proc/PID/clear_refs");
}

#[test]
fn deleting_a_64_mib_attachment_costs_the_relay_a_bounded_amount_of_memory() {
    refuge_client::transport::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let pid = relay.pid();
    let endpoint =
        RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)).expect("the relay's URL");
    let chunks = refuge_proto::blob_chunk_count(BIG) as u32;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (before, peak) = runtime.block_on(async {
        let mut c = new_client(&endpoint, BIG).await;
        let mut complete = false;
        for index in 0..chunks {
            complete = api::put_chunk(&mut c.session, &c.upload, index, chunk_of(BIG, 0, index))
                .await
                .unwrap_or_else(|e| panic!("chunk {index}: {e}"));
        }
        assert!(complete, "the relay has every chunk");
        // The last chunk comes back intact: the blob is whole before it is deleted.
        let last = api::get_chunk(&mut c.session, &c.mailbox, &c.upload.blob_id, chunks - 1)
            .await
            .expect("the last chunk");
        assert!(last == chunk_of(BIG, 0, chunks - 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        reset_peak(pid);
        let (before, _) = vm_kib(pid);
        api::ack_blob(&mut c.session, &c.mailbox, &c.upload.blob_id)
            .await
            .expect("acknowledged");
        let peak = vm_kib(pid).1;
        // Deleted before the answer: the blob is unknown now.
        let gone = api::get_chunk(&mut c.session, &c.mailbox, &c.upload.blob_id, 0).await;
        assert!(gone.is_err(), "the blob is gone after its acknowledgement");
        c.session.close().await;
        (before, peak)
    });
    let growth = peak.saturating_sub(before);
    eprintln!(
        "relay VmRSS before the acknowledgement of {} MiB: {before} KiB; VmHWM once it was \
         answered: {peak} KiB: {growth} KiB of growth, in {:?}",
        BIG >> 20,
        started.elapsed()
    );
    assert!(
        growth <= MAX_DELETION_GROWTH_KIB,
        "the relay's peak memory grew by {growth} KiB while it deleted a {} MiB attachment; at \
         most {MAX_DELETION_GROWTH_KIB} KiB expected of a relay that deletes it in bounded steps",
        BIG >> 20
    );
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
}
