//! The Debian packages (scripts/package-deb), installed on this machine: the relay package makes
//! its system user, private data directory, configuration and sandboxed systemd unit
//! (`systemd-analyze verify` passes without a warning); the relay started with the unit's
//! command, environment, user and umask serves a first contact made with the installed client
//! programs (the sandbox directives need systemd as PID 1, which this machine has not: they are
//! verified, not exercised); purging removes everything but the data directory the data policy
//! keeps. The desktop app's package installs its desktop entry, AppStream metadata and icon,
//! which pass `desktop-file-validate` and `appstreamcli validate`, and purges without a trace.
//!
//! It installs packages, so it needs root and a machine without the packages: it is ignored by a
//! plain `cargo test` and run by scripts/test (CI runs as root) with `--ignored`.

use refuge_tests::*;
use std::path::Path;
use std::process::Command;

const UNIT: &str = "/lib/systemd/system/refuge-relay.service";
const CONFIG: &str = "/etc/refuge-relay/relay.toml";
const DATA: &str = "/var/lib/refuge-relay";
const APP_ID: &str = "invalid.refuge.Refuge";
const PACKAGES: [&str; 3] = ["refuge-relay", "refuge-client", "refuge-app"];

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed(package: &str) -> bool {
    sh("dpkg-query", &["-W", "-f=${Status}", package])
        .stdout
        .starts_with(b"install ok installed")
}

/// The unit's `Key=value` lines for `key`, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Removes what the test installed, whatever happens (the test checks the purge itself first).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let mut purge = vec!["--purge"];
        purge.extend(PACKAGES);
        let _ = sh("dpkg", &purge);
        let _ = std::fs::remove_dir_all(DATA);
        if sh("getent", &["passwd", "refuge-relay"]).status.success() {
            let _ = sh("deluser", &["--system", "refuge-relay"]);
        }
    }
}

