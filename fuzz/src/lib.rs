//! Shared code of the Refuge fuzz targets: seed inputs, and the harnesses of the relay handler
//! and of the client's directory sync.
//!
//! Seeds are not checked in. Each target, started with `REFUGE_FUZZ_SEEDS=<dir>`, writes its
//! seeds (valid messages encoded here, and the multi-line values of the known-answer files under
//! `tests/vectors/tlog/`) into `<dir>` before libFuzzer reads its corpus; `scripts/fuzz` passes
//! the corpus directory. So a seed always matches the current encoding.

#![forbid(unsafe_code)]

pub mod handler;
pub mod seeds;
pub mod sync;

/// Writes `seeds` into the directory named by `REFUGE_FUZZ_SEEDS`, if set. Called from each
/// target's `init`; a failure to write is fatal, as a silently empty corpus would hide it.
pub fn write_seeds(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("REFUGE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("REFUGE_FUZZ_SEEDS names a directory we can create");
    for (i, seed) in seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), seed).expect("seed file written");
    }
}

/// Frame properties for message type `M`: a whole-input decode that succeeds re-encodes to the
/// input; the streaming decoder, fed the input in chunks, yields the same frames, never a body
/// above the bound, and every body that decodes re-encodes to itself.
pub fn check_frames<M>(data: &[u8])
where
    M: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    use refuge_proto::frame::{self, FrameDecoder, MAX_FRAME_LEN};
    let whole = frame::decode_exact::<M>(data);
    if let Ok(msg) = &whole {
        assert_eq!(frame::encode(msg).expect("decoded, so encodable"), data);
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut decoder = FrameDecoder::new();
    let mut bodies = Vec::new();
    let mut failed = false;
    'feed: for chunk in data.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_body() {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_FRAME_LEN, "body above the bound");
                    if let Ok(msg) = frame::decode_body::<M>(&body) {
                        assert_eq!(msg.encode_to_vec(), body, "non-canonical body accepted");
                    }
                    bodies.push(body);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    assert!(
                        decoder.next_body().is_err(),
                        "a failed decoder must stay failed"
                    );
                    break 'feed;
                }
            }
        }
    }
    if let Ok(msg) = whole {
        assert!(!failed, "the streaming decoder refused a valid frame");
        assert_eq!(bodies.len(), 1, "one frame in, one frame out");
        assert_eq!(decoder.pending(), 0);
        assert_eq!(frame::decode_body::<M>(&bodies[0]).as_ref(), Ok(&msg));
    }
}
