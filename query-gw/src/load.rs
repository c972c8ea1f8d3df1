//! The gateway's own load (new connections per second, lookups in flight,
//! p99 latency over the last second) and the proof-of-work difficulty it
//! implies by the documented function (`poz::pow::difficulty_for`, SPEC
//! §16). Where the fleet shares load (Redis), the difficulty follows the
//! fleet's aggregate; this meter is the local part and the fallback.

use poz::pow::{difficulty_for, Load, LoadTargets, PowConfig};
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
    window: Mutex<Window>,
    in_flight: AtomicU64,
    difficulty: AtomicU8,
}

/// At most this many latencies are kept per window (a sample suffices
/// for a p99; memory stays fixed under any rate).
const LATENCY_SAMPLES: usize = 4_096;

impl LoadMeter {
    pub fn new(config: PowConfig, targets: LoadTargets) -> Self {
        LoadMeter {
            config,
            targets,
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

    fn with_window<T>(&self, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = w.started.elapsed();
        if elapsed >= Duration::from_secs(1) {
            // A window with nothing in it may have been skipped entirely.
            let (conns, p99) = if elapsed >= Duration::from_secs(2) {
                (0, 0.0)
            } else {
                let mut l = std::mem::take(&mut w.latencies_us);
                l.sort_unstable();
                let p99 = l
                    .get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
                    .map(|us| *us as f64 / 1000.0)
                    .unwrap_or(0.0);
                (w.connections, p99)
            };
            w.last_connections = conns;
            w.last_p99_ms = p99;
            w.connections = 0;
            w.latencies_us.clear();
            w.started = Instant::now();
        }
        f(&mut w)
    }

    pub fn connection_opened(&self) {
        self.with_window(|w| w.connections += 1);
    }

    pub fn request_done(&self, took: Duration) {
        self.with_window(|w| {
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
        let (c, p99) = self.with_window(|w| (w.last_connections, w.last_p99_ms));
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
