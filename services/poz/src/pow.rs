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

/// The targets a gateway can sustain without protection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadTargets {
    pub new_connections_per_s: f64,
    pub in_flight: f64,
    pub p99_latency_ms: f64,
}

impl Default for LoadTargets {
    fn default() -> Self {
        LoadTargets {
            new_connections_per_s: 5_000.0,
            in_flight: 2_000.0,
            p99_latency_ms: 50.0,
        }
    }
}

/// The difficulty for a load: with overload `L` = the largest of the
/// three load/target ratios, `base` while `L` ≤ 1, otherwise
/// `base + ceil(step × log2 L)`, never above `cap`. Each doubling of
/// overload multiplies an attacker's work by 2^step.
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
        let t = LoadTargets::default();
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
}
