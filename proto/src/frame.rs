//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes of one protobuf
//! message. Sans-I/O: [`FrameDecoder`] takes bytes in and hands complete frame bodies out, so the
//! same code serves QUIC streams, TCP, Tor streams, tests and fuzzers.

use prost::Message;

/// Hard upper bound on a frame body. Larger frames are refused before any of the body is
/// buffered.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why bytes could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared (or encoded) length is above the bound.
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// Input ended inside a frame.
    #[error("frame truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    /// Bytes were left after the one frame the input should hold.
    #[error("{0} unexpected bytes after the frame")]
    TrailingBytes(usize),
    /// The body is not valid protobuf for the expected message.
    #[error("frame body is not a valid message: {0}")]
    Malformed(String),
    /// The body decodes but is not the canonical encoding (unknown fields, duplicated or
    /// trailing data); accepting it would let two byte strings mean one message.
    #[error("frame body is not canonically encoded ({body} bytes, canonical form is {canonical})")]
    NonCanonical { body: usize, canonical: usize },
}

/// Encodes `msg` as one frame (prefix + body).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = Vec::with_capacity(PREFIX_LEN + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out)
        .expect("a Vec grows to fit; encoded_len was computed above");
    Ok(out)
}

/// Reads a length prefix and checks it against the bound.
pub fn body_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes a frame body, refusing anything but the canonical encoding of `M`.
pub fn decode_body<M: Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let msg = M::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    // Equal length is not enough: fields out of order, or a packed field sent unpacked with an
    // over-long varint, can have the canonical length (found by the frame fuzz targets).
    let canonical = msg.encode_to_vec();
    if canonical != body {
        return Err(FrameError::NonCanonical {
            body: body.len(),
            canonical: canonical.len(),
        });
    }
    Ok(msg)
}

/// Decodes input that must hold exactly one frame, prefix included.
pub fn decode_exact<M: Message + Default>(bytes: &[u8]) -> Result<M, FrameError> {
    if bytes.len() < PREFIX_LEN {
        return Err(FrameError::Truncated {
            needed: PREFIX_LEN,
            got: bytes.len(),
        });
    }
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&bytes[..PREFIX_LEN]);
    let len = body_len(prefix)?;
    let rest = &bytes[PREFIX_LEN..];
    if rest.len() < len {
        return Err(FrameError::Truncated {
            needed: len,
            got: rest.len(),
        });
    }
    if rest.len() > len {
        return Err(FrameError::TrailingBytes(rest.len() - len));
    }
    decode_body(rest)
}

