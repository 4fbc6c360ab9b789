//! Evidence that a relay served a directory log failing its proofs, kept inside the encrypted
//! store (never in plaintext files beside it) until the user exports it.

use super::{Store, to_day};
use crate::error::Result;
use rusqlite::{OptionalExtension, params};

/// Most pieces of directory evidence kept; later ones are not kept (the first ones show the
/// attack as well as any).
pub const MAX_DIRECTORY_EVIDENCE: i64 = 100;

/// One piece of directory evidence, as `refuge-audit check-evidence` reads it once exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEvidence {
    pub id: i64,
    /// Unix seconds, rounded down to the day.
    pub day: i64,
    /// What it shows (`fork`, `rollback`, `invalid-entry`, …).
    pub problem: String,
    pub text: String,
}

impl Store {
    /// Keeps evidence found at `now` (Unix seconds). The same evidence found again (each run
    /// that meets the same bad log finds it) is kept once. Returns its id, or `None` once
    /// [`MAX_DIRECTORY_EVIDENCE`] are kept.
    pub fn keep_directory_evidence(
        &self,
        now: i64,
        problem: &str,
        text: &str,
    ) -> Result<Option<i64>> {
        let known: Option<i64> = self
            .conn()
            .query_row(
                "SELECT id FROM directory_evidence WHERE text = ?1",
                [text],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some() {
            return Ok(known);
        }
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM directory_evidence", [], |r| r.get(0))?;
        if n >= MAX_DIRECTORY_EVIDENCE {
            return Ok(None);
        }
        self.conn().execute(
            "INSERT INTO directory_evidence (day, problem, text) VALUES (?1, ?2, ?3)",
            params![to_day(now), problem, text],
        )?;
        Ok(Some(self.conn().last_insert_rowid()))
    }

    /// Every piece of directory evidence kept, oldest first.
    pub fn directory_evidence(&self) -> Result<Vec<DirectoryEvidence>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT id, day, problem, text FROM directory_evidence ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DirectoryEvidence {
                    id: r.get(0)?,
                    day: r.get(1)?,
                    problem: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn evidence_is_kept_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&dir.path().join("s"));
        let a = store
            .keep_directory_evidence(1_780_000_123, "fork", "A")
            .unwrap();
        assert_eq!(
            store
                .keep_directory_evidence(1_780_100_000, "fork", "A")
                .unwrap(),
            a
        );
        for i in 1..super::MAX_DIRECTORY_EVIDENCE {
            assert!(
                store
                    .keep_directory_evidence(1_780_000_000, "rollback", &format!("B{i}"))
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store
                .keep_directory_evidence(1_780_000_000, "rollback", "C")
                .unwrap(),
            None
        );
        let kept = store.directory_evidence().unwrap();
        assert_eq!(kept.len(), super::MAX_DIRECTORY_EVIDENCE as usize);
        assert_eq!(
            (kept[0].problem.as_str(), kept[0].text.as_str()),
            ("fork", "A")
        );
        assert_eq!(kept[0].day % 86_400, 0, "only the day is kept");
    }
}
