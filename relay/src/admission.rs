//! Admission control for the requests that cost the relay (or a post) something: creating a
//! mailbox, and fetching a post's prekey bundles (which spends a one-time prekey of every device
//! of the post). Each needs a proof of work ([`refuge_proto::pow`], Tor's hs-pow v1 puzzle).
//!
//! Sans-I/O: the caller passes the time (Unix seconds) and a random source. The state is
//! - a seed, rotated every `seed_lifetime` or sooner when its replay set is full; solutions for
//!   the previous seed are still accepted, older ones are not;
//! - per seed, the nonces already accepted (at most `replay_capacity`), so each solution is
//!   accepted once;
//! - the effort asked for: each `period`, if more than `target_per_period` solutions were
//!   accepted it doubles (at most `max_effort`), if at most half as many it drops by a quarter
//!   (at least `min_effort`).
//!
//! The checks are typed so that none can be skipped: [`Admission::precheck`] (seed, effort,
//! replay; cheap, under the caller's lock) gives a [`Pending`]; [`Pending::verify`] (Equi-X; no
//! lock needed) gives a [`Verified`]; only [`Admission::commit`] (records the nonce) turns that
//! into [`Admitted`], which the handler needs to carry out the request.

use refuge_proto::pow::{self, Params, PowError, Purpose, Seed, Solution};
use refuge_proto::wire;
use std::collections::HashSet;

/// Operator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// The least effort ever asked for (0: one Equi-X solve).
    pub min_effort: u32,
    /// The most effort ever asked for.
    pub max_effort: u32,
    /// Accepted solutions per period above which the effort rises.
    pub target_per_period: u32,
    /// Seconds between effort updates.
    pub period: u64,
    /// Seconds a seed is handed out before the next one replaces it.
    pub seed_lifetime: u64,
    /// Nonces remembered per seed; a full set rotates the seed early.
    pub replay_capacity: usize,
}

/// Default `--pow-min-effort`: about 10 to 16 Equi-X solves, measured at 0.18 s on the
/// development machine (12 ms per solve; verifying takes 60 µs).
pub const DEFAULT_MIN_EFFORT: u32 = 20;

/// Default `--pow-max-effort`: some 10 s of work at the same rate. Clients refuse more than
/// twice this.
pub const DEFAULT_MAX_EFFORT: u32 = 2_000;

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            min_effort: DEFAULT_MIN_EFFORT,
            max_effort: DEFAULT_MAX_EFFORT,
            target_per_period: 100,
            period: 10,
            seed_lifetime: 600,
            replay_capacity: 65_536,
        }
    }
}

#[derive(Debug)]
struct SeedState {
    seed: Seed,
    issued_at: u64,
    used: HashSet<[u8; pow::NONCE_LEN]>,
}

/// The relay's admission state. One per relay, shared by all sessions (behind a lock).
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    current: SeedState,
    previous: Option<SeedState>,
    effort: u32,
    period_start: u64,
    accepted_in_period: u64,
}

/// Why a request was not admitted; carries the parameters to solve now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No solution, or one below the effort asked for now.
    Required {
        params: Params,
        offered: Option<u32>,
    },
    /// The solution is malformed, for an unknown seed, already used, or wrong.
    Invalid { params: Params, reason: String },
}

impl Refusal {
    pub fn params(&self) -> Params {
        match self {
            Refusal::Required { params, .. } | Refusal::Invalid { params, .. } => *params,
        }
    }
}

/// A solution whose seed, effort and freshness were checked; Equi-X still to verify.
#[derive(Debug)]
pub struct Pending {
    purpose: Purpose,
    seed: Seed,
    solution: Solution,
    params: Params,
}

/// A solution that verified; not yet recorded as used.
#[derive(Debug)]
pub struct Verified {
    seed: Seed,
    nonce: [u8; pow::NONCE_LEN],
    params: Params,
}

