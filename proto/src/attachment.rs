//! Attachments' encryption (issue 18, ADR 0013), sans-I/O: bytes in, sealed chunks out, and
//! back, and the pointer that travels inside the Signal message. No store, network or file
//! here; the client's transfer (`refuge_client::transfer`) and the relay's side come on top.
//! In this crate (not the client) so that the fuzz targets reach the pointer and chunk
//! decoders without the client's network stack.
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

use crate::content::Attachment as PointerProto;
use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;
use aes_gcm_siv::aead::consts::U7;
use aes_gcm_siv::aead::generic_array::GenericArray;
use aes_gcm_siv::aead::stream::{EncryptorBE32, NewStream, StreamBE32, StreamPrimitive};
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk (the last may be shorter).
pub const CHUNK_LEN: usize = 64 * 1024;

/// What sealing adds to each chunk (the AEAD tag).
pub const TAG_LEN: usize = 16;

/// Length of the random nonce prefix: the AEAD's 12-byte nonce less STREAM's 4-byte counter and
/// 1-byte last-chunk flag.
pub const NONCE_PREFIX_LEN: usize = 7;

// The relay checks chunk lengths with the protocol's constants (`crate::BLOB_*`, what the
// attachment requests carry); they must be the sealer's.
const _: () =
    assert!(CHUNK_LEN as u64 == crate::BLOB_CHUNK_LEN && TAG_LEN as u64 == crate::BLOB_TAG_LEN);

/// Largest attachment, before padding.
pub const MAX_ATTACHMENT_LEN: u64 = 256 * 1024 * 1024;

/// Most attachments one message carries (the relay admits at most 8 blobs per admission ticket
/// and device mailbox besides the deposit, ADR 0013 point 5).
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 8;

/// Longest file name a pointer keeps, in bytes (longer ones are cut at a character boundary).
pub const MAX_FILE_NAME_LEN: usize = 200;

/// Longest content type a pointer keeps, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 100;

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
        let mut rng = rand_core::OsRng;
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rng.fill_bytes(&mut nonce_prefix);
        AttachmentKey { key, nonce_prefix }
    }

    fn cipher(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new(aes_gcm_siv::Key::<Aes256GcmSiv>::from_slice(&self.key[..]))
    }

    /// The STREAM primitive itself, for sealing or opening one chunk at a given position
    /// (what resuming a transfer needs); the nonce of chunk `i` is the same as in
    /// [`Sealer`]/[`Opener`].
    fn stream(&self) -> StreamBE32<Aes256GcmSiv> {
        StreamBE32::from_aead(self.cipher(), self.prefix())
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

/// Seals chunk `index` of an attachment of `len` bytes on its own, from `data`: that chunk's
/// bytes of the attachment (the whole chunk's worth, or what is left of the attachment for the
/// last chunk; nothing for a chunk that is only padding). The result is byte for byte what
/// [`Sealer`] gives for that chunk: a resumed upload sends again exactly what a first attempt
/// sent, and the relay's repeat check (same index, same bytes) holds.
pub fn seal_chunk(
    key: &AttachmentKey,
    len: u64,
    index: u32,
    data: &[u8],
) -> Result<Vec<u8>, AttachmentError> {
    if len > MAX_ATTACHMENT_LEN {
        return Err(AttachmentError::TooLarge {
            len,
            max: MAX_ATTACHMENT_LEN,
        });
    }
    let padded_len = padme(len);
    let chunks = chunk_count(padded_len);
    if index >= chunks {
        return Err(AttachmentError::OutOfOrder {
            expected: chunks.saturating_sub(1),
            got: index,
        });
    }
    let start = u64::from(index) * CHUNK_LEN as u64;
    let expected =
        usize::try_from(len.saturating_sub(start).min(CHUNK_LEN as u64)).unwrap_or(CHUNK_LEN);
    if data.len() != expected {
        return Err(AttachmentError::ChunkLength {
            index,
            len: data.len(),
            expected,
        });
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(sealed_chunk_len(padded_len, index)));
    plain.extend_from_slice(data);
    plain.resize(sealed_chunk_len(padded_len, index) - TAG_LEN, 0);
    key.stream()
        .encrypt(index, index + 1 == chunks, plain.as_slice())
        .map_err(|_| AttachmentError::Inconsistent(format!("chunk {index} does not seal")))
}

/// Opens an attachment chunk by chunk, in order, checking every chunk before its bytes are
/// returned and the whole stream in [`Opener::finish`].
pub struct Opener {
    stream: StreamBE32<Aes256GcmSiv>,
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
        Opener::resume(key, len, padded_len, 0)
    }

    /// An opener that goes on at chunk `next`, the chunks before it having been opened and kept
    /// by an earlier one (a download resumed after a broken circuit or a restart). Chunk `i`
    /// opens only at position `i`, whichever opener opens it.
    pub fn resume(
        key: &AttachmentKey,
        len: u64,
        padded_len: u64,
        next: u32,
    ) -> Result<Opener, AttachmentError> {
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
        let chunks = chunk_count(padded_len);
        if next > chunks {
            return Err(AttachmentError::OutOfOrder {
                expected: chunks,
                got: next,
            });
        }
        Ok(Opener {
            stream: key.stream(),
            len,
            padded_len,
            chunks,
            next,
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
        // Only the chunk sealed as the last opens as the last, and only at its position.
        let last = index + 1 == self.chunks;
        let plain = self
            .stream
            .decrypt(index, last, sealed)
            .map(Zeroizing::new)
            .map_err(|_| AttachmentError::Forged { index })?;
        // The bytes of the attachment in this chunk; the rest must be zero padding.
        let start = u64::from(index) * CHUNK_LEN as u64;
        let keep = usize::try_from(self.len.saturating_sub(start).min(plain.len() as u64))
            .unwrap_or(plain.len());
        if plain[keep..].iter().any(|&b| b != 0) {
            return Err(AttachmentError::Inconsistent(format!(
                "chunk {index}'s padding is not zeros"
            )));
        }
        self.next += 1;
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

/// An attachment's pointer as this program holds it, checked: what travels (as
/// `refuge_proto::content::Attachment`) inside the Signal message and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Pointer {
    pub blob_id: [u8; 16],
    pub key: AttachmentKey,
    pub size: u64,
    pub padded_size: u64,
    /// SHA-256 of the sealed chunks in order.
    pub digest: [u8; 32],
    /// For display only, cleaned by [`display_name`] / [`clean_content_type`].
    pub content_type: String,
    pub file_name: String,
}

impl PartialEq for AttachmentKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.key[..].ct_eq(&other.key[..])) && self.nonce_prefix == other.nonce_prefix
    }
}

