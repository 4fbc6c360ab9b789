//! Admission proof of work: Tor's onion-service puzzle v1 (Equi-X plus an effort check, as in
//! the hs-pow spec and arti's `tor-hscrypto`), with Refuge's own personalization string and a
//! purpose-bound 32-byte id in place of the onion service's blinded key, so that a solution is
//! good for one kind of request on Refuge and for nothing on Tor.
//!
//! Sans-I/O: the caller supplies the nonce and bounds the work. The relay's side (seeds,
//! effort, replay) is in `refuge_relay::admission`.
//!
//! `tor-hscrypto`'s `pow::v1` fixes Tor's personalization, so this module builds the same
//! challenge itself over the `equix` crate; the tests check it against C tor's vectors.

use crate::wire;
use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U4;
use sha2::Sha256;

pub const SEED_LEN: usize = 32;
pub const SEED_HEAD_LEN: usize = 4;
pub const NONCE_LEN: usize = 16;
pub const PROOF_LEN: usize = equix::Solution::NUM_BYTES;

/// Refuge's personalization string (Tor's is `"Tor hs intro v1\0"`; same length).
pub const PERSONALIZATION: &[u8; 16] = b"Refuge admit v1\0";

const ID_LEN: usize = 32;
const CHALLENGE_LEN: usize = 16 + ID_LEN + SEED_LEN + NONCE_LEN + 4;

/// What a proof of work pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    CreateMailbox,
    FetchPostBundles,
    GetDepositTicket,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::CreateMailbox => b"create-mailbox",
            Purpose::FetchPostBundles => b"fetch-post-bundles",
            Purpose::GetDepositTicket => b"get-deposit-ticket",
        }
    }

    /// The 32-byte id that takes the place of Tor's blinded service key.
    fn id(self) -> [u8; ID_LEN] {
        let mut h = Sha256::new();
        h.update(b"refuge/v1/pow\0");
        h.update(self.label());
        h.finalize().into()
    }
}

/// A seed the relay hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seed(pub [u8; SEED_LEN]);

impl Seed {
    pub fn head(&self) -> [u8; SEED_HEAD_LEN] {
        let mut head = [0; SEED_HEAD_LEN];
        head.copy_from_slice(&self.0[..SEED_HEAD_LEN]);
        head
    }
}

/// What the client must solve: a seed and the least effort accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub seed: Seed,
    pub effort: u32,
}

impl Params {
    pub fn to_wire(&self) -> wire::PowParams {
        wire::PowParams {
            seed: self.seed.0.to_vec(),
            effort: self.effort,
        }
    }

    pub fn from_wire(p: &wire::PowParams) -> Result<Self, PowError> {
        Ok(Self {
            seed: Seed(fixed(&p.seed, "seed")?),
            effort: p.effort,
        })
    }
}

/// A claimed solution, as carried in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solution {
    pub seed_head: [u8; SEED_HEAD_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub effort: u32,
    pub proof: [u8; PROOF_LEN],
}

impl Solution {
    pub fn to_wire(&self) -> wire::PowSolution {
        wire::PowSolution {
            seed_head: self.seed_head.to_vec(),
            nonce: self.nonce.to_vec(),
            effort: self.effort,
            proof: self.proof.to_vec(),
        }
    }

    pub fn from_wire(s: &wire::PowSolution) -> Result<Self, PowError> {
        Ok(Self {
            seed_head: fixed(&s.seed_head, "seed_head")?,
            nonce: fixed(&s.nonce, "nonce")?,
            effort: s.effort,
            proof: fixed(&s.proof, "proof")?,
        })
    }
}

fn fixed<const N: usize>(bytes: &[u8], field: &'static str) -> Result<[u8; N], PowError> {
    bytes.try_into().map_err(|_| PowError::Length {
        field,
        expected: N,
        got: bytes.len(),
    })
}

/// Why a solution was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("pow field {field} has {got} bytes, expected {expected}")]
    Length {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the solution is for another seed")]
    Seed,
    #[error("the solution does not meet its claimed effort")]
    Effort,
    #[error("the Equi-X solution is not in canonical order")]
    Order,
    #[error("the Equi-X solution does not solve the challenge")]
    HashSum,
    #[error("the challenge has no valid Equi-X program (choose another nonce)")]
    ChallengeConstraints,
    #[error("Equi-X failed: {0}")]
    Runtime(String),
}

#[derive(Clone)]
struct Challenge([u8; CHALLENGE_LEN]);

