//! Attachment metadata stripping (`refuge-strip`): any input gives a result, never a panic of
//! the crate's own code, and a stripped file is of the format it was read as and strips again
//! to itself with nothing more to remove. Seeds: the crate's sample files (JPEG, PNG, WebP and
//! PDF with GPS and author fields, and clean ones).
//!
//! `strip` runs the parsers it uses (img-parts, kamadak-exif, lopdf) under `catch_unwind` and
//! reports a panic in them as a damaged file: that is its contract, so a panic raised in the
//! code of a crate from the registry is printed, not treated as a crash. Any other panic (in
//! `strip/src/`, or an assertion here) aborts, as libFuzzer's panic hook does for every other
//! target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_strip::{StripError, sniff, strip};

fn seeds() -> Vec<Vec<u8>> {
    [
        &include_bytes!("../../strip/tests/fixtures/jpeg-gps-author.jpg")[..],
        include_bytes!("../../strip/tests/fixtures/png-gps-author.png"),
        include_bytes!("../../strip/tests/fixtures/webp-gps-author.webp"),
        include_bytes!("../../strip/tests/fixtures/pdf-gps-author.pdf"),
        include_bytes!("../../strip/tests/fixtures/pdf-objstm.pdf"),
        include_bytes!("../../strip/tests/fixtures/clean.jpg"),
        include_bytes!("../../strip/tests/fixtures/clean.png"),
        include_bytes!("../../strip/tests/fixtures/clean.webp"),
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

/// Keeps libFuzzer's aborting panic hook for every panic but those raised in a registry
/// crate's code (their sources are under `.../registry/src/`).
fn abort_on_own_panics() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_dependency = info
            .location()
            .is_some_and(|l| l.file().contains("/registry/src/"));
        if in_dependency {
            eprintln!("panic in a dependency, caught by refuge-strip: {info}");
        } else {
            abort(info);
        }
    }));
}

fuzz_target!(
    init: {
        abort_on_own_panics();
        refuge_fuzz::write_seeds(seeds);
    },
    |data: &[u8]| {
        match strip(data) {
            Ok(out) => {
                assert_eq!(out.format, sniff(data));
                assert_eq!(sniff(&out.bytes), out.format);
                let again = strip(&out.bytes).expect("a stripped file strips again");
                assert!(again.report.removed.is_empty(), "left: {:?}", again.report.removed);
                assert_eq!(again.bytes, out.bytes);
            }
            Err(StripError::UnknownFormat) => assert_eq!(sniff(data), refuge_strip::Format::Unknown),
            Err(_) => {}
        }
    }
);
