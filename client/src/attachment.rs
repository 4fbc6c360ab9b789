//! Attachments' encryption and pointer (issue 18, ADR 0013): `refuge_proto::attachment`, the
//! sans-I/O core, with who is at fault for each of its errors, in this crate's terms.

pub use refuge_proto::attachment::*;

use crate::error::Blame;

/// Who is at fault: a chunk that does not open or a stream cut short is the relay's (or the
/// path's) doing as far as this device can tell; sizes that contradict the pointer are the
/// sender's; a wrong length fed in is this program's.
pub fn blame(e: &AttachmentError) -> Blame {
    match e {
        AttachmentError::Forged { .. }
        | AttachmentError::OutOfOrder { .. }
        | AttachmentError::ChunkLength { .. }
        | AttachmentError::Truncated { .. } => Blame::Attack,
        AttachmentError::Inconsistent(_) => Blame::Bug,
        AttachmentError::TooLarge { .. } => Blame::Usage,
        AttachmentError::WrongLength { .. } => Blame::Bug,
        _ => Blame::Bug,
    }
}
