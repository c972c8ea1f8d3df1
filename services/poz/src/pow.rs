//! Adaptive proof of work (SPEC §15), sans I/O: time is an argument.
//!
//! Find `timestamp` and `nonce` so that `SHA3-256(challenge ‖ timestamp ‖
//! nonce)` (plain SHA3, as the standard writes it; both integers u64
//! big-endian) has at least `difficulty` leading zero bits. Challenges are
//! derived statelessly from a server secret and a time window, so every
//! gateway sharing the secret accepts every other's challenges, and they
//! expire by themselves. Verification is one hash; a bounded replay guard
//! refuses a solution seen before.
//!
//! A proof is spent once per fleet (SPEC §15, "Replay"): this module says
//! what makes two proofs the same ([`replay_key`]) and how long a spent
//! proof must be remembered ([`Challenger::check_until`],
//! [`replay_ttl_ms`]); the gateways keep the fleet-wide record (Redis) and
//! [`ReplayGuard`] is each process's own.

use crate::hash::{tag, tagged_hash};
use crate::wire::{Challenge, PowReason, PowSolution};
use sha3::{Digest, Sha3_256};
use std::collections::HashSet;

/// Leading zero bits of a digest.
pub fn leading_zero_bits(h: &[u8; 32]) -> u32 {
    let mut n = 0;
    for b in h {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// The PoW hash: plain SHA3-256 over the 32 bytes the standard names.
pub fn pow_hash(challenge: &[u8; 16], timestamp: u64, nonce: u64) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(challenge);
    h.update(timestamp.to_be_bytes());
    h.update(nonce.to_be_bytes());
    h.finalize().into()
}

/// Searches nonces from `start` for at most `max_tries`; `None` if none
/// of them solves the challenge (the caller picks another start or gives up).
pub fn solve(
    challenge: &[u8; 16],
    difficulty: u8,
    timestamp: u64,
    start: u64,
    max_tries: u64,
) -> Option<PowSolution> {
    (0..max_tries)
        .map(|i| start.wrapping_add(i))
        .find_map(|nonce| {
            (leading_zero_bits(&pow_hash(challenge, timestamp, nonce)) >= difficulty as u32)
                .then_some(PowSolution {
                    challenge: *challenge,
                    timestamp,
                    nonce,
                })
        })
}

/// Static configuration shared by the gateways of one fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowConfig {
    /// Difficulty with no load (often 0: no proof asked for).
    pub base: u8,
    /// Difficulty never exceeds this (a legitimate client must still be
    /// able to solve it: 24 bits is ~16 M hashes, a few seconds).
    pub cap: u8,
    /// Bits added per doubling of overload.
    pub step: u8,
    /// Length of a challenge window; a challenge is accepted during its
    /// window and the next one.
    pub window_ms: u64,
}

impl Default for PowConfig {
    fn default() -> Self {
        PowConfig {
            base: 0,
            cap: 24,
            step: 4,
            window_ms: 60_000,
        }
    }
}

/// A gateway's load, against the targets it is sized for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub new_connections_per_s: f64,
    pub in_flight: f64,
    pub p99_latency_ms: f64,
}

/// An operator's caps: the load a gateway takes without asking for
/// proofs, whatever its capacity (SPEC §15, "Caps"). A target of 0 (the
/// default, each of the three) is no cap: the difficulty then follows the
/// gateway's capacity alone ([`CapacityTuner`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadTargets {
    pub new_connections_per_s: f64,
    pub in_flight: f64,
    pub p99_latency_ms: f64,
}

/// The difficulty an operator's caps ask for: with overload `L` = the
/// largest of the three load/target ratios (a target of 0 is no cap),
/// `base` while `L` ≤ 1, otherwise `base + ceil(step × log2 L)`, never
/// above `cap`. Each doubling of overload multiplies an attacker's work
/// by 2^step. The difficulty asked is the larger of this and
/// [`CapacityTuner`]'s.
pub fn difficulty_for(cfg: &PowConfig, load: &Load, targets: &LoadTargets) -> u8 {
    let ratio = |v: f64, t: f64| if t > 0.0 && v.is_finite() { v / t } else { 0.0 };
    let l = ratio(load.new_connections_per_s, targets.new_connections_per_s)
        .max(ratio(load.in_flight, targets.in_flight))
        .max(ratio(load.p99_latency_ms, targets.p99_latency_ms));
    if l <= 1.0 || l.is_nan() {
        return cfg.base.min(cfg.cap);
    }
    let extra = (cfg.step as f64 * l.log2()).ceil().clamp(0.0, 255.0) as u32;
    (cfg.base as u32 + extra).min(cfg.cap as u32) as u8
}