/// Incremental decoder: push bytes as they arrive, take complete frame bodies out.
///
/// Memory stays bounded: an oversized length prefix is refused as soon as its four bytes are
/// seen, and at most one frame body is buffered beyond the bytes most recently pushed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: bool,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame body, `Ok(None)` if more bytes are needed. After an
    /// error the stream is unusable (the frame boundary is lost) and every call fails.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.failed {
            return Err(FrameError::Malformed("stream already failed".into()));
        }
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&self.buf[..PREFIX_LEN]);
        let len = match body_len(prefix) {
            Ok(len) => len,
            Err(e) => {
                self.failed = true;
                self.buf.clear();
                return Err(e);
            }
        };
        if self.buf.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let body = self.buf[PREFIX_LEN..PREFIX_LEN + len].to_vec();
        self.buf.drain(..PREFIX_LEN + len);
        Ok(Some(body))
    }

    /// Bytes received but not yet returned as a frame (a stream that ends with some is truncated).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientFrame, Deposit, Hello, client_frame::Request};
    use proptest::prelude::*;

    fn hello(id: u64) -> ClientFrame {
        ClientFrame {
            request_id: id,
            request: Some(Request::Hello(Hello {
                protocol_version: 1,
                software: "t".into(),
            })),
        }
    }

    #[test]
    fn round_trip() {
        let f = encode(&hello(7)).unwrap();
        assert_eq!(decode_exact::<ClientFrame>(&f).unwrap(), hello(7));
    }

    #[test]
    fn truncated_frame_is_rejected() {
        let f = encode(&hello(7)).unwrap();
        for cut in 0..f.len() {
            let err = decode_exact::<ClientFrame>(&f[..cut]).unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { .. }),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut f = encode(&hello(7)).unwrap();
        f.push(0);
        assert_eq!(
            decode_exact::<ClientFrame>(&f),
            Err(FrameError::TrailingBytes(1))
        );
    }

    #[test]
    fn unknown_field_in_body_is_rejected() {
        let mut body = hello(7).encode_to_vec();
        // field 30, varint 1: valid protobuf, unknown to ClientFrame
        body.extend_from_slice(&[0xf0, 0x01, 0x01]);
        assert!(matches!(
            decode_body::<ClientFrame>(&body),
            Err(FrameError::NonCanonical { .. })
        ));
    }

    #[test]
    fn garbage_body_is_malformed() {
        assert!(matches!(
            decode_body::<ClientFrame>(&[0xff, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_prefix_is_refused_before_buffering() {
        let mut d = FrameDecoder::new();
        d.push(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        assert!(matches!(d.next_body(), Err(FrameError::TooLarge { .. })));
        assert_eq!(d.pending(), 0);
        assert!(d.next_body().is_err(), "a failed stream stays failed");
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let big = ClientFrame {
            request_id: 1,
            request: Some(Request::Deposit(Deposit {
                mailbox_id: vec![0; 16],
                deposit_token: vec![],
                sealed: vec![0; MAX_FRAME_LEN],
                ..Default::default()
            })),
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }

    /// A full entry bundle of the largest directory entries the parser accepts, answered to
    /// GetLog with the largest request id, fits in one frame.
    #[test]
    fn full_entry_bundle_fits_in_a_frame() {
        use crate::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
        use crate::ids::MailboxId;
        use crate::tlog::tiles::{TILE_WIDTH, encode_bundle};
        use crate::wire::{LogData, ServerFrame, server_frame::Response};
        let authority = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let post = "p".repeat(64);
        let body = EntryBody {
            action: EntryAction::Enrol(Enrolment {
                label: format!("{post}/{}", "d".repeat(64)),
                post_id: post,
                identity_key: [5; crate::directory::IDENTITY_KEY_LEN],
                auth_key: ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key(),
                mailbox_id: MailboxId([7; 16]),
            }),
            not_before: u64::MAX,
        };
        let entry = sign_entry(&body, &authority).expect("the largest entry encodes");
        let bundle = encode_bundle(&vec![entry; usize::from(TILE_WIDTH)]).expect("bundle");
        let answer = ServerFrame {
            request_id: u64::MAX,
            response: Some(Response::LogData(LogData { data: bundle })),
        };
        let framed = encode(&answer).expect("a full bundle fits in MAX_FRAME_LEN");
        // The parser admits nothing longer: post id and desk are at most 64 bytes each, every
        // other field has a fixed size.
        assert!(framed.len() <= PREFIX_LEN + MAX_FRAME_LEN);
    }

    #[test]
    fn same_length_non_canonical_bodies_are_refused() {
        // Found by fuzz/fuzz_targets/frame_{client,server}: an unpacked repeated field with an
        // over-long varint, and fields out of order, each as long as the canonical encoding.
        let unpacked = hex::decode("0809420810c6dfdfdfdfdf00").expect("hex");
        assert!(matches!(
            decode_body::<ClientFrame>(&unpacked),
            Err(FrameError::NonCanonical { .. })
        ));
        let reordered = hex::decode("120008ffffffff07").expect("hex");
        assert!(matches!(
            decode_body::<crate::wire::ServerFrame>(&reordered),
            Err(FrameError::NonCanonical { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoder_reassembles_any_split(ids in proptest::collection::vec(any::<u64>(), 1..8),
                                          splits in proptest::collection::vec(1usize..40, 1..50)) {
            let frames: Vec<ClientFrame> = ids.iter().map(|&i| hello(i)).collect();
            let mut stream = Vec::new();
            for f in &frames { stream.extend(encode(f).unwrap()); }
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while pos < stream.len() {
                let n = splits[k % splits.len()].min(stream.len() - pos);
                d.push(&stream[pos..pos + n]);
                pos += n;
                k += 1;
                while let Some(body) = d.next_body().unwrap() {
                    out.push(decode_body::<ClientFrame>(&body).unwrap());
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(d.pending(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_exact::<ClientFrame>(&bytes);
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            while let Ok(Some(body)) = d.next_body() {
                let _ = decode_body::<ClientFrame>(&body);
            }
        }
    }
}
