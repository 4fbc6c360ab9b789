//! The relay's request handler against a real SQLite store (see `refuge_fuzz::handler`): slower
//! than `relay_handler`, and it also covers what only SQLite does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::handler::seeds),
    |data: &[u8]| refuge_fuzz::handler::run_sqlite(data)
);
