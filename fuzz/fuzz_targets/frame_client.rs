//! Client frames as the relay reads them: whole-input and streaming decoding of `ClientFrame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_proto::wire::ClientFrame;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::client_frames),
    |data: &[u8]| refuge_fuzz::check_frames::<ClientFrame>(data)
);