/// What a gateway measures of its own capacity at one tick of its tuner
/// (SPEC §15, "Capacity"): the overload signals, none of them a rate
/// chosen in advance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    /// Requests being served now (each holding one of the gateway's
    /// slots; an IDENTITY lookup waiting in the gather queue holds one).
    pub in_flight: f64,
    /// Requests the gateway serves at once (its slots: `max_lookups`).
    pub capacity: f64,
    /// Requests waiting now for a slot: the gateway's own queue.
    pub waiting: f64,
    /// Requests refused for want of a slot since the previous tick (shed
    /// after `queue_wait`).
    pub shed: f64,
    /// p99 service time of the last complete window, ms (0: too few
    /// requests to tell, [`p99_latency_ms`]).
    pub p99_ms: f64,
}

/// How the gateway reads its [`Pressure`]: what counts as overload and
/// as calm, and how fast the difficulty moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityPolicy {
    /// Service time budget: a p99 above it is overload.
    pub p99_budget_ms: f64,
    /// At most one raise per this many ms.
    pub raise_every_ms: u64,
    /// Calm this long (ms, unbroken) lowers the difficulty one step, and
    /// each further such stretch another.
    pub lower_after_ms: u64,
}

impl Default for CapacityPolicy {
    fn default() -> Self {
        CapacityPolicy {
            p99_budget_ms: 250.0,
            raise_every_ms: 1_000,
            lower_after_ms: 5_000,
        }
    }
}

/// What one tick's [`Pressure`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// More work than the gateway can serve: requests wait for a slot or
    /// are shed, or the p99 is over its budget.
    Over,
    /// Neither: busy (more than half the slots in use, or the p99 above
    /// half its budget) but keeping up. The difficulty stays.
    Busy,
    /// At most half the slots in use, nothing waiting or shed, the p99
    /// within half its budget.
    Calm,
}

impl CapacityPolicy {
    /// Reads one tick's pressure. A capacity of 0 (unknown) counts only
    /// waiting, shed and the p99.
    pub fn verdict(&self, p: &Pressure) -> Verdict {
        let finite = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let (in_flight, waiting, shed, p99) = (
            finite(p.in_flight),
            finite(p.waiting),
            finite(p.shed),
            finite(p.p99_ms),
        );
        let budget = self.p99_budget_ms;
        let over_budget = budget > 0.0 && p99 > budget;
        if waiting > 0.0 || shed > 0.0 || over_budget {
            return Verdict::Over;
        }
        let half_full = p.capacity > 0.0 && in_flight > p.capacity / 2.0;
        let slow = budget > 0.0 && p99 > budget / 2.0;
        if half_full || slow {
            Verdict::Busy
        } else {
            Verdict::Calm
        }
    }
}

/// The difficulty a gateway's own capacity asks for (SPEC §15,
/// "Capacity"), a state machine driven by [`CapacityTuner::tick`]: `base`
/// while the gateway keeps up, whatever the rate of connections; one
/// `step` up per `raise_every_ms` while it is [`Verdict::Over`], never
/// above `cap`; one `step` down per `lower_after_ms` of unbroken
/// [`Verdict::Calm`], never below `base`; unchanged while
/// [`Verdict::Busy`]. Time is an argument (ms on any monotonic clock).
#[derive(Clone, Debug)]
pub struct CapacityTuner {
    pub policy: CapacityPolicy,
    difficulty: u8,
    last_raise: Option<u64>,
    calm_since: Option<u64>,
    last: Option<Verdict>,
}

impl CapacityTuner {
    /// A tuner at `cfg.base`.
    pub fn new(cfg: &PowConfig, policy: CapacityPolicy) -> Self {
        CapacityTuner {
            policy,
            difficulty: cfg.base.min(cfg.cap),
            last_raise: None,
            calm_since: None,
            last: None,
        }
    }

    /// The difficulty it asks for now.
    pub fn difficulty(&self) -> u8 {
        self.difficulty
    }

    /// The last tick's verdict (None before the first).
    pub fn verdict(&self) -> Option<Verdict> {
        self.last
    }