/// Proof that a request paid its proof of work. Only [`Admission::commit`] makes one.
#[derive(Debug)]
pub struct Admitted {
    _private: (),
}

fn fresh_seed<R: rand::CryptoRng + ?Sized>(rng: &mut R, avoid: Option<&Seed>) -> Seed {
    // The head names the seed in a solution; two live seeds must not share one (Tor does the
    // same). A collision is a 2^-32 event, so a few tries always suffice.
    let mut seed = [0u8; pow::SEED_LEN];
    for _ in 0..16 {
        rng.fill_bytes(&mut seed);
        if avoid.is_none_or(|a| a.head() != Seed(seed).head()) {
            break;
        }
    }
    Seed(seed)
}

impl Admission {
    pub fn new<R: rand::CryptoRng + ?Sized>(
        config: AdmissionConfig,
        now: u64,
        rng: &mut R,
    ) -> Self {
        let mut config = config;
        config.max_effort = config.max_effort.max(config.min_effort);
        config.period = config.period.max(1);
        config.replay_capacity = config.replay_capacity.max(1);
        Self {
            effort: config.min_effort,
            config,
            current: SeedState {
                seed: fresh_seed(rng, None),
                issued_at: now,
                used: HashSet::new(),
            },
            previous: None,
            period_start: now,
            accepted_in_period: 0,
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// The parameters to hand out now (after rotating the seed and updating the effort).
    pub fn params<R: rand::CryptoRng + ?Sized>(&mut self, now: u64, rng: &mut R) -> Params {
        self.tick(now, rng);
        self.current_params()
    }

    /// The effort asked for now, as of the last request (read only, for the metrics).
    pub fn current_effort(&self) -> u32 {
        self.effort
    }

    fn current_params(&self) -> Params {
        Params {
            seed: self.current.seed,
            effort: self.effort,
        }
    }

    fn tick<R: rand::CryptoRng + ?Sized>(&mut self, now: u64, rng: &mut R) {
        let c = &self.config;
        // Effort: one step per period that has ended (a clock that went back changes nothing).
        let ended = now.saturating_sub(self.period_start) / c.period;
        if ended > 0 {
            let target = u64::from(c.target_per_period);
            if self.accepted_in_period > target {
                self.effort = if self.effort == 0 {
                    1
                } else {
                    self.effort.saturating_mul(2)
                };
            } else if self.accepted_in_period <= target / 2 {
                self.effort = decay(self.effort);
            }
            // Periods with no traffic at all: keep decaying (bounded: effort halves at least
            // every 3 steps, so 64 steps reach any minimum).
            for _ in 1..ended.min(64) {
                self.effort = decay(self.effort);
            }
            self.effort = self.effort.clamp(c.min_effort, c.max_effort);
            self.period_start = now;
            self.accepted_in_period = 0;
        }
        let expired = now.saturating_sub(self.current.issued_at) >= c.seed_lifetime;
        if expired || self.current.used.len() >= c.replay_capacity {
            self.rotate(now, rng);
        }
    }

    fn rotate<R: rand::CryptoRng + ?Sized>(&mut self, now: u64, rng: &mut R) {
        let next = SeedState {
            seed: fresh_seed(rng, Some(&self.current.seed)),
            issued_at: now,
            used: HashSet::new(),
        };
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// The cheap checks, in order: a solution at all, well formed, for a live seed, at least
    /// the effort asked for now, not used before.
    pub fn precheck<R: rand::CryptoRng + ?Sized>(
        &mut self,
        purpose: Purpose,
        solution: Option<&wire::PowSolution>,
        now: u64,
        rng: &mut R,
    ) -> Result<Pending, Refusal> {
        self.tick(now, rng);
        let params = self.current_params();
        let invalid = |reason: String| Refusal::Invalid { params, reason };
        let Some(solution) = solution else {
            return Err(Refusal::Required {
                params,
                offered: None,
            });
        };
        let solution = Solution::from_wire(solution).map_err(|e| invalid(e.to_string()))?;
        let state = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|s| s.seed.head() == solution.seed_head)
            .ok_or_else(|| {
                invalid("the solution is for a seed the relay no longer accepts".into())
            })?;
        if solution.effort < self.effort {
            return Err(Refusal::Required {
                params,
                offered: Some(solution.effort),
            });
        }
        if state.used.contains(&solution.nonce) {
            return Err(invalid("this solution was already used".into()));
        }
        Ok(Pending {
            purpose,
            seed: state.seed,
            solution,
            params,
        })
    }

    /// Records the nonce as used and counts the admission. Refuses a nonce that another request
    /// used since the precheck, or whose seed has gone meanwhile.
    pub fn commit(&mut self, verified: Verified) -> Result<Admitted, Refusal> {
        let params = verified.params;
        let state = [Some(&mut self.current), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|s| s.seed == verified.seed)
            .ok_or_else(|| Refusal::Invalid {
                params,
                reason: "the solution is for a seed the relay no longer accepts".into(),
            })?;
        if !state.used.insert(verified.nonce) {
            return Err(Refusal::Invalid {
                params,
                reason: "this solution was already used".into(),
            });
        }
        self.accepted_in_period += 1;
        Ok(Admitted { _private: () })
    }
}

fn decay(effort: u32) -> u32 {
    effort - (effort / 4).max(u32::from(effort > 0))
}

impl Pending {
    /// The Equi-X check (some tens of microseconds; run it outside any lock).
    pub fn verify(self) -> Result<Verified, Refusal> {
        match pow::verify(self.purpose, &self.seed, &self.solution) {
            Ok(()) => Ok(Verified {
                seed: self.seed,
                nonce: self.solution.nonce,
                params: self.params,
            }),
            Err(e) => Err(Refusal::Invalid {
                params: self.params,
                reason: match e {
                    PowError::ChallengeConstraints => {
                        "the nonce gives an unusable Equi-X challenge".into()
                    }
                    e => e.to_string(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            min_effort: 0,
            max_effort: 64,
            target_per_period: 4,
            period: 10,
            seed_lifetime: 600,
            replay_capacity: 8,
        }
    }

    fn solve(purpose: Purpose, params: &Params, nonce: u8) -> wire::PowSolution {
        pow::Solver::new(purpose, params, [nonce; 16])
            .run(100_000)
            .expect("runs")
            .expect("solves")
            .to_wire()
    }

    fn admit(
        a: &mut Admission,
        purpose: Purpose,
        s: Option<&wire::PowSolution>,
        now: u64,
        rng: &mut StdRng,
    ) -> Result<Admitted, Refusal> {
        let verified = a.precheck(purpose, s, now, rng)?.verify()?;
        a.commit(verified)
    }

    #[test]
    fn a_solution_is_admitted_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Admission::new(config(), 1000, &mut rng);
        let p = a.params(1000, &mut rng);
        let s = solve(Purpose::CreateMailbox, &p, 1);
        assert!(matches!(
            admit(&mut a, Purpose::CreateMailbox, None, 1000, &mut rng),
            Err(Refusal::Required { offered: None, .. })
        ));
        assert!(admit(&mut a, Purpose::CreateMailbox, Some(&s), 1001, &mut rng).is_ok());
        assert!(matches!(
            admit(&mut a, Purpose::CreateMailbox, Some(&s), 1002, &mut rng),
            Err(Refusal::Invalid { .. })
        ));
        // For another purpose it does not verify.
        let s = solve(Purpose::CreateMailbox, &p, 2);
        assert!(matches!(
            admit(&mut a, Purpose::FetchPostBundles, Some(&s), 1002, &mut rng),
            Err(Refusal::Invalid { .. })
        ));
    }

    #[test]
    fn a_replay_racing_the_first_use_is_refused_at_commit() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut a = Admission::new(config(), 0, &mut rng);
        let p = a.params(0, &mut rng);
        let s = solve(Purpose::CreateMailbox, &p, 3);
        let first = a.precheck(Purpose::CreateMailbox, Some(&s), 0, &mut rng);
        let second = a.precheck(Purpose::CreateMailbox, Some(&s), 0, &mut rng);
        let first = first.expect("fresh").verify().expect("valid");
        let second = second.expect("not yet used").verify().expect("valid");
        assert!(a.commit(first).is_ok());
        assert!(matches!(a.commit(second), Err(Refusal::Invalid { .. })));
    }

    #[test]
    fn the_previous_seed_is_accepted_and_older_ones_are_not() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut a = Admission::new(config(), 0, &mut rng);
        let p0 = a.params(0, &mut rng);
        let s0 = solve(Purpose::CreateMailbox, &p0, 4);
        let s0b = solve(Purpose::CreateMailbox, &p0, 5);
        let p1 = a.params(600, &mut rng);
        assert_ne!(p0.seed, p1.seed, "rotated after its lifetime");
        assert!(admit(&mut a, Purpose::CreateMailbox, Some(&s0), 601, &mut rng).is_ok());
        let p2 = a.params(1200, &mut rng);
        assert_ne!(p1.seed, p2.seed);
        let refused = admit(&mut a, Purpose::CreateMailbox, Some(&s0b), 1201, &mut rng);
        match refused {
            Err(Refusal::Invalid { params, reason }) => {
                assert_eq!(params.seed, p2.seed, "carries the current seed");
                assert!(reason.contains("no longer"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_replay_set_rotates_the_seed() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut a = Admission::new(config(), 0, &mut rng);
        let p0 = a.params(0, &mut rng);
        for n in 0..8u8 {
            let s = solve(Purpose::CreateMailbox, &p0, n);
            assert!(admit(&mut a, Purpose::CreateMailbox, Some(&s), 0, &mut rng).is_ok());
        }
        let p1 = a.params(0, &mut rng);
        assert_ne!(
            p0.seed, p1.seed,
            "the set is bounded: a new seed, a new set"
        );
        assert_eq!(a.current.used.len(), 0);
        assert_eq!(a.previous.as_ref().map(|s| s.used.len()), Some(8));
    }

    #[test]
    fn effort_rises_under_load_and_decays_when_calm() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut c = config();
        c.replay_capacity = 10_000;
        let mut a = Admission::new(c, 0, &mut rng);
        let mut nonce = 0u8;
        let mut now = 0;
        // Three busy periods: five admissions each, above the target of four.
        for expected in [1, 2, 4] {
            for _ in 0..5 {
                let p = a.params(now, &mut rng);
                nonce = nonce.wrapping_add(1);
                let s = solve(Purpose::FetchPostBundles, &p, nonce);
                assert!(admit(&mut a, Purpose::FetchPostBundles, Some(&s), now, &mut rng).is_ok());
            }
            now += 10;
            assert_eq!(a.params(now, &mut rng).effort, expected);
        }
        // A solution below the effort now asked for is refused as "more work needed".
        let low = solve(
            Purpose::FetchPostBundles,
            &Params {
                effort: 1,
                ..a.params(now, &mut rng)
            },
            200,
        );
        assert!(matches!(
            admit(&mut a, Purpose::FetchPostBundles, Some(&low), now, &mut rng),
            Err(Refusal::Required {
                offered: Some(1),
                ..
            })
        ));
        // Calm: a quarter off per quiet period, down to the minimum, even after a long gap.
        assert_eq!(a.params(now + 10, &mut rng).effort, 3);
        assert_eq!(a.params(now + 10_000, &mut rng).effort, 0);
    }

    #[test]
    fn effort_is_bounded() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut c = config();
        c.min_effort = 5;
        c.max_effort = 6;
        c.target_per_period = 0;
        c.replay_capacity = 10_000;
        let mut a = Admission::new(c, 0, &mut rng);
        for step in 1..6u8 {
            let p = a.params(u64::from(step) * 10, &mut rng);
            assert!((5..=6).contains(&p.effort), "{}", p.effort);
            let s = solve(Purpose::CreateMailbox, &p, step);
            assert!(
                admit(
                    &mut a,
                    Purpose::CreateMailbox,
                    Some(&s),
                    u64::from(step) * 10,
                    &mut rng
                )
                .is_ok()
            );
        }
        assert_eq!(a.params(60, &mut rng).effort, 6);
        assert_eq!(decay(0), 0);
        assert_eq!(decay(1), 0);
        assert_eq!(decay(8), 6);
    }

    /// Through the handler: no solution → POW_REQUIRED with parameters; solved → served; the
    /// same solution again → POW_INVALID, and the store saw only the first.
    #[tokio::test]
    async fn the_handler_asks_for_work_and_takes_each_solution_once() {
        use crate::handler::Handler;
        use crate::roster::Roster;
        use crate::session::SessionState;
        use crate::store::RelayStore;
        use crate::store::sqlite::StoreLimits;
        use ed25519_dalek::SigningKey;
        use refuge_proto::ErrorCode;
        use refuge_proto::auth;
        use refuge_proto::ids::{DepositToken, MailboxId};
        use refuge_proto::wire::client_frame::Request;
        use refuge_proto::wire::server_frame::Response;

        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::with_admission(store, Roster::empty(), config());
        let mut rng = StdRng::seed_from_u64(7);
        let now = 1_700_000_000;
        let mut session = SessionState::new();
        let hello = Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "test".into(),
        });
        let call = |request: Request| wire::ClientFrame {
            request_id: 9,
            request: Some(request),
        };
        let reply = relay.handle(&mut session, call(hello), now, &mut rng).await;
        let Some(Response::HelloOk(ok)) = reply.response else {
            panic!("{reply:?}")
        };
        let params = Params::from_wire(&ok.pow.expect("HelloOk carries the parameters"))
            .expect("well formed");

        let key = SigningKey::from_bytes(&[3; 32]);
        let mailbox = MailboxId([4; 16]);
        let hash = DepositToken([5; 32]).hash();
        let create = |pow: Option<wire::PowSolution>| {
            let sig = auth::sign(
                &key,
                &auth::create_mailbox_transcript(&mailbox, &key.verifying_key(), &hash),
            );
            Request::CreateMailbox(wire::CreateMailbox {
                mailbox_id: mailbox.0.to_vec(),
                auth_key: key.verifying_key().as_bytes().to_vec(),
                deposit_token_hash: hash.to_vec(),
                signature: sig.to_bytes().to_vec(),
                pow,
            })
        };
        let refused = |reply: wire::ServerFrame| match reply.response {
            Some(Response::Error(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        };

        let e = refused(
            relay
                .handle(&mut session, call(create(None)), now, &mut rng)
                .await,
        );
        assert_eq!(e.code(), ErrorCode::PowRequired, "{}", e.message);
        assert_eq!(
            e.pow.as_ref().map(|p| Params::from_wire(p).expect("valid")),
            Some(params)
        );
        assert!(
            relay
                .store()
                .mailbox_key(mailbox)
                .await
                .expect("reads")
                .is_none()
        );

        let solution = solve(Purpose::CreateMailbox, &params, 1);
        let reply = relay
            .handle(
                &mut session,
                call(create(Some(solution.clone()))),
                now,
                &mut rng,
            )
            .await;
        assert!(
            matches!(reply.response, Some(Response::MailboxCreated(_))),
            "{reply:?}"
        );
        let e = refused(
            relay
                .handle(&mut session, call(create(Some(solution))), now, &mut rng)
                .await,
        );
        assert_eq!(e.code(), ErrorCode::PowInvalid);
        assert!(e.message.contains("already used"), "{}", e.message);
        assert!(e.pow.is_some());
    }
}
