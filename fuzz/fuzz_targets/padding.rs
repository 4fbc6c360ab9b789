//! Padding removal: what `unpad` accepts is the plaintext, the 0x80 marker and zeros, at a
//! bucket size no smaller than the plaintext's own; `pad` gives the plaintext back the same way.
//! (A sender may pad to a larger bucket than needed; `unpad` accepts that by design.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_proto::padding;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::padding),
    |data: &[u8]| {
        if let Ok(plaintext) = padding::unpad(data) {
            let n = plaintext.len();
            assert_eq!(&data[..n], plaintext);
            assert_eq!(data[n], 0x80);
            assert!(data[n + 1..].iter().all(|&b| b == 0));
            let own = padding::bucket_for(n).expect("unpadded, so within the largest bucket");
            assert!(own <= data.len());
            let again = padding::pad(plaintext).expect("unpadded, so paddable");
            assert_eq!(again.len(), own);
            assert_eq!(padding::unpad(&again), Ok(plaintext));
        }
    }
);