    /// One tick: reads `p` at `now_ms` and returns the difficulty.
    pub fn tick(&mut self, cfg: &PowConfig, p: &Pressure, now_ms: u64) -> u8 {
        let base = cfg.base.min(cfg.cap);
        let d = self.difficulty.clamp(base, cfg.cap);
        let verdict = self.policy.verdict(p);
        self.last = Some(verdict);
        self.difficulty = match verdict {
            Verdict::Over => {
                self.calm_since = None;
                let due = self
                    .last_raise
                    .is_none_or(|t| now_ms.saturating_sub(t) >= self.policy.raise_every_ms);
                if due && d < cfg.cap {
                    self.last_raise = Some(now_ms);
                    d.saturating_add(cfg.step.max(1)).min(cfg.cap)
                } else {
                    d
                }
            }
            Verdict::Busy => {
                self.calm_since = None;
                d
            }
            Verdict::Calm => {
                let since = *self.calm_since.get_or_insert(now_ms);
                if d > base && now_ms.saturating_sub(since) >= self.policy.lower_after_ms {
                    self.calm_since = Some(now_ms);
                    d.saturating_sub(cfg.step.max(1)).max(base)
                } else {
                    d
                }
            }
        };
        self.difficulty
    }
}

/// A challenge secret. The first is current; the rest are retired ones
/// still accepted, so a secret rotates without breaking challenges in flight.
#[derive(Clone)]
pub struct Secrets(pub Vec<[u8; 32]>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} keys)", self.0.len())
    }
}

/// Derives the challenge of `window` under `secret`.
pub fn derive_challenge(secret: &[u8; 32], window: u64) -> [u8; 16] {
    let h = tagged_hash(tag::POW_CHALLENGE, &[secret, &window.to_be_bytes()]);
    let mut c = [0u8; 16];
    c.copy_from_slice(&h.0[..16]);
    c
}

/// Issues and checks challenges.
#[derive(Clone, Debug)]
pub struct Challenger {
    pub config: PowConfig,
    pub secrets: Secrets,
}

impl Challenger {
    pub fn new(config: PowConfig, secrets: Secrets) -> Self {
        Challenger { config, secrets }
    }

    fn window(&self, now: u64) -> u64 {
        now / self.config.window_ms.max(1)
    }

    /// The challenge to hand out at `now` for `difficulty`.
    pub fn issue(&self, now: u64, difficulty: u8) -> Challenge {
        let w = self.window(now);
        let secret = self.secrets.0.first().copied().unwrap_or([0u8; 32]);
        Challenge {
            difficulty,
            challenge: derive_challenge(&secret, w),
            expires_at: (w + 2).saturating_mul(self.config.window_ms),
        }
    }

    /// Checks a solution at `now` against the difficulty required now.
    /// Does not check replay: see `ReplayGuard`.
    pub fn check(&self, sol: &PowSolution, now: u64, required: u8) -> Result<(), PowReason> {
        self.check_until(sol, now, required).map(|_| ())
    }

    /// Like [`Challenger::check`], and on success returns when this server
    /// stops accepting the solution (ms since the epoch, exclusive): the
    /// end of its challenge's second window, or one window after its
    /// timestamp, whichever comes first. A spent proof needs remembering
    /// only until then (SPEC §15, "Replay").
    pub fn check_until(&self, sol: &PowSolution, now: u64, required: u8) -> Result<u64, PowReason> {
        let w = self.window(now);
        let window_ms = self.config.window_ms.max(1);
        let issued = [w, w.saturating_sub(1)].into_iter().find(|win| {
            self.secrets
                .0
                .iter()
                .any(|s| derive_challenge(s, *win) == sol.challenge)
        });
        let Some(issued) = issued else {
            return Err(PowReason::EXPIRED);
        };
        // The client's clock may differ from ours by at most one window.
        if sol.timestamp.abs_diff(now) > window_ms {
            return Err(PowReason::EXPIRED);
        }
        if leading_zero_bits(&pow_hash(&sol.challenge, sol.timestamp, sol.nonce)) < required as u32
        {
            return Err(PowReason::INSUFFICIENT);
        }
        let challenge_ends = issued.saturating_add(2).saturating_mul(window_ms);
        let timestamp_ends = sol.timestamp.saturating_add(window_ms).saturating_add(1);
        Ok(challenge_ends.min(timestamp_ends))
    }
}

/// What makes two proofs of work the same (SPEC §15, "Replay"): the same
/// challenge, timestamp and nonce, whatever request, port or gateway they
/// come with. The key is the proof's 32-byte PoW hash (the one its
/// difficulty is counted on), a function of exactly those three fields.
pub fn replay_key(sol: &PowSolution) -> [u8; 32] {
    pow_hash(&sol.challenge, sol.timestamp, sol.nonce)
}

