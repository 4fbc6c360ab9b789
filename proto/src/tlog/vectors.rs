//! Reader for the known-answer files in `tests/vectors/tlog/` (format described in the README
//! there): records separated by blank lines, `key: value` lines, `#` comments, and multi-line
//! values between `<<<` and `>>>`.

/// The vector files, embedded so that the tests need no file access.
pub(crate) mod files {
    pub(crate) const RFC6962: &str = include_str!("../../../tests/vectors/tlog/rfc6962.txt");
    pub(crate) const CT_ARGON2020: &str =
        include_str!("../../../tests/vectors/tlog/ct-argon2020.txt");
    pub(crate) const SIGNED_NOTE: &str =
        include_str!("../../../tests/vectors/tlog/signed-note.txt");
    pub(crate) const CHECKPOINT: &str = include_str!("../../../tests/vectors/tlog/checkpoint.txt");
    pub(crate) const COSIGNATURE: &str =
        include_str!("../../../tests/vectors/tlog/cosignature.txt");
    pub(crate) const TILES: &str = include_str!("../../../tests/vectors/tlog/tiles.txt");
    pub(crate) const WITNESS: &str = include_str!("../../../tests/vectors/tlog/witness.txt");
    pub(crate) const PROOF: &str = include_str!("../../../tests/vectors/tlog/proof.txt");
    pub(crate) const POLICY: &str = include_str!("../../../tests/vectors/tlog/policy.txt");
}

#[derive(Debug)]
pub(crate) struct Record {
    /// Line of the file where the record starts, for failure messages.
    pub(crate) line: usize,
    fields: Vec<(String, String)>,
}

impl Record {
    pub(crate) fn opt(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn get(&self, key: &str) -> &str {
        self.opt(key)
            .unwrap_or_else(|| panic!("record at line {} has no {key:?}", self.line))
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn u64(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("record at line {}: {key} is not a number", self.line))
    }

    /// Whether the record describes a valid input (`result: valid`) or one that must be
    /// rejected (`result: invalid`).
    pub(crate) fn valid(&self) -> bool {
        match self.get("result") {
            "valid" => true,
            "invalid" => false,
            other => panic!("record at line {}: result {other:?}", self.line),
        }
    }

    pub(crate) fn is(&self, kind: &str) -> bool {
        self.opt("kind") == Some(kind)
    }
}

/// Parses a vector file.
pub(crate) fn parse(text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut current: Option<Record> = None;
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            records.extend(current.take());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("line {}: expected \"key: value\"", n + 1));
        let value = value.strip_prefix(' ').unwrap_or(value);
        let value = if value == "<<<" {
            let mut block = String::new();
            loop {
                let (_, l) = lines
                    .next()
                    .unwrap_or_else(|| panic!("line {}: unterminated <<<", n + 1));
                if l == ">>>" {
                    break;
                }
                block.push_str(l);
                block.push('\n');
            }
            block
        } else {
            value.to_string()
        };
        current
            .get_or_insert_with(|| Record {
                line: n + 1,
                fields: Vec::new(),
            })
            .fields
            .push((key.to_string(), value));
    }
    records.extend(current);
    records
}
