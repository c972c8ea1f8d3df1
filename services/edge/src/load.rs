//! The gateway's own load and the proof-of-work difficulty it implies
//! (SPEC §15). Two parts, the larger of which is asked:
//!
//! - **capacity** (the default, and all there is unless an operator sets
//!   caps): the gateway's own overload signals — requests in flight
//!   against the slots it has (`max_lookups`), requests waiting for a
//!   slot, requests shed for want of one, and the p99 service time
//!   against its budget — read four times a second by a
//!   [`poz::pow::CapacityTuner`] (sans I/O; this meter only feeds it). Honest
//!   load the gateway keeps up with pays nothing, whatever its rate of
//!   connections;
//! - **caps** (`target_*`, off by default): the documented function of
//!   new connections per second, lookups in flight and p99 latency
//!   against operator-chosen targets (`poz::pow::difficulty_for`). Where
//!   the fleet shares load (Redis), the caps apply to the fleet's
//!   aggregate; the capacity part is always this gateway's own.
//!
//! Latency is what the server spends on a request (the edge measures from
//! the whole request to the answer ready to send), and a window with fewer
//! than `min_latency_samples` requests has no p99 (0): a few slow requests
//! are not overload (`poz::pow::p99_latency_ms`).

use poz::pow::{
    difficulty_for, p99_latency_ms, CapacityPolicy, CapacityTuner, Load, LoadTargets, PowConfig,
    Pressure,
};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts of the current and the previous one-second window.
struct Window {
    started: Instant,
    connections: u64,
    latencies_us: Vec<u64>,
    /// Last complete window.
    last_connections: u64,
    last_p99_ms: f64,
}

/// One gateway's load.
pub struct LoadMeter {
    pub config: PowConfig,
    /// The operator's caps (each 0: none).
    pub targets: LoadTargets,
    /// Fewer requests than this in a one-second window: no p99 (0).
    pub min_latency_samples: usize,
    window: Mutex<Window>,
    in_flight: AtomicU64,
    /// Slots of every edge sharing this meter ([`LoadMeter::add_capacity`]).
    capacity: AtomicU64,
    waiting: AtomicU64,
    /// Requests shed since the start (the tuner counts the difference).
    shed: AtomicU64,
    tuner: Mutex<Tuning>,
    /// What `now` the tuner's clock counts from.
    epoch: Instant,
    difficulty: AtomicU8,
}

/// The capacity tuner and what it last read.
struct Tuning {
    tuner: CapacityTuner,
    shed_seen: u64,
    last: Pressure,
}

/// At most this many latencies are kept per window (a sample suffices
/// for a p99; memory stays fixed under any rate).
const LATENCY_SAMPLES: usize = 4_096;

/// The default least number of requests in a one-second window before its
/// p99 latency counts (docs/OPERATIONS.md, `min_latency_samples`): at 50 a
/// p99 is at worst the slowest request but one, and a gateway that answers
/// fewer than 50 requests a second is not overloaded by them.
pub const MIN_LATENCY_SAMPLES: usize = 50;

impl LoadMeter {
    /// A meter with the default [`CapacityPolicy`] and no capacity yet
    /// (each edge built on it adds its own).
    pub fn new(config: PowConfig, targets: LoadTargets) -> Self {
        LoadMeter {
            config,
            targets,
            min_latency_samples: MIN_LATENCY_SAMPLES,
            window: Mutex::new(Window {
                started: Instant::now(),
                connections: 0,
                latencies_us: Vec::with_capacity(LATENCY_SAMPLES),
                last_connections: 0,
                last_p99_ms: 0.0,
            }),
            in_flight: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            tuner: Mutex::new(Tuning {
                tuner: CapacityTuner::new(&config, CapacityPolicy::default()),
                shed_seen: 0,
                last: Pressure::default(),
            }),
            epoch: Instant::now(),
            difficulty: AtomicU8::new(config.base.min(config.cap)),
        }
    }

    /// Sets how the capacity signals are read (budget, pace).
    pub fn with_policy(self, policy: CapacityPolicy) -> Self {
        self.tuning().tuner.policy = policy;
        self
    }

    /// The capacity policy in force.
    pub fn policy(&self) -> CapacityPolicy {
        self.tuning().tuner.policy
    }

