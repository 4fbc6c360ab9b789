//! What the programs print and their exit status for the common commands and errors that need
//! no relay, pinned as snapshots (`tests/cmd/*.toml`, trycmd). Output that carries a random key
//! uses trycmd's `[..]`. After a deliberate change of wording: `TRYCMD=overwrite cargo test -p
//! refuge-cli --test cmd`, then read the diff. The commands that reach a relay are tested by
//! running them against the real one (the workspace's `tests/`).

#[test]
fn commands_and_errors() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}

/// A refused `init` leaves no store behind: the inputs are checked before one is made (`refuge`),
/// or the one made for them is removed (`refuge-inbox`).
#[test]
fn a_refused_init_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(["--data-dir", data.to_str().expect("utf-8")])
            .args(args)
            .env_clear()
            .env("REFUGE_PASSPHRASE", "a long test passphrase")
            .env("REFUGE_DANGEROUSLY_WEAK_KDF_FOR_TESTS", "1")
            .env("RUST_LOG", "error")
            .output()
            .expect("run")
    };
    let user = run(
        env!("CARGO_BIN_EXE_refuge"),
        &["init", "--policy", "none.signed", "--authority-key", "00"],
    );
    assert_eq!(user.status.code(), Some(1));
    assert!(!refuge_client::store::Store::exists(&data));
    let request = tmp.path().join("desk.req");
    let staff = run(
        env!("CARGO_BIN_EXE_refuge-inbox"),
        &[
            "init",
            "--post",
            "emb-xx",
            "--label",
            "hr desk",
            "--request-out",
            request.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(staff.status.code(), Some(1));
    assert!(!refuge_client::store::Store::exists(&data));
    assert!(!request.exists());
    // And a good label afterwards works in the same place.
    let ok = run(
        env!("CARGO_BIN_EXE_refuge-inbox"),
        &[
            "init",
            "--post",
            "emb-xx",
            "--label",
            "emb-xx/hr-desk",
            "--request-out",
            request.to_str().expect("utf-8"),
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(refuge_client::store::Store::exists(&data));
}