impl Challenge {
    fn new(
        personalization: &[u8; 16],
        id: &[u8; ID_LEN],
        seed: &Seed,
        nonce: &[u8; NONCE_LEN],
        effort: u32,
    ) -> Self {
        let mut c = [0u8; CHALLENGE_LEN];
        let mut at = 0;
        for part in [
            &personalization[..],
            &id[..],
            &seed.0[..],
            &nonce[..],
            &effort.to_be_bytes()[..],
        ] {
            c[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Self(c)
    }

    fn nonce_mut(&mut self) -> &mut [u8] {
        let start = 16 + ID_LEN + SEED_LEN;
        &mut self.0[start..start + NONCE_LEN]
    }

    fn nonce(&self) -> [u8; NONCE_LEN] {
        let start = 16 + ID_LEN + SEED_LEN;
        let mut n = [0; NONCE_LEN];
        n.copy_from_slice(&self.0[start..start + NONCE_LEN]);
        n
    }

    fn effort(&self) -> u32 {
        let mut e = [0; 4];
        e.copy_from_slice(&self.0[CHALLENGE_LEN - 4..]);
        u32::from_be_bytes(e)
    }

    /// BLAKE2b-32(C || proof) × effort fits in 32 bits.
    fn meets_effort(&self, proof: &[u8; PROOF_LEN]) -> bool {
        let mut h = Blake2b::<U4>::new();
        h.update(self.0);
        h.update(proof);
        let value = u32::from_be_bytes(h.finalize().into());
        value.checked_mul(self.effort()).is_some()
    }
}

fn check(
    personalization: &[u8; 16],
    id: &[u8; ID_LEN],
    seed: &Seed,
    s: &Solution,
) -> Result<(), PowError> {
    if s.seed_head != seed.head() {
        return Err(PowError::Seed);
    }
    let challenge = Challenge::new(personalization, id, seed, &s.nonce, s.effort);
    if !challenge.meets_effort(&s.proof) {
        return Err(PowError::Effort);
    }
    let proof = equix::Solution::try_from_bytes(&s.proof).map_err(|_| PowError::Order)?;
    match equix::EquiX::new(&challenge.0).and_then(|e| e.verify(&proof)) {
        Ok(()) => Ok(()),
        Err(equix::Error::HashSum) => Err(PowError::HashSum),
        Err(equix::Error::Order) => Err(PowError::Order),
        Err(equix::Error::Hash(equix::HashError::ProgramConstraints)) => {
            Err(PowError::ChallengeConstraints)
        }
        Err(e) => Err(PowError::Runtime(e.to_string())),
    }
}

/// Checks `solution` for `purpose` against `seed`: seed head, claimed effort, Equi-X. Whether
/// the claimed effort is enough, and whether the nonce was used before, is the caller's call.
pub fn verify(purpose: Purpose, seed: &Seed, solution: &Solution) -> Result<(), PowError> {
    check(PERSONALIZATION, &purpose.id(), seed, solution)
}

/// A solver for one purpose and parameters, starting from a caller-chosen (random) nonce.
pub struct Solver {
    challenge: Challenge,
    seed_head: [u8; SEED_HEAD_LEN],
    memory: equix::SolverMemory,
}

impl std::fmt::Debug for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solver")
            .field("effort", &self.challenge.effort())
            .finish_non_exhaustive()
    }
}

impl Solver {
    pub fn new(purpose: Purpose, params: &Params, first_nonce: [u8; NONCE_LEN]) -> Self {
        Self::with(PERSONALIZATION, &purpose.id(), params, first_nonce)
    }

    fn with(
        personalization: &[u8; 16],
        id: &[u8; ID_LEN],
        params: &Params,
        first_nonce: [u8; NONCE_LEN],
    ) -> Self {
        Self {
            challenge: Challenge::new(
                personalization,
                id,
                &params.seed,
                &first_nonce,
                params.effort,
            ),
            seed_head: params.seed.head(),
            memory: equix::SolverMemory::new(),
        }
    }

    /// Tries one nonce (one Equi-X solve); moves to the next nonce if none of its solutions
    /// meets the effort. Expected calls: about effort / 2, at least one.
    pub fn step(&mut self) -> Result<Option<Solution>, PowError> {
        let found = match equix::EquiX::new(&self.challenge.0) {
            Ok(equix) => equix
                .solve_with_memory(&mut self.memory)
                .into_iter()
                .map(|s| s.to_bytes())
                .find(|proof| self.challenge.meets_effort(proof)),
            Err(equix::Error::Hash(equix::HashError::ProgramConstraints)) => None,
            Err(e) => return Err(PowError::Runtime(e.to_string())),
        };
        if let Some(proof) = found {
            return Ok(Some(Solution {
                seed_head: self.seed_head,
                nonce: self.challenge.nonce(),
                effort: self.challenge.effort(),
                proof,
            }));
        }
        // Little-endian increment, as Tor's solver does.
        for byte in self.challenge.nonce_mut() {
            let (next, carry) = byte.overflowing_add(1);
            *byte = next;
            if !carry {
                break;
            }
        }
        Ok(None)
    }