/// How much the clocks of a fleet's gateways may differ (ms): a spent
/// proof is remembered this much longer than the gateway that spent it
/// would still accept it, so a gateway whose clock is behind does not
/// accept it again.
pub const REPLAY_CLOCK_SKEW_MS: u64 = 5_000;

/// How long (ms, at least 1) a proof spent at `now` must stay recorded in
/// the fleet-wide replay guard: until `valid_until` (from
/// [`Challenger::check_until`]) plus [`REPLAY_CLOCK_SKEW_MS`].
pub fn replay_ttl_ms(valid_until: u64, now: u64) -> u64 {
    valid_until
        .saturating_sub(now)
        .max(1)
        .saturating_add(REPLAY_CLOCK_SKEW_MS)
}

/// The p99 of one window's request latencies (ms), or 0 when the window
/// holds fewer than `min_samples` (SPEC §15, "The fleet's load"): over a
/// handful of samples the p99 is the slowest one, and one slow request is
/// not overload. Sorts `samples_us` (microseconds) in place.
pub fn p99_latency_ms(samples_us: &mut [u64], min_samples: usize) -> f64 {
    if samples_us.is_empty() || samples_us.len() < min_samples {
        return 0.0;
    }
    samples_us.sort_unstable();
    let at = (samples_us.len() * 99 / 100).min(samples_us.len() - 1);
    samples_us[at] as f64 / 1000.0
}

/// Remembers solutions of the current and the previous window, so each is
/// accepted once. Bounded: past `capacity` per window it refuses new
/// solutions (the caller answers RATE_LIMITED) rather than grow.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    window: u64,
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

