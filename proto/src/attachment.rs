//! Attachments' encryption (issue 18, ADR 0013), sans-I/O: bytes in, sealed chunks out, and
//! back. No store, network or file here; the transfer and the relay's side come on top.
//!
//! # The construction (not a home-made one)
//!
//! Each attachment gets a fresh random 256-bit key and a random 7-byte nonce prefix
//! ([`AttachmentKey`]). Its plaintext is padded to its Padmé length ([`padme`]) with zero bytes,
//! cut into [`CHUNK_LEN`] chunks, and each chunk sealed with AES-256-GCM-SIV under the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár (nOAE) as RustCrypto's
//! `aead::stream` implements it (`StreamBE32`: nonce = prefix ‖ 32-bit big-endian chunk counter
//! ‖ last-chunk flag). AES-256-GCM-SIV is the AEAD libsignal itself depends on (the same crate
//! and version, already in the tree), and it stays safe if a nonce ever repeats.
//!
//! What that gives, and what the tests below hold it to:
//! - a chunk altered, or moved to another position (the counter is in its nonce), does not
//!   open ([`AttachmentError::Forged`]);
//! - a stream cut short is refused: only the chunk sealed as the last one opens as the last,
//!   and [`Opener::finish`] refuses a stream whose last chunk did not arrive
//!   ([`AttachmentError::Truncated`]);
//! - a chunk of another attachment never opens (another key);
//! - the padding must be zeros, and the sizes must be the ones the pointer states.
//!
//! The key, prefix, sizes, content type and name travel in the pointer inside the Signal
//! message, never in clear; the relay sees chunks of a Padmé-padded length only.

#![forbid(unsafe_code)]

use crate::error::Blame;
use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;
use aes_gcm_siv::aead::consts::U7;
use aes_gcm_siv::aead::generic_array::GenericArray;
use aes_gcm_siv::aead::stream::{DecryptorBE32, EncryptorBE32};
use rand::RngCore;
use zeroize::Zeroizing;

/// Plaintext bytes per chunk (the last may be shorter).
pub const CHUNK_LEN: usize = 64 * 1024;

/// What sealing adds to each chunk (the AEAD tag).
pub const TAG_LEN: usize = 16;

/// Length of the random nonce prefix: the AEAD's 12-byte nonce less STREAM's 4-byte counter and
/// 1-byte last-chunk flag.
pub const NONCE_PREFIX_LEN: usize = 7;

// The relay checks chunk lengths with the protocol's constants (`refuge_proto::BLOB_*`, what
// `crate::relay`'s attachment requests carry); they must be the sealer's.
const _: () = assert!(
    CHUNK_LEN as u64 == refuge_proto::BLOB_CHUNK_LEN
        && TAG_LEN as u64 == refuge_proto::BLOB_TAG_LEN
);

/// Largest attachment, before padding.
pub const MAX_ATTACHMENT_LEN: u64 = 256 * 1024 * 1024;

/// Why an attachment does not seal or open. Nothing partial is ever returned as whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The file is larger than attachments may be.
    #[error("the file is {len} bytes; attachments may be at most {max} bytes")]
    TooLarge { len: u64, max: u64 },

    /// The caller fed more or fewer bytes than it announced (a bug of the caller, or a file
    /// that changed while it was read).
    #[error("{fed} bytes were given for an attachment of {announced} bytes")]
    WrongLength { fed: u64, announced: u64 },

    /// A chunk did not open under the attachment's key at its position: altered, moved,
    /// swapped in from another attachment, or sealed as last where it is not (or not where it
    /// is).
    #[error(
        "chunk {index} of the attachment does not open: it was altered, moved, or taken from \
         another file (by the relay or on the way); the attachment is refused"
    )]
    Forged { index: u32 },

    /// A chunk came out of order.
    #[error("chunk {got} came where chunk {expected} was due")]
    OutOfOrder { expected: u32, got: u32 },

    /// A chunk has the wrong length for its position.
    #[error("chunk {index} is {len} bytes where {expected} were due")]
    ChunkLength {
        index: u32,
        len: usize,
        expected: usize,
    },

    /// The stream ended before its last chunk.
    #[error("the attachment ended after {received} of its {expected} chunks")]
    Truncated { received: u32, expected: u32 },

    /// The pointer's sizes do not agree with each other (the padded size is not the Padmé
    /// length of the size), or the padding is not zeros: the sender's software is broken or
    /// the pointer was made to mislead.
    #[error("the attachment's sizes or padding are not what its pointer states: {0}")]
    Inconsistent(String),
}