    fn tuning(&self) -> std::sync::MutexGuard<'_, Tuning> {
        self.tuner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `slots` requests served at once to the capacity (each edge
    /// sharing this meter adds its `max_lookups`).
    pub fn add_capacity(&self, slots: usize) {
        self.capacity.fetch_add(slots as u64, Ordering::AcqRel);
    }

    /// A request starts waiting for a slot.
    pub fn waiting_started(&self) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// A request stops waiting for a slot (it got one, or was shed).
    pub fn waiting_finished(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// A request was refused for want of a slot.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::AcqRel);
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests shed since the start.
    pub fn shed_total(&self) -> u64 {
        self.shed.load(Ordering::Acquire)
    }

    /// The pressure the tuner last read.
    pub fn last_pressure(&self) -> Pressure {
        self.tuning().last
    }

    /// The tuner's last verdict on that pressure (None before a tick).
    pub fn verdict(&self) -> Option<poz::pow::Verdict> {
        self.tuning().tuner.verdict()
    }

    /// Sets the least number of requests per window before latency can
    /// raise the difficulty.
    pub fn with_min_latency_samples(mut self, n: usize) -> Self {
        self.min_latency_samples = n;
        self
    }

    fn with_window<T>(&self, now: Instant, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(w.started);
        if elapsed >= Duration::from_secs(1) {
            // A window with nothing in it may have been skipped entirely.
            let (conns, p99) = if elapsed >= Duration::from_secs(2) {
                (0, 0.0)
            } else {
                let p99 = p99_latency_ms(&mut w.latencies_us, self.min_latency_samples);
                (w.connections, p99)
            };
            w.last_connections = conns;
            w.last_p99_ms = p99;
            w.connections = 0;
            w.latencies_us.clear();
            w.started = now;
        }
        f(&mut w)
    }

    pub fn connection_opened(&self) {
        self.with_window(Instant::now(), |w| w.connections += 1);
    }

    /// Records what the server spent on one request: from its last byte
    /// arriving to its answer ready to send.
    pub fn request_done(&self, took: Duration) {
        self.request_done_at(Instant::now(), took);
    }

    fn request_done_at(&self, now: Instant, took: Duration) {
        self.with_window(now, |w| {
            if w.latencies_us.len() < LATENCY_SAMPLES {
                w.latencies_us.push(took.as_micros() as u64);
            }
        });
    }

    pub fn lookup_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn lookup_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The load of the last complete second.
    pub fn local(&self) -> Load {
        self.local_at(Instant::now())
    }

    fn local_at(&self, now: Instant) -> Load {
        let (c, p99) = self.with_window(now, |w| (w.last_connections, w.last_p99_ms));
        Load {
            new_connections_per_s: c as f64,
            in_flight: self.in_flight.load(Ordering::Acquire) as f64,
            p99_latency_ms: p99,
        }
    }

    /// [`LoadMeter::tune`] with this gateway's own caps.
    pub fn set_from(&self, load: &Load) -> u8 {
        self.set_with(load, &self.targets)
    }

    /// [`LoadMeter::tune`] now.
    pub fn set_with(&self, load: &Load, targets: &LoadTargets) -> u8 {
        self.tune(Instant::now(), load, targets)
    }

    /// One tick of the tuner at `now`: reads this gateway's pressure
    /// (slots in use, waiting, shed since the last tick, p99) into the
    /// capacity tuner, and sets the difficulty to the larger of what it
    /// asks and what the caps `targets` ask of `load` (the fleet's, when
    /// shared). `now` is the tuner's clock only (when it may raise or
    /// lower); the load windows keep real time.
    pub fn tune(&self, now: Instant, load: &Load, targets: &LoadTargets) -> u8 {
        let capped = difficulty_for(&self.config, load, targets);
        let p99_ms = self.with_window(Instant::now(), |w| w.last_p99_ms);
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let mut t = self.tuning();
        let shed = self.shed_total();
        let pressure = Pressure {
            in_flight: self.in_flight() as f64,
            capacity: self.capacity.load(Ordering::Acquire) as f64,
            waiting: self.waiting() as f64,
            shed: shed.saturating_sub(t.shed_seen) as f64,
            p99_ms,
        };
        t.shed_seen = shed;
        t.last = pressure;
        let d = t.tuner.tick(&self.config, &pressure, ms).max(capped);
        self.difficulty.store(d, Ordering::Release);
        d
    }

    /// [`LoadMeter::tune`] from this gateway's own load and caps.
    pub fn tune_local(&self, now: Instant) -> u8 {
        self.tune(now, &self.local(), &self.targets)
    }

    /// The difficulty requests must meet now.
    pub fn difficulty(&self) -> u8 {
        self.difficulty.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caps the defaults once were.
    fn caps() -> LoadTargets {
        LoadTargets {
            new_connections_per_s: 5_000.0,
            in_flight: 2_000.0,
            p99_latency_ms: 50.0,
        }
    }

    fn meter() -> (LoadMeter, Instant) {
        let m = LoadMeter::new(PowConfig::default(), caps());
        let start = m.window.lock().unwrap_or_else(|p| p.into_inner()).started;
        (m, start)
    }

    /// Issue 12 §5: a few slow requests in a window (slow uploads were
    /// once counted as latency) do not raise the difficulty.
    #[test]
    fn a_few_slow_requests_are_not_overload() {
        let (m, t0) = meter();
        for i in 0..3 {
            m.request_done_at(
                t0 + Duration::from_millis(100 * i),
                Duration::from_millis(1_600),
            );
        }
        let load = m.local_at(t0 + Duration::from_millis(1_200));
        assert_eq!(load.p99_latency_ms, 0.0);
        assert_eq!(m.set_from(&load), 0);
    }

    /// Real overload still raises it: a full window of slow answers.
    #[test]
    fn a_window_of_slow_requests_is_overload() {
        let (m, t0) = meter();
        for i in 0..MIN_LATENCY_SAMPLES as u64 {
            m.request_done_at(
                t0 + Duration::from_millis(10 * i),
                Duration::from_millis(200),
            );
        }
        let load = m.local_at(t0 + Duration::from_millis(1_200));
        assert_eq!(load.p99_latency_ms, 200.0);
        // 200 ms against a 50 ms target: overload 4, two doublings.
        assert_eq!(m.set_from(&load), 8);
        // One request short of the minimum: not counted.
        let (m, t0) = meter();
        for i in 0..MIN_LATENCY_SAMPLES as u64 - 1 {
            m.request_done_at(
                t0 + Duration::from_millis(10 * i),
                Duration::from_millis(200),
            );
        }
        assert_eq!(
            m.local_at(t0 + Duration::from_millis(1_200)).p99_latency_ms,
            0.0
        );
    }

    #[test]
    fn the_minimum_is_a_setting() {
        let (m, t0) = meter();
        let m = m.with_min_latency_samples(1);
        m.request_done_at(t0, Duration::from_millis(100));
        assert_eq!(
            m.local_at(t0 + Duration::from_millis(1_100)).p99_latency_ms,
            100.0
        );
    }

    /// Without caps the rate of connections raises nothing: only the
    /// gateway's own overload does, a step per second, and calm brings
    /// it back.
    #[test]
    fn capacity_not_connections_sets_the_difficulty() {
        let m = LoadMeter::new(PowConfig::default(), LoadTargets::default());
        m.add_capacity(4);
        let t0 = m.epoch;
        let flood = Load {
            new_connections_per_s: 1e6,
            in_flight: 0.0,
            p99_latency_ms: 0.0,
        };
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.tune(at(1), &flood, &m.targets), 0);
        for _ in 0..4 {
            m.lookup_started();
        }
        // Every slot busy, none waiting: busy, not over.
        assert_eq!(m.tune(at(2), &flood, &m.targets), 0);
        m.waiting_started();
        assert_eq!(m.tune(at(3), &flood, &m.targets), 4);
        assert_eq!(m.last_pressure().waiting, 1.0);
        m.waiting_finished();
        m.shed();
        assert_eq!(m.tune(at(4), &flood, &m.targets), 8);
        // The shed request counted once: busy again, held.
        assert_eq!(m.tune(at(5), &flood, &m.targets), 8);
        for _ in 0..4 {
            m.lookup_finished();
        }
        assert_eq!(m.tune(at(6), &flood, &m.targets), 8);
        assert_eq!(m.tune(at(11), &flood, &m.targets), 4);
        assert_eq!(m.tune(at(16), &flood, &m.targets), 0);
        // A cap, where set, still applies: the larger of the two.
        let caps = caps();
        assert_eq!(m.tune(at(17), &flood, &caps), 24);
    }
}