impl Eq for AttachmentKey {}

impl std::fmt::Debug for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pointer")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pointer {
    /// Checks a pointer a sender wrote: lengths of the ids and key, this version's chunk size,
    /// sizes that agree with each other (the sender is at fault otherwise). The name and
    /// content type are cleaned for display, never refused.
    pub fn from_proto(p: &PointerProto) -> Result<Pointer, AttachmentError> {
        let bad = |what: &str| AttachmentError::Inconsistent(format!("the pointer's {what}"));
        let blob_id: [u8; 16] = p
            .blob_id
            .as_slice()
            .try_into()
            .map_err(|_| bad("blob id is not 16 bytes"))?;
        let key: [u8; 32] = p
            .key
            .as_slice()
            .try_into()
            .map_err(|_| bad("key is not 32 bytes"))?;
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = p
            .nonce_prefix
            .as_slice()
            .try_into()
            .map_err(|_| bad("nonce prefix is not 7 bytes"))?;
        let digest: [u8; 32] = p
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| bad("digest is not 32 bytes"))?;
        if p.chunk_size as usize != CHUNK_LEN {
            return Err(bad("chunk size is not the 65536 bytes this version opens"));
        }
        if p.size > MAX_ATTACHMENT_LEN {
            return Err(AttachmentError::TooLarge {
                len: p.size,
                max: MAX_ATTACHMENT_LEN,
            });
        }
        if p.padded_size != padme(p.size) {
            return Err(AttachmentError::Inconsistent(format!(
                "a size of {} bytes pads to {}, not {}",
                p.size,
                padme(p.size),
                p.padded_size
            )));
        }
        Ok(Pointer {
            blob_id,
            key: AttachmentKey {
                key: Zeroizing::new(key),
                nonce_prefix,
            },
            size: p.size,
            padded_size: p.padded_size,
            digest,
            content_type: clean_content_type(&p.content_type),
            file_name: display_name(&p.file_name),
        })
    }

    /// The pointer as it travels.
    pub fn to_proto(&self) -> PointerProto {
        PointerProto {
            blob_id: self.blob_id.to_vec(),
            key: self.key.key.to_vec(),
            nonce_prefix: self.key.nonce_prefix.to_vec(),
            chunk_size: CHUNK_LEN as u32,
            size: self.size,
            padded_size: self.padded_size,
            digest: self.digest.to_vec(),
            content_type: self.content_type.clone(),
            file_name: self.file_name.clone(),
        }
    }
}

