//! Server frames as a client reads them: whole-input and streaming decoding of `ServerFrame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_proto::wire::ServerFrame;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::server_frames),
    |data: &[u8]| refuge_fuzz::check_frames::<ServerFrame>(data)
);
