//! Padding of plaintexts to size buckets before encryption, so that a ciphertext's length tells
//! the relay only which bucket its message falls in.
//!
//! Format: `plaintext || 0x80 || 0x00*` up to the bucket size (ISO/IEC 7816-4 style, as Signal
//! does). Buckets are powers of two from 256 bytes to 64 KiB.

/// Bucket sizes in bytes, smallest first.
pub const BUCKETS: [usize; 9] = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// Largest plaintext that fits the largest bucket (one byte goes to the 0x80 marker).
pub const MAX_PLAINTEXT: usize = 65536 - 1;

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
    let bucket = bucket_for(plaintext.len())?;
    let mut out = Vec::with_capacity(bucket);
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(bucket, 0);
    Ok(out)
}

/// Removes padding, refusing input whose length is not a bucket or which lacks the marker.
pub fn unpad(padded: &[u8]) -> Result<&[u8], PaddingError> {
    if !BUCKETS.contains(&padded.len()) {
        return Err(PaddingError::NotABucket(padded.len()));
    }
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(PaddingError::NoMarker)?;
    if padded[end] != 0x80 {
        return Err(PaddingError::NoMarker);
    }
    Ok(&padded[..end])
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

    proptest! {
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