/// What the replay guard says of a solution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Fresh,
    Replayed,
    Full,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity,
            window: 0,
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Records `sol` if it is new; `window` is `now / window_ms`.
    pub fn check_and_insert(&mut self, sol: &PowSolution, window: u64) -> Seen {
        if window > self.window {
            self.previous = if window == self.window + 1 {
                std::mem::take(&mut self.current)
            } else {
                HashSet::new()
            };
            self.current = HashSet::new();
            self.window = window;
        }
        let key = replay_key(sol);
        if self.current.contains(&key) || self.previous.contains(&key) {
            return Seen::Replayed;
        }
        if self.current.len() >= self.capacity {
            return Seen::Full;
        }
        self.current.insert(key);
        Seen::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenger() -> Challenger {
        Challenger::new(PowConfig::default(), Secrets(vec![[1u8; 32]]))
    }

    #[test]
    fn solve_and_check() {
        let c = challenger();
        let now = 1_000_000;
        let ch = c.issue(now, 12);
        let sol = solve(&ch.challenge, 12, now, 0, 1 << 24).expect("solvable");
        assert!(leading_zero_bits(&pow_hash(&sol.challenge, sol.timestamp, sol.nonce)) >= 12);
        assert_eq!(c.check(&sol, now + 1, 12), Ok(()));
        // Accepted through the next window, refused after.
        assert_eq!(c.check(&sol, now + 50_000, 12), Ok(()));
        assert_eq!(c.check(&sol, now + 130_000, 12), Err(PowReason::EXPIRED));
        // Difficulty rose meanwhile.
        assert_eq!(c.check(&sol, now, 40), Err(PowReason::INSUFFICIENT));
    }

    #[test]
    fn rotated_secret_still_accepted() {
        let old = challenger();
        let now = 5_000_000;
        let ch = old.issue(now, 4);
        let sol = solve(&ch.challenge, 4, now, 0, 1 << 20).unwrap();
        let rotated = Challenger::new(PowConfig::default(), Secrets(vec![[2u8; 32], [1u8; 32]]));
        assert_eq!(rotated.check(&sol, now, 4), Ok(()));
        let dropped = Challenger::new(PowConfig::default(), Secrets(vec![[2u8; 32]]));
        assert_eq!(dropped.check(&sol, now, 4), Err(PowReason::EXPIRED));
    }

    #[test]
    fn replay_guard() {
        let sol = PowSolution {
            challenge: [3; 16],
            timestamp: 1,
            nonce: 2,
        };
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.check_and_insert(&sol, 10), Seen::Fresh);
        assert_eq!(g.check_and_insert(&sol, 10), Seen::Replayed);
        assert_eq!(
            g.check_and_insert(&sol, 11),
            Seen::Replayed,
            "still remembered one window later"
        );
        assert_eq!(
            g.check_and_insert(&sol, 13),
            Seen::Fresh,
            "forgotten after two"
        );
        let other = |n| PowSolution {
            challenge: [3; 16],
            timestamp: 1,
            nonce: n,
        };
        assert_eq!(g.check_and_insert(&other(7), 13), Seen::Fresh);
        assert_eq!(g.check_and_insert(&other(8), 13), Seen::Full);
    }

    #[test]
    fn a_proof_is_valid_until_its_challenge_or_timestamp_runs_out() {
        let c = challenger();
        let w = c.config.window_ms;
        // Issued at the start of window 100; solved with the server's time.
        let issued_at = 100 * w;
        let ch = c.issue(issued_at, 4);
        let sol = solve(&ch.challenge, 4, issued_at, 0, 1 << 20).unwrap();
        // The timestamp runs out first: one window after it.
        assert_eq!(
            c.check_until(&sol, issued_at + 10, 4),
            Ok(issued_at + w + 1)
        );
        // A timestamp late in the window: the challenge runs out first, at
        // the end of the next window (the challenge's `expires_at`).
        let late = issued_at + w - 1;
        let sol = solve(&ch.challenge, 4, late, 0, 1 << 20).unwrap();
        let until = c.check_until(&sol, late + 1_000, 4).unwrap();
        assert_eq!(until, ch.expires_at);
        assert_eq!(until, 102 * w);
        // Seen from the next window, the same answer.
        assert_eq!(c.check_until(&sol, 101 * w + 5, 4), Ok(102 * w));
        // Refused at the moment it says.
        assert_eq!(c.check(&sol, until, 4), Err(PowReason::EXPIRED));
    }

    #[test]
    fn replay_key_and_ttl() {
        let a = PowSolution {
            challenge: [3; 16],
            timestamp: 1,
            nonce: 2,
        };
        let b = PowSolution { nonce: 3, ..a };
        let c = PowSolution { timestamp: 2, ..a };
        assert_eq!(replay_key(&a), replay_key(&a.clone()));
        assert_ne!(replay_key(&a), replay_key(&b));
        assert_ne!(replay_key(&a), replay_key(&c));
        assert_eq!(replay_key(&a), pow_hash(&a.challenge, 1, 2));
        assert_eq!(replay_ttl_ms(10_000, 4_000), 6_000 + REPLAY_CLOCK_SKEW_MS);
        assert_eq!(replay_ttl_ms(10_000, 12_000), 1 + REPLAY_CLOCK_SKEW_MS);
    }

    #[test]
    fn too_few_latency_samples_are_no_p99() {
        // Three slow uploads (1.6 s each) alone: no latency overload.
        let mut few = vec![1_600_000u64; 3];
        assert_eq!(p99_latency_ms(&mut few, 50), 0.0);
        assert_eq!(p99_latency_ms(&mut [], 0), 0.0);
        // A real window: 200 requests, 2 of them slow.
        let mut many: Vec<u64> = (0..200)
            .map(|i| if i < 2 { 900_000 } else { 2_000 })
            .collect();
        assert_eq!(p99_latency_ms(&mut many, 50), 900.0);
        // 100 requests all slow: overload.
        let mut slow = vec![300_000u64; 100];
        assert_eq!(p99_latency_ms(&mut slow, 50), 300.0);
    }

    #[test]
    fn difficulty_function() {
        let cfg = PowConfig::default();
        let t = LoadTargets {
            new_connections_per_s: 5_000.0,
            in_flight: 2_000.0,
            p99_latency_ms: 50.0,
        };
        let at = |conn: f64| {
            difficulty_for(
                &cfg,
                &Load {
                    new_connections_per_s: conn,
                    ..Load::default()
                },
                &t,
            )
        };
        assert_eq!(at(0.0), 0);
        assert_eq!(at(5_000.0), 0);
        assert_eq!(at(10_000.0), 4);
        assert_eq!(at(20_000.0), 8);
        assert_eq!(at(1e12), 24, "capped");
        assert_eq!(
            difficulty_for(
                &cfg,
                &Load {
                    p99_latency_ms: f64::NAN,
                    ..Load::default()
                },
                &t
            ),
            0
        );
    }

    #[test]
    fn no_caps_by_default() {
        let load = Load {
            new_connections_per_s: 1e9,
            in_flight: 1e9,
            p99_latency_ms: 1e9,
        };
        assert_eq!(
            difficulty_for(&PowConfig::default(), &load, &LoadTargets::default()),
            0
        );
    }

    fn pressure(in_flight: f64, waiting: f64, shed: f64, p99_ms: f64) -> Pressure {
        Pressure {
            in_flight,
            capacity: 100.0,
            waiting,
            shed,
            p99_ms,
        }
    }

    #[test]
    fn verdicts() {
        let p = CapacityPolicy::default();
        assert_eq!(p.verdict(&Pressure::default()), Verdict::Calm);
        assert_eq!(p.verdict(&pressure(50.0, 0.0, 0.0, 10.0)), Verdict::Calm);
        assert_eq!(p.verdict(&pressure(51.0, 0.0, 0.0, 10.0)), Verdict::Busy);
        assert_eq!(p.verdict(&pressure(100.0, 0.0, 0.0, 10.0)), Verdict::Busy);
        assert_eq!(p.verdict(&pressure(10.0, 0.0, 0.0, 126.0)), Verdict::Busy);
        assert_eq!(p.verdict(&pressure(100.0, 1.0, 0.0, 0.0)), Verdict::Over);
        assert_eq!(p.verdict(&pressure(0.0, 0.0, 1.0, 0.0)), Verdict::Over);
        assert_eq!(p.verdict(&pressure(0.0, 0.0, 0.0, 251.0)), Verdict::Over);
        // Nonsense measurements are no overload.
        assert_eq!(
            p.verdict(&pressure(f64::NAN, f64::NAN, -1.0, f64::INFINITY)),
            Verdict::Calm
        );
        // No budget: the p99 alone never overloads.
        let none = CapacityPolicy {
            p99_budget_ms: 0.0,
            ..p
        };
        assert_eq!(none.verdict(&pressure(0.0, 0.0, 0.0, 1e9)), Verdict::Calm);
    }

    /// Below capacity the difficulty stays at base, whatever the rate of
    /// connections (the tuner never sees it); over it, one step per
    /// `raise_every_ms` up to the cap; calm brings it back one step per
    /// `lower_after_ms`; busy holds it.
    #[test]
    fn the_tuner_follows_capacity_with_hysteresis() {
        let cfg = PowConfig {
            base: 2,
            cap: 14,
            step: 4,
            window_ms: 60_000,
        };
        let mut t = CapacityTuner::new(&cfg, CapacityPolicy::default());
        let calm = pressure(10.0, 0.0, 0.0, 5.0);
        let over = pressure(100.0, 40.0, 3.0, 300.0);
        let busy = pressure(90.0, 0.0, 0.0, 5.0);
        for ms in (0..20_000).step_by(250) {
            assert_eq!(t.tick(&cfg, &calm, ms), 2);
        }
        // Over: up at once, then no more than once a second.
        assert_eq!(t.tick(&cfg, &over, 20_000), 6);
        assert_eq!(t.tick(&cfg, &over, 20_250), 6);
        assert_eq!(t.tick(&cfg, &over, 20_999), 6);
        assert_eq!(t.tick(&cfg, &over, 21_000), 10);
        assert_eq!(t.tick(&cfg, &over, 22_000), 14);
        assert_eq!(t.tick(&cfg, &over, 23_000), 14, "capped");
        assert_eq!(t.verdict(), Some(Verdict::Over));
        // Busy holds, however long.
        assert_eq!(t.tick(&cfg, &busy, 30_000), 14);
        assert_eq!(t.tick(&cfg, &busy, 90_000), 14);
        // Calm: one step after 5 s of it, another after 5 s more.
        assert_eq!(t.tick(&cfg, &calm, 100_000), 14);
        assert_eq!(t.tick(&cfg, &calm, 104_999), 14);
        assert_eq!(t.tick(&cfg, &calm, 105_000), 10);
        // Overload again interrupts the calm and raises.
        assert_eq!(t.tick(&cfg, &over, 106_000), 14);
        assert_eq!(t.tick(&cfg, &calm, 107_000), 14);
        assert_eq!(t.tick(&cfg, &calm, 112_000), 10);
        assert_eq!(t.tick(&cfg, &calm, 117_000), 6);
        assert_eq!(t.tick(&cfg, &calm, 122_000), 2);
        assert_eq!(t.tick(&cfg, &calm, 200_000), 2, "never below base");
        // A step of 0 still moves (one bit).
        let flat = PowConfig { step: 0, ..cfg };
        let mut t = CapacityTuner::new(&flat, CapacityPolicy::default());
        assert_eq!(t.tick(&flat, &over, 0), 3);
    }
}
