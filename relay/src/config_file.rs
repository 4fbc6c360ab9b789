//! The relay's configuration file: TOML whose keys are `refuge-relay serve`'s flags (dashes
//! written as underscores), so that every flag has a key and no key means anything a flag does
//! not. `serve --config FILE` reads it; flags given on the command line override it (a list
//! flag given on the command line replaces the file's list). `check-config FILE` checks one.
//!
//! The file is turned into flags and parsed by the same clap definition as the command line,
//! so a value is checked exactly as the flag's would be; an error names the file, the key, the
//! bad value and what is allowed. Unknown keys, tables and values of the wrong kind are errors.

use crate::cli::Cli;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "REFUGE_RELAY_CONFIG";

/// Largest configuration file read.
const MAX_CONFIG_LEN: u64 = 1 << 20;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is larger than {MAX_CONFIG_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: unknown key `{key}`; the keys are the serve flags: {known}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("{path}: these keys do not go together: {what}")]
    Together { path: PathBuf, what: String },
    #[error("{path}: key `{key}` = {value}: {what}")]
    BadValue {
        path: PathBuf,
        key: String,
        value: String,
        what: String,
    },
}

impl ConfigFileError {
    pub fn hint(&self) -> &'static str {
        match self {
            ConfigFileError::Read { .. } | ConfigFileError::TooLarge { .. } => {
                "check the path given with --config (or $REFUGE_RELAY_CONFIG)"
            }
            ConfigFileError::Syntax { .. } => {
                "fix the line named; docs/relay.example.toml shows every key with its default"
            }
            ConfigFileError::UnknownKey { .. }
            | ConfigFileError::BadValue { .. }
            | ConfigFileError::Together { .. } => {
                "see `refuge-relay serve --help` and docs/relay.example.toml for each key and what it takes"
            }
        }
    }
}

/// One serve flag as a configuration key.
struct Key {
    /// The key: the flag without its dashes, `-` written `_`.
    name: String,
    /// The flag, `--quic-listen`.
    flag: String,
    kind: KeyKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// A flag without a value (`--onion`): the key takes `true` or `false`.
    Switch,
    /// One value.
    Value,
    /// A repeatable flag: the key takes a list.
    List,
}

/// The keys, from the serve command's definition (so a new flag is a new key by itself).
fn keys() -> Vec<Key> {
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("the serve subcommand exists");
    serve
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if matches!(long, "help" | "config") {
                return None;
            }
            let kind = match a.get_action() {
                clap::ArgAction::SetTrue => KeyKind::Switch,
                clap::ArgAction::Append => KeyKind::List,
                _ => KeyKind::Value,
            };
            Some(Key {
                name: long.replace('-', "_"),
                flag: format!("--{long}"),
                kind,
            })
        })
        .collect()
}

/// The names of every key, in the command's order.
pub fn key_names() -> Vec<String> {
    keys().into_iter().map(|k| k.name).collect()
}

fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_LEN + 1).read_to_string(&mut text))
        .map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(ConfigFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    text.parse::<toml::Table>()
        .map_err(|e| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn kind_of(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a decimal number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// The flags the file stands for, key by key (`skip`: keys of list flags the command line
/// gives, whose file values it replaces).
fn flags(
    path: &Path,
    table: &toml::Table,
    skip: &[String],
) -> Result<Vec<(String, Vec<OsString>)>, ConfigFileError> {
    let keys = keys();
    let mut out = Vec::new();
    for (name, value) in table {
        let Some(key) = keys.iter().find(|k| &k.name == name) else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: name.clone(),
                known: keys
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let bad = |what: String| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            key: name.clone(),
            value: value.to_string(),
            what,
        };
        let mut args: Vec<OsString> = Vec::new();
        match key.kind {
            KeyKind::Switch => match value {
                toml::Value::Boolean(true) => args.push(key.flag.clone().into()),
                toml::Value::Boolean(false) => {}
                other => {
                    return Err(bad(format!(
                        "it takes true or false, not {}",
                        kind_of(other)
                    )));
                }
            },
            KeyKind::Value => {
                let v = scalar(value).ok_or_else(|| {
                    bad(format!(
                        "it takes one string or integer, not {}",
                        kind_of(value)
                    ))
                })?;
                args.push(key.flag.clone().into());
                args.push(v.into());
            }
            KeyKind::List => {
                if skip.contains(&key.flag) {
                    continue;
                }
                let toml::Value::Array(items) = value else {
                    return Err(bad(format!("it takes a list, not {}", kind_of(value))));
                };
                for item in items {
                    let v = scalar(item).ok_or_else(|| {
                        bad(format!("its items are strings, not {}", kind_of(item)))
                    })?;
                    args.push(key.flag.clone().into());
                    args.push(v.into());
                }
            }
        }
        out.push((name.clone(), args));
    }
    Ok(out)
}

/// Checks the file as the serve command would read it, each key's value exactly as its flag's.
/// Returns the number of keys set.
pub fn check(path: &Path) -> Result<usize, ConfigFileError> {
    check_table(path, &read(path)?)
}

/// [`check`] of a file already read (`path` only names it in errors).
fn check_table(path: &Path, table: &toml::Table) -> Result<usize, ConfigFileError> {
    let keyed = flags(path, table, &[])?;
    let all: Vec<OsString> = keyed.iter().flat_map(|(_, a)| a.iter().cloned()).collect();
    let Err(whole) = parse_serve(&all) else {
        return Ok(table.len());
    };
    // Name the key whose value is bad on its own (clap's message says the value and what the
    // flag takes); otherwise the keys are fine alone and wrong together.
    for (name, args) in &keyed {
        if let Err(e) = parse_serve(args) {
            if matches!(
                e.kind(),
                ErrorKind::MissingRequiredArgument | ErrorKind::ArgumentConflict
            ) {
                continue;
            }
            return Err(ConfigFileError::BadValue {
                path: path.to_path_buf(),
                key: name.clone(),
                value: table.get(name).map(|v| v.to_string()).unwrap_or_default(),
                what: clap_message(&e),
            });
        }
    }
    Err(ConfigFileError::Together {
        path: path.to_path_buf(),
        what: clap_message(&whole),
    })
}

fn parse_serve(args: &[OsString]) -> Result<Cli, clap::Error> {
    let argv = [OsString::from("refuge-relay"), OsString::from("serve")]
        .into_iter()
        .chain(args.iter().cloned());
    Cli::try_parse_from(argv)
}

/// clap's message (which names the value and what the flag takes) on one line, without its
/// `error: ` and usage, and with flags called by their keys.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string();
    // Flags called by their keys, the longest first (`--onion-port` before `--onion`).
    let mut keys = keys();
    keys.sort_by_key(|k| std::cmp::Reverse(k.flag.len()));
    for key in keys {
        line = line.replace(&key.flag, &format!("`{}`", key.name));
    }
    line
}

/// The command line with the configuration file's settings put in front of the serve flags
/// given, so that those override them: `serve --config FILE` (or `$REFUGE_RELAY_CONFIG`).
/// Any other command line comes back unchanged.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(argv);
    }
    let mut path: Option<PathBuf> = None;
    let mut given = Vec::new();
    let mut rest = argv[2..].iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            path = rest.next().map(PathBuf::from);
            continue;
        }
        if let Some(p) = text.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
            continue;
        }
        given.push(arg.clone());
    }
    let path = path.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
    let Some(path) = path else {
        return Ok(argv);
    };
    // Read once: the flags come from exactly the text that was checked.
    let table = read(&path)?;
    check_table(&path, &table)?;
    // A list flag on the command line replaces the file's list.
    let listed: Vec<String> = keys()
        .into_iter()
        .filter(|k| k.kind == KeyKind::List)
        .map(|k| k.flag)
        .filter(|flag| {
            given.iter().any(|a| {
                let a = a.to_string_lossy();
                a == flag.as_str() || a.starts_with(&format!("{flag}="))
            })
        })
        .collect();
    let from_file: Vec<OsString> = flags(&path, &table, &listed)?
        .into_iter()
        .flat_map(|(_, a)| a)
        .collect();
    let mut out = vec![argv[0].clone(), argv[1].clone()];
    out.extend(from_file);
    out.extend(given);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("relay.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn serve_options(argv: &[&str]) -> crate::server::ServeOptions {
        let argv = argv.iter().map(OsString::from).collect();
        let expanded = expand(argv).expect("expands");
        match Cli::try_parse_from(expanded).expect("parses").command {
            Command::Serve(args) => args.into_options(),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_documented_example_has_every_key_and_is_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/relay.example.toml");
        let text = std::fs::read_to_string(example).expect("docs/relay.example.toml");
        for key in key_names() {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
                }),
                "docs/relay.example.toml does not document `{key}`"
            );
        }
        check(Path::new(example)).expect("the example is valid");
    }

    #[test]
    fn the_file_sets_what_the_flags_would_and_flags_override_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(
            tmp.path(),
            "max_sessions = 64\nidle_timeout = 30\nquic_listen = \"127.0.0.1:9443\"\n\
             retention_days = 7\nallow_non_loopback_tcp = false\n",
        );
        let f = file.to_str().unwrap();
        let o = serve_options(&["refuge-relay", "serve", "--config", f]);
        assert_eq!(o.limits.max_sessions, 64);
        assert_eq!(o.limits.idle_timeout.as_secs(), 30);
        assert_eq!(o.quic_listen.to_string(), "127.0.0.1:9443");
        assert_eq!(o.retention.unwrap().as_secs(), 7 * 86_400);
        // A flag beats the file; keys left out keep the flags' defaults.
        let o = serve_options(&[
            "refuge-relay",
            "serve",
            "--max-sessions",
            "8",
            "--config",
            f,
        ]);
        assert_eq!(o.limits.max_sessions, 8);
        assert_eq!(o.tcp_listen.to_string(), "127.0.0.1:7444");
    }

    #[test]
    fn a_list_on_the_command_line_replaces_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(
            tmp.path(),
            &format!(
                "authority_key = [\"{}\"]\n",
                hex::encode(
                    ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                        .verifying_key()
                        .as_bytes()
                )
            ),
        );
        let f = file.to_str().unwrap();
        let o = serve_options(&["refuge-relay", "serve", "--config", f]);
        assert_eq!(o.authority_keys.len(), 1);
        let other = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[2; 32])
                .verifying_key()
                .as_bytes(),
        );
        let o = serve_options(&[
            "refuge-relay",
            "serve",
            "--config",
            f,
            "--authority-key",
            &other,
        ]);
        assert_eq!(o.authority_keys.len(), 1);
        assert_eq!(hex::encode(o.authority_keys[0].as_bytes()), other);
    }

    #[test]
    fn errors_name_the_key_the_value_and_what_is_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let err = |text: &str| check(&write(tmp.path(), text)).unwrap_err().to_string();
        let e = err("max_sesions = 10\n");
        assert!(
            e.contains("unknown key `max_sesions`") && e.contains("max_sessions"),
            "{e}"
        );
        let e = err("max_sessions = 0\n");
        assert!(
            e.contains("`max_sessions` = 0") && e.contains("1..=1000000"),
            "{e}"
        );
        let e = err("quic_listen = \"nowhere\"\n");
        assert!(e.contains("`quic_listen`") && e.contains("nowhere"), "{e}");
        let e = err("onion = \"yes\"\n");
        assert!(e.contains("`onion`") && e.contains("true or false"), "{e}");
        let e = err("authority_key = \"abcd\"\n");
        assert!(e.contains("`authority_key`") && e.contains("a list"), "{e}");
        let e = err("[limits]\nmax_sessions = 3\n");
        assert!(e.contains("unknown key `limits`"), "{e}");
        let e = err("max_sessions = \n");
        assert!(e.contains("not valid TOML"), "{e}");
        // A value valid on its own but not with the others: onion_port needs onion.
        let e = err("onion_port = 8443\n");
        assert!(e.contains("onion"), "{e}");
    }
}
