//! The relay's request handler against the in-memory store (see `refuge_fuzz::handler`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::handler::seeds),
    |data: &[u8]| refuge_fuzz::handler::run(data)
);
