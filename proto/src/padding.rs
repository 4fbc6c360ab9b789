//! Padding of plaintexts to size buckets before encryption, so that a ciphertext's length tells
//! the relay only which bucket its message falls in.
//!
//! Format: `plaintext || 0x80 || 0x00*` up to the bucket size (ISO/IEC 7816-4 style, as Signal
//! does). Buckets are powers of two from 256 bytes to 64 KiB.

/// Bucket sizes in bytes, smallest first.
pub const BUCKETS: [usize; 9] = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// Largest plaintext that fits the largest bucket (one byte goes to the 0x80 marker).
pub const MAX_PLAINTEXT: usize = 65536 - 1;

/// Room a sealed-sender envelope takes beyond its padded plaintext, at most: the sender
/// certificate (which names the sender, `staff:<label>` of any length a label may have), the
/// ephemeral and static keys, a PreKey message's base key, identity key and Kyber-1024
/// ciphertext (1,568 bytes), the MACs. About 2.3 KiB in the worst case measured
/// (`client/src/flow_tests.rs`), so 4 KiB leaves room.
pub const SEALED_ALLOWANCE: usize = 4096;

/// The outer sizes of sealed messages: each plaintext bucket plus [`SEALED_ALLOWANCE`]. A sealed
/// message is padded to the outer size of its plaintext's bucket ([`pad_sealed`]), so its length
/// tells the relay the bucket and nothing else: not the sender's label, nor whether it starts a
/// session.
pub const SEALED_SIZES: [usize; 9] = {
    let mut sizes = [0; 9];
    let mut i = 0;
    while i < 9 {
        sizes[i] = BUCKETS[i] + SEALED_ALLOWANCE;
        i += 1;
    }
    sizes
};

const _: () = assert!(SEALED_SIZES[8] <= crate::MAX_SEALED_LEN);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaddingError {
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("padded length {0} is not one of the padding buckets")]
    NotABucket(usize),
    #[error("padding marker missing")]
    NoMarker,
}

/// The bucket a plaintext of `len` bytes is padded to.
pub fn bucket_for(len: usize) -> Result<usize, PaddingError> {
    BUCKETS
        .iter()
        .copied()
        .find(|&b| b > len)
        .ok_or(PaddingError::TooLarge {
            len,
            max: MAX_PLAINTEXT,
        })
}

/// Pads `plaintext` to its bucket.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, PaddingError> {
    Ok(pad_to(plaintext, bucket_for(plaintext.len())?))
}

fn pad_to(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(bytes);
    out.push(0x80);
    out.resize(size, 0);
    out
}

fn strip_marker(padded: &[u8]) -> Result<&[u8], PaddingError> {
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(PaddingError::NoMarker)?;
    if padded[end] != 0x80 {
        return Err(PaddingError::NoMarker);
    }
    Ok(&padded[..end])
}

/// Removes padding, refusing input whose length is not a bucket or which lacks the marker.
pub fn unpad(padded: &[u8]) -> Result<&[u8], PaddingError> {
    if !BUCKETS.contains(&padded.len()) {
        return Err(PaddingError::NotABucket(padded.len()));
    }
    strip_marker(padded)
}

/// Pads a sealed message whose plaintext was padded to `bucket` to that bucket's outer size
/// (`bucket + SEALED_ALLOWANCE`), whatever its own length: two messages of one bucket are then
/// the same length on the wire, whoever sent them and whatever their type.
pub fn pad_sealed(sealed: &[u8], bucket: usize) -> Result<Vec<u8>, PaddingError> {
    if !BUCKETS.contains(&bucket) {
        return Err(PaddingError::NotABucket(bucket));
    }
    let size = bucket + SEALED_ALLOWANCE;
    if sealed.len() >= size {
        return Err(PaddingError::TooLarge {
            len: sealed.len(),
            max: size - 1,
        });
    }
    Ok(pad_to(sealed, size))
}

/// Removes the outer padding of a sealed message, refusing a length that is not an outer size
/// or a missing marker.
pub fn unpad_sealed(padded: &[u8]) -> Result<&[u8], PaddingError> {
    if !SEALED_SIZES.contains(&padded.len()) {
        return Err(PaddingError::NotABucket(padded.len()));
    }
    strip_marker(padded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_land_in_buckets() {
        assert_eq!(pad(b"").unwrap().len(), 256);
        assert_eq!(pad(&[1; 255]).unwrap().len(), 256);
        assert_eq!(pad(&[1; 256]).unwrap().len(), 512);
        assert_eq!(pad(&[1; MAX_PLAINTEXT]).unwrap().len(), 65536);
        assert_eq!(
            pad(&[1; MAX_PLAINTEXT + 1]),
            Err(PaddingError::TooLarge {
                len: MAX_PLAINTEXT + 1,
                max: MAX_PLAINTEXT
            })
        );
    }

    #[test]
    fn bad_padding_is_refused() {
        assert_eq!(unpad(&[0; 256]), Err(PaddingError::NoMarker));
        assert_eq!(unpad(&[1; 256]), Err(PaddingError::NoMarker));
        assert_eq!(unpad(&[0x80; 100]), Err(PaddingError::NotABucket(100)));
    }

    #[test]
    fn sealed_messages_pad_to_their_bucket_plus_the_allowance() {
        // Whatever the envelope's own length: the bucket decides.
        assert_eq!(
            pad_sealed(&[7; 300], 256).unwrap().len(),
            256 + SEALED_ALLOWANCE
        );
        assert_eq!(
            pad_sealed(&[7; 4351], 256).unwrap().len(),
            256 + SEALED_ALLOWANCE
        );
        assert_eq!(
            pad_sealed(&[7; 900], 512).unwrap().len(),
            512 + SEALED_ALLOWANCE
        );
        assert!(pad_sealed(&[7; 4352], 256).is_err());
        assert!(pad_sealed(&[7; 10], 300).is_err());
        let largest = SEALED_SIZES[8] - 1;
        assert_eq!(
            pad_sealed(&vec![7; largest], 65536).unwrap().len(),
            SEALED_SIZES[8]
        );
        assert!(SEALED_SIZES[8] <= crate::MAX_SEALED_LEN);
        assert_eq!(
            unpad_sealed(&[0x80; 100]),
            Err(PaddingError::NotABucket(100))
        );
        assert_eq!(
            unpad_sealed(&[0; 256 + SEALED_ALLOWANCE]),
            Err(PaddingError::NoMarker)
        );
    }

    proptest! {
        #[test]
        fn sealed_round_trip(p in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let bucket = bucket_for(p.len()).unwrap();
            let padded = pad_sealed(&p, bucket).unwrap();
            prop_assert_eq!(padded.len(), bucket + SEALED_ALLOWANCE);
            prop_assert!(SEALED_SIZES.contains(&padded.len()));
            prop_assert_eq!(unpad_sealed(&padded).unwrap(), &p[..]);
        }

        #[test]
        fn round_trip(p in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let padded = pad(&p).unwrap();
            prop_assert!(BUCKETS.contains(&padded.len()));
            prop_assert_eq!(unpad(&padded).unwrap(), &p[..]);
        }

        #[test]
        fn unpad_never_panics(p in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = unpad(&p);
        }
    }
}
