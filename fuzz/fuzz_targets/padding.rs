//! Padding removal: what `unpad` accepts is the plaintext, the 0x80 marker and zeros, at a
//! bucket size no smaller than the plaintext's own; `pad` gives the plaintext back the same way.
//! (A sender may pad to a larger bucket than needed; `unpad` accepts that by design.) The outer
//! padding of sealed messages (`unpad_sealed`) obeys the same rules at the outer sizes.
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
        if let Ok(sealed) = padding::unpad_sealed(data) {
            let n = sealed.len();
            assert_eq!(&data[..n], sealed);
            assert_eq!(data[n], 0x80);
            assert!(data[n + 1..].iter().all(|&b| b == 0));
            let bucket = data.len() - padding::SEALED_ALLOWANCE;
            let again = padding::pad_sealed(sealed, bucket).expect("it fitted this outer size");
            assert_eq!(again, data);
        }
    }
);