    /// Runs at most `max_steps` steps.
    pub fn run(&mut self, max_steps: u64) -> Result<Option<Solution>, PowError> {
        for _ in 0..max_steps {
            if let Some(s) = self.step()? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOR: &[u8; 16] = b"Tor hs intro v1\0";

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).expect("hex").try_into().expect("length")
    }

    fn tor_vector(
        id: &str,
        seed: &str,
        nonce: &str,
        effort: u32,
        head: &str,
        proof: &str,
    ) -> Result<(), PowError> {
        check(
            TOR,
            &h(id),
            &Seed(h(seed)),
            &Solution {
                seed_head: h(head),
                nonce: h(nonce),
                effort,
                proof: h(proof),
            },
        )
    }

    // Vectors of C tor's hs_pow tests, as arti's tor-hscrypto checks them: the construction here
    // is Tor's v1, byte for byte.
    #[test]
    fn c_tor_vectors_verify() {
        let id = "1111111111111111111111111111111111111111111111111111111111111111";
        let aa = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            tor_vector(
                id,
                aa,
                "55555555555555555555555555555555",
                0,
                "aaaaaaaa",
                "4312f87ceab844c78e1c793a913812d7"
            ),
            Ok(())
        );
        assert_eq!(
            tor_vector(
                id,
                aa,
                "59217255555555555555555555555555",
                1_000_000,
                "aaaaaaaa",
                "0f3db97b9cac20c1771680a1a34848d3"
            ),
            Ok(())
        );
        let id = "bfd298428562e530c52bdb36d81a0e293ef4a0e94d787f0f8c0c611f4f9e78ed";
        let seed = "86fb0acf4932cda44dbb451282f415479462dd10cb97ff5e7e8e2a53c3767a7f";
        let ok = |nonce| {
            tor_vector(
                id,
                seed,
                nonce,
                100_000,
                "86fb0acf",
                "400cb091139f86b352119f6e131802d6",
            )
        };
        assert_eq!(ok("2eff9fdbc34326d9d2f18ed277469c63"), Ok(()));
        // One nonce bit off: the effort check fails first.
        assert_eq!(
            ok("2eff9fdbc34326d9a2f18ed277469c63"),
            Err(PowError::Effort)
        );
    }

    #[test]
    fn c_tor_vectors_refuse() {
        let id = "1111111111111111111111111111111111111111111111111111111111111111";
        let zero = "0000000000000000000000000000000000000000000000000000000000000000";
        let nonce = "00000000000000000000000000000000";
        let proof = "00000000000000000000000000000000";
        assert_eq!(
            tor_vector(id, zero, nonce, 1, "00000000", proof),
            Err(PowError::HashSum)
        );
        assert_eq!(
            tor_vector(id, zero, nonce, 10, "00000000", proof),
            Err(PowError::Effort)
        );
        assert_eq!(
            tor_vector(id, zero, nonce, 0, "00000001", proof),
            Err(PowError::Seed)
        );
    }

    #[test]
    fn c_tor_solve_vector() {
        // Tor's solver, started at the vector's nonce, finds the vector's proof.
        let params = Params {
            seed: Seed([0xaa; 32]),
            effort: 1,
        };
        let mut solver = Solver::with(TOR, &[0x11; 32], &params, [0x55; 16]);
        let s = solver.run(64).expect("runs").expect("found");
        assert_eq!(s.nonce, [0x55; 16]);
        assert_eq!(hex::encode(s.proof), "84355542ab2b3f79532ef055144ac5ab");
    }

    #[test]
    fn a_solution_verifies_once_for_its_purpose_and_seed_only() {
        let params = Params {
            seed: Seed([7; 32]),
            effort: 4,
        };
        let s = Solver::new(Purpose::CreateMailbox, &params, [1; 16])
            .run(1000)
            .expect("runs")
            .expect("found");
        assert_eq!(s.effort, 4);
        assert_eq!(verify(Purpose::CreateMailbox, &params.seed, &s), Ok(()));
        assert!(verify(Purpose::FetchPostBundles, &params.seed, &s).is_err());
        assert_eq!(
            verify(Purpose::CreateMailbox, &Seed([8; 32]), &s),
            Err(PowError::Seed)
        );
        let mut claimed_more = s;
        claimed_more.effort = u32::MAX;
        assert!(verify(Purpose::CreateMailbox, &params.seed, &claimed_more).is_err());
        let mut bad = s;
        bad.proof[0] ^= 1;
        assert!(verify(Purpose::CreateMailbox, &params.seed, &bad).is_err());
        // Wire round trip, and lengths are checked.
        assert_eq!(Solution::from_wire(&s.to_wire()), Ok(s));
        let mut w = s.to_wire();
        w.nonce.pop();
        assert!(matches!(
            Solution::from_wire(&w),
            Err(PowError::Length { field: "nonce", .. })
        ));
    }
}