#[test]
#[ignore = "installs the .deb packages: needs root; scripts/test runs it with --ignored"]
fn the_installed_package_serves_a_first_contact_and_purges_cleanly() {
    assert_eq!(
        sh("id", &["-u"]).stdout,
        b"0\n",
        "this test installs packages: run it as root (CI does)"
    );
    assert!(
        !PACKAGES.iter().any(|p| installed(p)) && !Path::new(DATA).exists(),
        "refuge packages or {DATA} are already on this machine; this test installs and purges \
         the packages and will not touch an existing installation"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let debs = tempfile::tempdir().expect("temp dir");
    let out = ok(
        &root.join("scripts/package-deb").display().to_string(),
        &[
            "--profile",
            "debug",
            "--out",
            &debs.path().display().to_string(),
        ],
    );
    let packages: Vec<&str> = out.lines().filter(|l| l.ends_with(".deb")).collect();
    assert_eq!(packages.len(), PACKAGES.len(), "{out}");
    let mut install = vec!["-i"];
    install.extend(&packages);
    let _installed = Installed;
    ok("dpkg", &install);

    // What the package set up.
    let passwd = ok("getent", &["passwd", "refuge-relay"]);
    assert!(
        passwd.contains(":/var/lib/refuge-relay:/usr/sbin/nologin"),
        "{passwd}"
    );
    let data = ok("stat", &["-c", "%a %U %G", DATA]);
    assert_eq!(data.trim(), "700 refuge-relay refuge-relay");
    let config = ok("stat", &["-c", "%a %U %G", CONFIG]);
    assert_eq!(config.trim(), "640 root refuge-relay");
    // It exits 0 even on unknown keys or system call groups, which it only warns about: the
    // unit passes when it exits 0 and says nothing.
    let verify = sh("systemd-analyze", &["verify", UNIT]);
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let unit = std::fs::read_to_string(UNIT).expect("the unit is installed");
    for sandboxing in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryMax=2G",
        "TasksMax=256",
    ] {
        assert!(
            unit.lines().any(|l| l == sandboxing),
            "{sandboxing} missing"
        );
    }
    let out = ok("/usr/bin/refuge-relay", &["check-config", CONFIG]);
    assert!(out.contains("valid"), "{out}");

    // The desktop app: its entry and metadata are what desktops and software centres accept.
    let desktop = format!("/usr/share/applications/{APP_ID}.desktop");
    let metainfo = format!("/usr/share/metainfo/{APP_ID}.metainfo.xml");
    let icon = format!("/usr/share/icons/hicolor/scalable/apps/{APP_ID}.svg");
    let out = sh("desktop-file-validate", &[&desktop]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "desktop-file-validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ok("appstreamcli", &["validate", "--no-net", &metainfo]);
    assert!(Path::new(&icon).exists(), "{icon}");
    let entry = std::fs::read_to_string(&desktop).expect("desktop entry");
    assert!(entry.lines().any(|l| l == "Exec=refuge-app"), "{entry}");
    let version = ok("/usr/bin/refuge-app", &["--version"]);
    assert!(version.starts_with("refuge-app "), "{version}");
    let control = ok("dpkg-query", &["-W", "-f=${Depends}", "refuge-app"]);
    let recommends = ok("dpkg-query", &["-W", "-f=${Recommends}", "refuge-app"]);
    assert!(
        recommends.contains("obfs4proxy") && recommends.contains("snowflake-client"),
        "the transports the connection assist offers: {recommends}"
    );
    for dlopened in ["libx11-6", "libxkbcommon-x11-0", "fonts-noto-core"] {
        assert!(
            control.contains(dlopened),
            "refuge-app depends on {dlopened}: {control}"
        );
    }

    // The operator sets the ministry's authority key, as docs/operations.md says; the relay is
    // then started with the unit's command, environment, user and umask.
    let mut w = setup_on("tcp", |dir, args| {
        let key = &args[args
            .iter()
            .position(|a| a == "--authority-key")
            .expect("key")
            + 1];
        let config = std::fs::read_to_string(CONFIG).expect("config");
        let edited = config.replace(
            "authority_key = []",
            &format!("authority_key = [\"{key}\"]"),
        );
        assert_ne!(
            config, edited,
            "the packaged config has an authority_key line"
        );
        std::fs::write(CONFIG, edited).expect("edit the config");

        let user = unit_values(&unit, "User").pop().expect("User=");
        let group = unit_values(&unit, "Group").pop().expect("Group=");
        let umask = unit_values(&unit, "UMask").pop().expect("UMask=");
        let exec = unit_values(&unit, "ExecStart").pop().expect("ExecStart=");
        let mut command = Command::new("setpriv");
        command
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={group}"),
                "--init-groups",
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "/bin/sh",
                "-c",
                &format!("umask {umask} && exec {exec}"),
            ])
            .env_clear();
        for assignment in unit_values(&unit, "Environment") {
            let (name, value) = assignment.split_once('=').expect("NAME=value");
            command.env(name, value);
        }
        let log = dir.join("relay.stderr.log");
        let stderr = std::fs::File::create(&log).expect("relay log");
        RelayProcess::start_command(command, Path::new(DATA), stderr, log)
    });
    assert_eq!(
        w.relay.tcp.to_string(),
        "127.0.0.1:7444",
        "the packaged config"
    );

    let user = w.p("user");
    let out = run_ok(
        "/usr/bin/refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    assert!(out.contains("sent to 2 staff devices"), "{out}");
    let read = run_ok(
        "/usr/bin/refuge-inbox",
        &["--data-dir", &w.p("staff1"), "read"],
    );
    assert!(read.contains(FIRST), "{read}");
    let (status, body) = http_get(
        w.relay.metrics.expect("metrics_listen in the config"),
        "/health",
    );
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The relay's files belong to its user and are private.
    let db = ok("stat", &["-c", "%a %U", &format!("{DATA}/relay.sqlite3")]);
    assert_eq!(db.trim(), "600 refuge-relay");
    assert!(w.relay.stop(), "SIGTERM: a clean exit");

    // Purge: everything of the packages goes but the data directory (and its owner), which the
    // data policy keeps (docs/operations.md).
    let mut purge = vec!["--purge"];
    purge.extend(PACKAGES);
    let out = sh("dpkg", &purge);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kept /var/lib/refuge-relay"),
        "the purge says what it kept"
    );
    for gone in [
        "/usr/bin/refuge-relay",
        "/usr/bin/refuge",
        "/usr/bin/refuge-inbox",
        "/usr/bin/refuge-admin",
        "/usr/bin/refuge-audit",
        UNIT,
        "/etc/refuge-relay",
        "/usr/share/doc/refuge-relay",
        "/usr/share/doc/refuge-client",
        "/usr/bin/refuge-app",
        &desktop,
        &metainfo,
        &icon,
        "/usr/share/doc/refuge-app",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    assert!(!PACKAGES.iter().any(|p| installed(p)));
    assert!(
        Path::new(DATA).join("relay.sqlite3").exists(),
        "the data is kept"
    );
    assert!(
        Path::new(DATA).join("log-key").exists(),
        "the keys are kept"
    );
    // `_installed` leaves the machine as the test found it: no data directory, no user.
}

#[test]
fn the_torrc_example_is_valid_for_c_tor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("packaging/tor/torrc.example");
    let out = sh(
        "tor",
        &["--verify-config", "-f", &example.display().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(example).expect("example");
    for line in [
        "HiddenServicePort 443 127.0.0.1:7444",
        "HiddenServicePort 80 127.0.0.1:7445",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}");
    }
    let config = std::fs::read_to_string(root.join("packaging/debian/relay.toml")).expect("toml");
    for line in [
        "tcp_listen = \"127.0.0.1:7444\"",
        "log_http = \"127.0.0.1:7445\"",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "the packaged config forwards {line}"
        );
    }
}
