//! Attachments (issue 18, ADR 0013): what a sender and the relay control. A pointer decoded
//! from any bytes inside a `Content` is refused or, once accepted, holds together (its padded
//! size is the Padmé length of its size, its name is never empty and names no folder) and
//! round-trips. And chunks made of any bytes never open as a file other than the one sealed:
//! under a fixed key, a fuzzed stream of chunks that opens whole and finishes is exactly the
//! sealed file, whatever lengths the input claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use refuge_proto::attachment::{AttachmentKey, CHUNK_LEN, Opener, Pointer, Sealer, padme};
use refuge_proto::content::Content;
use zeroize::Zeroizing;

/// The sealed file: a little over one chunk, so a stream has a middle and a last chunk.
const LEN: usize = CHUNK_LEN + 100;

fn key() -> AttachmentKey {
    AttachmentKey {
        key: Zeroizing::new([7; 32]),
        nonce_prefix: [1; 7],
    }
}

fn original() -> Vec<u8> {
    (0..LEN).map(|i| (i % 251) as u8).collect()
}

fn sealed() -> Vec<Vec<u8>> {
    let mut s = Sealer::new(&key(), LEN as u64).expect("a sealer");
    let mut chunks = s.push(&original()).expect("pushed");
    chunks.extend(s.finish().expect("finished"));
    chunks
}

/// Seeds: the real chunks (as the chunk input below reads them), and a content with a pointer.
fn seeds() -> Vec<Vec<u8>> {
    let chunks = sealed();
    let mut stream = vec![0u8];
    for c in &chunks {
        stream.extend_from_slice(&(c.len() as u32).to_be_bytes());
        stream.extend_from_slice(c);
    }
    let content = Content {
        attachments: vec![refuge_proto::content::Attachment {
            blob_id: vec![1; 16],
            key: vec![2; 32],
            nonce_prefix: vec![3; 7],
            chunk_size: CHUNK_LEN as u32,
            size: 1000,
            padded_size: padme(1000),
            digest: vec![4; 32],
            content_type: "image/jpeg".into(),
            file_name: "photo.jpg".into(),
        }],
        ..Default::default()
    };
    let mut pointer = vec![1u8];
    pointer.extend(content.encode_to_vec());
    vec![stream, pointer]
}

fuzz_target!(
    init: refuge_fuzz::write_seeds(seeds),
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        if mode & 1 == 1 {
            // A pointer, as a message carries it.
            if let Ok(content) = Content::decode(rest) {
                for p in &content.attachments {
                    if let Ok(ptr) = Pointer::from_proto(p) {
                        assert_eq!(ptr.padded_size, padme(ptr.size));
                        assert!(!ptr.file_name.is_empty());
                        assert!(!ptr.file_name.contains(['/', '\\']));
                        let again = Pointer::from_proto(&ptr.to_proto()).expect("round trip");
                        assert!(again == ptr);
                    }
                }
            }
            return;
        }
        // Chunks as the relay would serve them: [u32 length][bytes]…, opened in order under the
        // sealed file's key, with the length the input claims (mode's upper bits move it).
        let claimed = (LEN as u64).saturating_add(u64::from(mode >> 1)).saturating_sub(64);
        let Ok(mut opener) = Opener::new(&key(), claimed, padme(claimed)) else {
            return;
        };
        let mut out = Vec::new();
        let mut input = rest;
        let mut index = 0u32;
        while input.len() >= 4 {
            let n = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
            input = &input[4..];
            let chunk = &input[..n.min(input.len())];
            input = &input[chunk.len()..];
            match opener.open(index, chunk) {
                Ok(plain) => out.extend_from_slice(&plain),
                Err(_) => return,
            }
            index += 1;
        }
        if opener.finish().is_ok() {
            // Only the sealer's own chunks open, and only as the file sealed.
            assert_eq!(claimed, LEN as u64);
            assert_eq!(out, original());
        }
    }
);