impl AttachmentError {
    /// Who is at fault: a chunk that does not open or a stream cut short is the relay's (or
    /// the path's) doing as far as this device can tell; sizes that contradict the pointer
    /// are the sender's; a wrong length fed in is this program's.
    pub fn blame(&self) -> Blame {
        match self {
            AttachmentError::Forged { .. }
            | AttachmentError::OutOfOrder { .. }
            | AttachmentError::ChunkLength { .. }
            | AttachmentError::Truncated { .. } => Blame::Attack,
            AttachmentError::Inconsistent(_) => Blame::Bug,
            AttachmentError::TooLarge { .. } => Blame::Usage,
            AttachmentError::WrongLength { .. } => Blame::Bug,
        }
    }
}

/// The length `len` is padded to: Padmé (Nikitin et al., "Reducing metadata leakage from
/// encrypted files and communication with PURBs", PETS 2019). The padded length has only as
/// many significant bits as the bit length of `len`'s bit length: it hides all but O(log log n)
/// bits of the size, for at most 12 % more bytes.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (len + mask) & !mask
}

/// How many chunks a padded plaintext of `padded_len` bytes is sealed in (at least one: an empty
/// attachment is one empty last chunk).
pub fn chunk_count(padded_len: u64) -> u32 {
    let n = padded_len.div_ceil(CHUNK_LEN as u64).max(1);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The sealed length of chunk `index` of a padded plaintext of `padded_len` bytes.
pub fn sealed_chunk_len(padded_len: u64, index: u32) -> usize {
    let start = u64::from(index) * CHUNK_LEN as u64;
    let plain = padded_len.saturating_sub(start).min(CHUNK_LEN as u64);
    usize::try_from(plain).unwrap_or(CHUNK_LEN) + TAG_LEN
}

/// An attachment's key and nonce prefix: fresh for every attachment, carried in its pointer.
#[derive(Clone)]
pub struct AttachmentKey {
    pub key: Zeroizing<[u8; 32]>,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl AttachmentKey {
    /// A fresh random key and prefix from the operating system's generator.
    pub fn generate() -> AttachmentKey {
        let mut rng = crate::secret::os_rng();
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rng.fill_bytes(&mut nonce_prefix);
        AttachmentKey { key, nonce_prefix }
    }

    fn cipher(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new(aes_gcm_siv::Key::<Aes256GcmSiv>::from_slice(&self.key[..]))
    }

    fn prefix(&self) -> &GenericArray<u8, U7> {
        GenericArray::from_slice(&self.nonce_prefix)
    }
}

/// Seals an attachment chunk by chunk as its bytes come ([`Sealer::push`]), the last chunk in
/// [`Sealer::finish`].
pub struct Sealer {
    encryptor: Option<EncryptorBE32<Aes256GcmSiv>>,
    announced: u64,
    padded_len: u64,
    fed: u64,
    /// Plaintext of the chunk being filled.
    pending: Zeroizing<Vec<u8>>,
    /// Chunks sealed so far.
    sealed: u32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("announced", &self.announced)
            .field("fed", &self.fed)
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for an attachment of exactly `len` bytes under `key`.
    pub fn new(key: &AttachmentKey, len: u64) -> Result<Sealer, AttachmentError> {
        if len > MAX_ATTACHMENT_LEN {
            return Err(AttachmentError::TooLarge {
                len,
                max: MAX_ATTACHMENT_LEN,
            });
        }
        Ok(Sealer {
            encryptor: Some(EncryptorBE32::from_aead(key.cipher(), key.prefix())),
            announced: len,
            padded_len: padme(len),
            fed: 0,
            pending: Zeroizing::new(Vec::with_capacity(CHUNK_LEN)),
            sealed: 0,
        })
    }

    /// The length the attachment is padded to (what the relay sees, less the tags).
    pub fn padded_len(&self) -> u64 {
        self.padded_len
    }

    /// Takes the next `data` of the attachment; returns the chunks it completed, sealed, in
    /// order (never the last chunk: [`Sealer::finish`] seals it).
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<Vec<u8>>, AttachmentError> {
        let fed = self.fed.saturating_add(data.len() as u64);
        if fed > self.announced {
            return Err(AttachmentError::WrongLength {
                fed,
                announced: self.announced,
            });
        }
        self.fed = fed;
        let mut out = Vec::new();
        while !data.is_empty() {
            let take = (CHUNK_LEN - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_LEN && !self.is_last(self.sealed) {
                out.push(self.seal_pending()?);
            }
        }
        Ok(out)
    }

    /// Pads what remains with zeros and seals it; the last chunk is sealed as the last. An
    /// error if fewer bytes were pushed than announced.
    pub fn finish(mut self) -> Result<Vec<Vec<u8>>, AttachmentError> {
        if self.fed != self.announced {
            return Err(AttachmentError::WrongLength {
                fed: self.fed,
                announced: self.announced,
            });
        }
        let mut out = Vec::new();
        let mut remaining = self.padded_len - self.fed;
        loop {
            let room = (CHUNK_LEN - self.pending.len()) as u64;
            let zeros = remaining.min(room);
            let filled = self.pending.len() + zeros as usize;
            self.pending.resize(filled, 0);
            remaining -= zeros;
            if self.is_last(self.sealed) {
                let encryptor = self
                    .encryptor
                    .take()
                    .ok_or_else(|| AttachmentError::Inconsistent("sealed twice".into()))?;
                let index = self.sealed;
                let sealed = encryptor
                    .encrypt_last(self.pending.as_slice())
                    .map_err(|_| {
                        AttachmentError::Inconsistent(format!("chunk {index} does not seal"))
                    })?;
                out.push(sealed);
                return Ok(out);
            }
            out.push(self.seal_pending()?);
        }
    }

    fn is_last(&self, index: u32) -> bool {
        index + 1 >= chunk_count(self.padded_len)
    }

    fn seal_pending(&mut self) -> Result<Vec<u8>, AttachmentError> {
        let index = self.sealed;
        let encryptor = self
            .encryptor
            .as_mut()
            .ok_or_else(|| AttachmentError::Inconsistent("sealed after the last chunk".into()))?;
        let sealed = encryptor
            .encrypt_next(self.pending.as_slice())
            .map_err(|_| AttachmentError::Inconsistent(format!("chunk {index} does not seal")))?;
        self.pending.clear();
        self.sealed += 1;
        Ok(sealed)
    }
}

/// Opens an attachment chunk by chunk, in order, checking every chunk before its bytes are
/// returned and the whole stream in [`Opener::finish`].
pub struct Opener {
    decryptor: Option<DecryptorBE32<Aes256GcmSiv>>,
    len: u64,
    padded_len: u64,
    chunks: u32,
    next: u32,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("len", &self.len)
            .field("next", &self.next)
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the attachment a pointer describes: `len` bytes, padded to `padded_len`
    /// (which must be `len`'s Padmé length).
    pub fn new(key: &AttachmentKey, len: u64, padded_len: u64) -> Result<Opener, AttachmentError> {
        if len > MAX_ATTACHMENT_LEN {
            return Err(AttachmentError::TooLarge {
                len,
                max: MAX_ATTACHMENT_LEN,
            });
        }
        if padded_len != padme(len) {
            return Err(AttachmentError::Inconsistent(format!(
                "a size of {len} bytes pads to {}, not {padded_len}",
                padme(len)
            )));
        }
        Ok(Opener {
            decryptor: Some(DecryptorBE32::from_aead(key.cipher(), key.prefix())),
            len,
            padded_len,
            chunks: chunk_count(padded_len),
            next: 0,
        })
    }

    /// How many chunks the attachment has.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The index of the chunk due next.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// Opens chunk `index` (which must be the next one); returns its bytes of the attachment,
    /// without padding.
    pub fn open(
        &mut self,
        index: u32,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
        if index != self.next || index >= self.chunks {
            return Err(AttachmentError::OutOfOrder {
                expected: self.next,
                got: index,
            });
        }
        let expected = sealed_chunk_len(self.padded_len, index);
        if sealed.len() != expected {
            return Err(AttachmentError::ChunkLength {
                index,
                len: sealed.len(),
                expected,
            });
        }
        let last = index + 1 == self.chunks;
        let plain = if last {
            let decryptor = self.decryptor.take().ok_or(AttachmentError::OutOfOrder {
                expected: self.next,
                got: index,
            })?;
            decryptor.decrypt_last(sealed)
        } else {
            let decryptor = self.decryptor.as_mut().ok_or(AttachmentError::OutOfOrder {
                expected: self.next,
                got: index,
            })?;
            decryptor.decrypt_next(sealed)
        }
        .map(Zeroizing::new)
        .map_err(|_| AttachmentError::Forged { index })?;
        self.next += 1;
        // The bytes of the attachment in this chunk; the rest must be zero padding.
        let start = u64::from(index) * CHUNK_LEN as u64;
        let keep = usize::try_from(self.len.saturating_sub(start).min(plain.len() as u64))
            .unwrap_or(plain.len());
        if plain[keep..].iter().any(|&b| b != 0) {
            return Err(AttachmentError::Inconsistent(format!(
                "chunk {index}'s padding is not zeros"
            )));
        }
        Ok(Zeroizing::new(plain[..keep].to_vec()))
    }

    /// Checks that the whole attachment arrived: every chunk, the last one sealed as the last.
    pub fn finish(self) -> Result<(), AttachmentError> {
        if self.next != self.chunks {
            return Err(AttachmentError::Truncated {
                received: self.next,
                expected: self.chunks,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn seal_all(key: &AttachmentKey, data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut s = Sealer::new(key, data.len() as u64).unwrap();
        let mut chunks = Vec::new();
        for part in data.chunks(step.max(1)) {
            chunks.extend(s.push(part).unwrap());
        }
        chunks.extend(s.finish().unwrap());
        chunks
    }

    fn open_all(
        key: &AttachmentKey,
        len: u64,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, AttachmentError> {
        let mut o = Opener::new(key, len, padme(len))?;
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&o.open(i as u32, c)?);
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn padme_matches_the_papers_rule() {
        // Small lengths are not padded; then at most 12 % is added, and the padded length
        // keeps only floor(log2 e) + 1 significant bits.
        for len in 0..=8 {
            assert_eq!(padme(len), len);
        }
        assert_eq!(padme(9), 10);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(65_537), 65_536 + 2048);
        assert_eq!(padme(1 << 20), 1 << 20);
        assert_eq!(padme(50 * 1024 * 1024 + 1), 50 * 1024 * 1024 + (1 << 20));
        for len in [100u64, 4097, 123_456, 50_000_000, MAX_ATTACHMENT_LEN - 1] {
            let p = padme(len);
            assert!(
                p >= len && (p - len) as f64 <= 0.12 * len as f64,
                "{len} → {p}"
            );
            assert_eq!(padme(p), p, "a padded length pads to itself");
        }
    }

    #[test]
    fn every_size_around_the_chunk_edges_goes_through() {
        let key = AttachmentKey::generate();
        for len in [
            0,
            1,
            100,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN + 17,
        ] {
            let data = sample(len, 7);
            let chunks = seal_all(&key, &data, 1000);
            let padded = padme(len as u64);
            assert_eq!(chunks.len() as u32, chunk_count(padded), "{len}");
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(
                    c.len(),
                    sealed_chunk_len(padded, i as u32),
                    "{len} chunk {i}"
                );
            }
            assert_eq!(open_all(&key, len as u64, &chunks).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn a_chunk_altered_moved_or_swapped_in_from_another_file_does_not_open() {
        let key = AttachmentKey::generate();
        let data = sample(3 * CHUNK_LEN + 5, 1);
        let chunks = seal_all(&key, &data, CHUNK_LEN);
        assert_eq!(chunks.len(), 4);

        // One bit flipped.
        let mut altered = chunks.clone();
        altered[1][10] ^= 1;
        assert_eq!(
            open_all(&key, data.len() as u64, &altered),
            Err(AttachmentError::Forged { index: 1 })
        );
        // Two chunks exchanged: same lengths, each opens only at its own position.
        let mut reordered = chunks.clone();
        reordered.swap(0, 1);
        assert_eq!(
            open_all(&key, data.len() as u64, &reordered),
            Err(AttachmentError::Forged { index: 0 })
        );
        // The same chunk of another attachment of the same size.
        let other = seal_all(
            &AttachmentKey::generate(),
            &sample(data.len(), 2),
            CHUNK_LEN,
        );
        let mut swapped = chunks.clone();
        swapped[2] = other[2].clone();
        assert_eq!(
            open_all(&key, data.len() as u64, &swapped),
            Err(AttachmentError::Forged { index: 2 })
        );
        // The same key with another prefix (another attachment's nonce).
        let other_prefix = AttachmentKey {
            key: key.key.clone(),
            nonce_prefix: [9; NONCE_PREFIX_LEN],
        };
        assert!(matches!(
            open_all(&other_prefix, data.len() as u64, &chunks),
            Err(AttachmentError::Forged { index: 0 })
        ));
        // Untouched, it opens.
        assert_eq!(open_all(&key, data.len() as u64, &chunks).unwrap(), data);
    }

    #[test]
    fn a_stream_cut_short_is_refused_even_at_a_chunk_boundary() {
        let key = AttachmentKey::generate();
        let data = sample(2 * CHUNK_LEN + 100, 3);
        let chunks = seal_all(&key, &data, 4096);
        // The last chunk missing: what came opens, but the whole is refused.
        let mut o = Opener::new(&key, data.len() as u64, padme(data.len() as u64)).unwrap();
        for (i, c) in chunks[..2].iter().enumerate() {
            o.open(i as u32, c).unwrap();
        }
        assert_eq!(
            o.finish(),
            Err(AttachmentError::Truncated {
                received: 2,
                expected: 3
            })
        );
        // A shorter attachment claimed (its pointer lying about the size) so that an inner
        // chunk would be the last: that chunk was not sealed as last and does not open.
        let short = 2 * CHUNK_LEN as u64 - 10;
        assert_eq!(padme(short), 2 * CHUNK_LEN as u64);
        let mut o = Opener::new(&key, short, padme(short)).unwrap();
        o.open(0, &chunks[0]).unwrap();
        assert_eq!(
            o.open(1, &chunks[1]),
            Err(AttachmentError::Forged { index: 1 })
        );
        // Chunks out of order, and a chunk of the wrong length, are refused before decrypting.
        let mut o = Opener::new(&key, data.len() as u64, padme(data.len() as u64)).unwrap();
        assert_eq!(
            o.open(1, &chunks[1]),
            Err(AttachmentError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );
        assert!(matches!(
            o.open(0, &chunks[0][..100]),
            Err(AttachmentError::ChunkLength { index: 0, .. })
        ));
    }

    #[test]
    fn sizes_that_contradict_the_pointer_and_lengths_that_differ_are_refused() {
        let key = AttachmentKey::generate();
        assert!(matches!(
            Opener::new(&key, 1000, 1000),
            Err(AttachmentError::Inconsistent(_))
        ));
        assert!(matches!(
            Sealer::new(&key, MAX_ATTACHMENT_LEN + 1),
            Err(AttachmentError::TooLarge { .. })
        ));
        let mut s = Sealer::new(&key, 10).unwrap();
        assert!(matches!(
            s.push(&[0; 11]),
            Err(AttachmentError::WrongLength {
                fed: 11,
                announced: 10
            })
        ));
        let mut s = Sealer::new(&key, 10).unwrap();
        s.push(&[1; 5]).unwrap();
        assert!(matches!(
            s.finish(),
            Err(AttachmentError::WrongLength {
                fed: 5,
                announced: 10
            })
        ));
        // A pointer that claims fewer bytes than were sealed: the padding it then implies is
        // not zeros (or the chunk count differs), never silently shortened.
        let data = sample(1000, 5);
        let chunks = seal_all(&key, &data, 1000);
        assert!(open_all(&key, 990, &chunks).is_err());
    }

    #[test]
    fn the_relay_sees_only_the_padded_size() {
        let key = AttachmentKey::generate();
        let sizes = |len: usize| -> usize {
            seal_all(&key, &sample(len, 0), 8192)
                .iter()
                .map(Vec::len)
                .sum()
        };
        // Two files of different sizes in the same Padmé bucket look the same on the relay.
        let a = 5 * 1024 * 1024 - 20_000;
        let b = 5 * 1024 * 1024 - 1;
        assert_eq!(padme(a as u64), padme(b as u64));
        assert_eq!(sizes(a), sizes(b));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_length_pushed_in_any_pieces_comes_back_whole(
            len in 0usize..(3 * CHUNK_LEN + 300),
            step in 1usize..(2 * CHUNK_LEN),
            seed in any::<u8>(),
        ) {
            let key = AttachmentKey::generate();
            let data = sample(len, seed);
            let chunks = seal_all(&key, &data, step);
            prop_assert_eq!(open_all(&key, len as u64, &chunks).unwrap(), data);
        }
    }
}
