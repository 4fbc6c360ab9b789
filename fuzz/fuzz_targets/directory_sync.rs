//! The client's directory download: served checkpoints, entry bundles and paths, honest or
//! not, against a stored checkpoint (see `refuge_fuzz::sync`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::sync::seeds),
    |data: &[u8]| refuge_fuzz::sync::run(data)
);