/// The SHA-256 of an attachment's sealed chunks, fed in order.
#[derive(Clone, Default)]
pub struct SealedDigest(Sha256);

impl std::fmt::Debug for SealedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedDigest(..)")
    }
}

impl SealedDigest {
    pub fn update(&mut self, sealed_chunk: &[u8]) {
        self.0.update(sealed_chunk);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// A file name as the sender wrote it, made safe to show and to offer as an export name: only
/// its last path component; no control characters, no bidirectional overrides or isolates
/// (which make "photo" U+202E "gpj.exe" look like "photoexe.jpg"), no leading dots; at most
/// [`MAX_FILE_NAME_LEN`] bytes. Never empty ("attachment").
pub fn display_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::with_capacity(last.len().min(MAX_FILE_NAME_LEN));
    for c in last.chars() {
        let banned = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}' | '\u{feff}')
            || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|');
        if banned {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_FILE_NAME_LEN {
            break;
        }
        out.push(c);
    }
    // Dots and spaces at the start in any order (". .bashrc" is a hidden file too, and ". ." would
    // leave "."), so that the name, cleaned again, stays as it is.
    let trimmed = out
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    if trimmed.is_empty() {
        "attachment".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A content type as the sender wrote it, kept only if it looks like one (`type/subtype`, ASCII
/// token characters); otherwise `application/octet-stream`.
pub fn clean_content_type(t: &str) -> String {
    let ok = t.len() <= MAX_CONTENT_TYPE_LEN
        && t.split_once('/').is_some_and(|(a, b)| {
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
            };
            token(a) && token(b)
        });
    if ok {
        t.to_ascii_lowercase()
    } else {
        "application/octet-stream".to_string()
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

        #[test]
        fn a_cleaned_file_name_is_clean(name in "[ .:?/a\\\\\u{0}\u{4}\u{202e}\u{3000}é]{0,40}") {
            let once = display_name(&name);
            prop_assert!(!once.is_empty());
            prop_assert!(!once.starts_with(|c: char| c == '.' || c.is_whitespace()), "{:?}", once);
            prop_assert!(!once.contains(['/', '\\', ':', '?', '\u{0}', '\u{202e}']), "{:?}", once);
            prop_assert_eq!(display_name(&once), once);
        }
    }

    #[test]
    fn a_chunk_sealed_on_its_own_is_the_sealers_and_a_resumed_opener_opens_the_rest() {
        let key = AttachmentKey::generate();
        for len in [
            0usize,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN + 17,
            // Padmé adds whole chunks of padding here: chunks with no byte of the file.
            40 * CHUNK_LEN + 5,
        ] {
            let data = sample(len, 9);
            let chunks = seal_all(&key, &data, 10_000);
            let padded = padme(len as u64);
            assert_eq!(chunks.len() as u32, chunk_count(padded));
            for (i, c) in chunks.iter().enumerate() {
                let start = (i * CHUNK_LEN).min(len);
                let end = ((i + 1) * CHUNK_LEN).min(len);
                let alone = seal_chunk(&key, len as u64, i as u32, &data[start..end]).unwrap();
                assert_eq!(&alone, c, "chunk {i} of {len}");
            }
            // Resumed at every position, the rest opens and the whole is the file.
            for from in 0..chunks.len() {
                let mut o = Opener::resume(&key, len as u64, padded, from as u32).unwrap();
                let mut out = data[..(from * CHUNK_LEN).min(len)].to_vec();
                for (i, c) in chunks.iter().enumerate().skip(from) {
                    out.extend_from_slice(&o.open(i as u32, c).unwrap());
                }
                o.finish().unwrap();
                assert_eq!(out, data);
            }
        }
    }

    #[test]
    fn a_resumed_opener_still_refuses_a_chunk_at_another_position_or_a_wrong_last() {
        let key = AttachmentKey::generate();
        let len = 3 * CHUNK_LEN + 1;
        let chunks = seal_all(&key, &sample(len, 3), 4096);
        let padded = padme(len as u64);
        let mut o = Opener::resume(&key, len as u64, padded, 2).unwrap();
        // Chunk 1 offered as chunk 2: same length, wrong position.
        assert_eq!(
            o.open(2, &chunks[1]),
            Err(AttachmentError::Forged { index: 2 })
        );
        assert!(o.open(2, &chunks[2]).is_ok());
        // Stopping before the last chunk is not a whole attachment.
        assert_eq!(
            o.finish(),
            Err(AttachmentError::Truncated {
                received: 3,
                expected: 4
            })
        );
        assert!(Opener::resume(&key, len as u64, padded, 5).is_err());
        // seal_chunk refuses the wrong amount of file for a position.
        assert!(matches!(
            seal_chunk(&key, len as u64, 0, &[0u8; 10]),
            Err(AttachmentError::ChunkLength { .. })
        ));
        assert!(matches!(
            seal_chunk(&key, len as u64, 9, &[]),
            Err(AttachmentError::OutOfOrder { .. })
        ));
    }

    fn pointer_proto() -> PointerProto {
        PointerProto {
            blob_id: vec![1; 16],
            key: vec![2; 32],
            nonce_prefix: vec![3; 7],
            chunk_size: CHUNK_LEN as u32,
            size: 1000,
            padded_size: padme(1000),
            digest: vec![4; 32],
            content_type: "image/JPEG".into(),
            file_name: "../../etc/photo.jpg".into(),
        }
    }

    #[test]
    fn a_pointer_is_checked_and_its_name_and_type_cleaned() {
        let p = Pointer::from_proto(&pointer_proto()).unwrap();
        assert_eq!(p.file_name, "photo.jpg");
        assert_eq!(p.content_type, "image/jpeg");
        assert_eq!(Pointer::from_proto(&p.to_proto()).unwrap(), p);
        type Breaks = Box<dyn Fn(&mut PointerProto)>;
        let broken: Vec<Breaks> = vec![
            Box::new(|p| p.blob_id.pop().map(drop).unwrap_or(())),
            Box::new(|p| p.key.push(0)),
            Box::new(|p| p.nonce_prefix.clear()),
            Box::new(|p| p.digest.truncate(31)),
            Box::new(|p| p.chunk_size = 4096),
            Box::new(|p| p.padded_size += 1),
            Box::new(|p| {
                p.size = MAX_ATTACHMENT_LEN + 1;
                p.padded_size = padme(p.size);
            }),
        ];
        for (i, b) in broken.iter().enumerate() {
            let mut p = pointer_proto();
            b(&mut p);
            assert!(Pointer::from_proto(&p).is_err(), "case {i} was accepted");
        }
    }

    #[test]
    fn file_names_cannot_hide_their_extension_or_leave_the_folder() {
        // A right-to-left override makes "photo\u{202e}gpj.exe" look like "photoexe.jpg".
        assert_eq!(display_name("photo\u{202e}gpj.exe"), "photogpj.exe");
        assert_eq!(display_name("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(display_name("..\\..\\.bashrc"), "bashrc");
        assert_eq!(display_name("a\nb\u{0}c.txt"), "abc.txt");
        assert_eq!(display_name(""), "attachment");
        assert_eq!(display_name("///"), "attachment");
        assert_eq!(display_name("..."), "attachment");
        // Dots behind spaces, and what only a control character kept apart (found by the
        // `attachment` fuzz target: ". ." was cleaned to ".", and "." again to "attachment").
        assert_eq!(display_name(" . .bashrc"), "bashrc");
        assert_eq!(display_name(":.\u{0} .\u{4}?"), "attachment");
        assert_eq!(display_name("report. "), "report.");
        assert_eq!(display_name("نامه سفارت.pdf"), "نامه سفارت.pdf");
        let long = "é".repeat(500);
        assert!(display_name(&long).len() <= MAX_FILE_NAME_LEN);
        assert_eq!(
            clean_content_type("text/html; x"),
            "application/octet-stream"
        );
        assert_eq!(clean_content_type("application/pdf"), "application/pdf");
        assert_eq!(clean_content_type(""), "application/octet-stream");
    }
}
