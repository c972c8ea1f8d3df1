//! The gateway's own load (new connections per second, lookups in flight,
//! p99 latency over the last second) and the proof-of-work difficulty it
//! implies by the documented function (`poz::pow::difficulty_for`, SPEC
//! §15). Where the fleet shares load (Redis), the difficulty follows the
//! fleet's aggregate; this meter is the local part and the fallback.
//!
//! Latency is what the server spends on a request (the edge measures from
//! the whole request to the answer ready to send), and a window with fewer
//! than `min_latency_samples` requests has no p99 (0): a few slow requests
//! are not overload (`poz::pow::p99_latency_ms`).

use poz::pow::{difficulty_for, p99_latency_ms, Load, LoadTargets, PowConfig};
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
    pub targets: LoadTargets,
    /// Fewer requests than this in a one-second window: no p99 (0).
    pub min_latency_samples: usize,
    window: Mutex<Window>,
    in_flight: AtomicU64,
    difficulty: AtomicU8,
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
            difficulty: AtomicU8::new(config.base.min(config.cap)),
        }
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

    /// Sets the difficulty from this gateway's targets and a load.
    pub fn set_from(&self, load: &Load) -> u8 {
        self.set_with(load, &self.targets)
    }

    /// Sets the difficulty from a load and the targets it is measured
    /// against (the fleet's, which scale with its size).
    pub fn set_with(&self, load: &Load, targets: &LoadTargets) -> u8 {
        let d = difficulty_for(&self.config, load, targets);
        self.difficulty.store(d, Ordering::Release);
        d
    }

    /// The difficulty requests must meet now.
    pub fn difficulty(&self) -> u8 {
        self.difficulty.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> (LoadMeter, Instant) {
        let m = LoadMeter::new(PowConfig::default(), LoadTargets::default());
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
}
