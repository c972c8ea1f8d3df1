//! The edge's Prometheus metrics (docs/OPERATIONS.md, "Metrics"): what
//! each POZ port answered, its connections, and the proof-of-work
//! difficulty with the load that set it. Registered once per process in
//! the kit's registry, so pozd's three ports share each family.

use poz::gate::Port;
use poz::pow::{Load, LoadTargets, Pressure, Verdict};
use poz::wire::{MessageType, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

/// `port` label values: `plain` (7074), `noise-query` (7075),
/// `noise-submit` (7076).
pub fn port_name(port: Port) -> &'static str {
    match port {
        Port::Plain => "plain",
        Port::NoiseQuery => "noise-query",
        Port::NoiseSubmit => "noise-submit",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub port: &'static str,
    /// The message type's SPEC name (`master`, `identity`, …), or
    /// `invalid` for a frame that never decoded.
    pub r#type: &'static str,
    /// The response status (`OK`, `NOT_FOUND`, `POW_REQUIRED`, …).
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub port: &'static str,
    /// `busy` (max_connections), `per_ip` (max_connections_per_ip),
    /// `pending` (max_pending).
    pub reason: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// Every edge metric.
pub struct EdgeMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub open: Family<PortLabels, Gauge>,
    pub accepted: Family<PortLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    pub timed_out: Family<PortLabels, Counter>,
    pub difficulty: Gauge,
    pub load_connections: GaugeF,
    pub load_in_flight: GaugeF,
    pub load_p99: GaugeF,
    pub target_connections: GaugeF,
    pub target_in_flight: GaugeF,
    pub target_p99: GaugeF,
    pub capacity: GaugeF,
    pub waiting: GaugeF,
    pub overloaded: Gauge,
    pub budget_p99: GaugeF,
    pub shed: Counter,
}

/// The edge's metrics, registered on first use.
pub static EDGE: LazyLock<EdgeMetrics> = LazyLock::new(|| {
    use poz_kit::metrics::register;
    let m = EdgeMetrics {
        requests: Family::default(),
        open: Family::default(),
        accepted: Family::default(),
        refused: Family::default(),
        timed_out: Family::default(),
        difficulty: Gauge::default(),
        load_connections: GaugeF::default(),
        load_in_flight: GaugeF::default(),
        load_p99: GaugeF::default(),
        target_connections: GaugeF::default(),
        target_in_flight: GaugeF::default(),
        target_p99: GaugeF::default(),
        capacity: GaugeF::default(),
        waiting: GaugeF::default(),
        overloaded: Gauge::default(),
        budget_p99: GaugeF::default(),
        shed: Counter::default(),
    };
    register(
        "poz_edge_requests",
        "POZ requests answered, by port, message type and response status",
        None,
        m.requests.clone(),
    );
    register(
        "poz_edge_connections_open",
        "Connections open now, by port",
        None,
        m.open.clone(),
    );
    register(
        "poz_edge_connections_accepted",
        "Connections accepted, by port",
        None,
        m.accepted.clone(),
    );
    register(
        "poz_edge_connections_refused",
        "Connections closed unread by the discipline, by port and limit",
        None,
        m.refused.clone(),
    );
    register(
        "poz_edge_timeouts",
        "Connections that timed out reading the request or writing the answer, by port",
        None,
        m.timed_out.clone(),
    );
    register(
        "poz_pow_difficulty_bits",
        "The proof-of-work difficulty requests must meet now (SPEC §15)",
        None,
        m.difficulty.clone(),
    );
    register(
        "poz_pow_load_new_connections_per_second",
        "New connections per second the difficulty was last set from (the fleet's, when shared)",
        None,
        m.load_connections.clone(),
    );
    register(
        "poz_pow_load_in_flight_requests",
        "Requests in flight the difficulty was last set from",
        None,
        m.load_in_flight.clone(),
    );
    register(
        "poz_pow_load_p99_latency",
        "p99 latency the difficulty was last set from",
        Some(Unit::Seconds),
        m.load_p99.clone(),
    );
    register(
        "poz_pow_target_new_connections_per_second",
        "New connections per second sustained without proofs of work (the fleet's, when shared)",
        None,
        m.target_connections.clone(),
    );
    register(
        "poz_pow_target_in_flight_requests",
        "Requests in flight sustained without proofs of work",
        None,
        m.target_in_flight.clone(),
    );
    register(
        "poz_pow_target_p99_latency",
        "p99 latency sustained without proofs of work",
        Some(Unit::Seconds),
        m.target_p99.clone(),
    );
    register(
        "poz_pow_capacity_requests",
        "Requests this process serves at once (its edges' max_lookups): the capacity the difficulty follows",
        None,
        m.capacity.clone(),
    );
    register(
        "poz_pow_waiting_requests",
        "Requests waiting for a slot when the difficulty was last set",
        None,
        m.waiting.clone(),
    );
    register(
        "poz_pow_overloaded",
        "The last tick's verdict on this process's capacity: 1 over (difficulty rising), 0 busy (held), -1 calm (falling back to base)",
        None,
        m.overloaded.clone(),
    );
    register(
        "poz_pow_budget_p99_latency",
        "The p99 service time over which this process counts itself overloaded",
        Some(Unit::Seconds),
        m.budget_p99.clone(),
    );
    register(
        "poz_edge_shed_requests",
        "Requests refused UNAVAILABLE for want of a slot (max_lookups full for queue_wait_ms)",
        None,
        m.shed.clone(),
    );
    m
});

impl EdgeMetrics {
    /// Counts one answered request. `frame` is the request as decoded
    /// enough to name its type (`None`: it never decoded).
    pub fn answered(&self, port: Port, kind: Option<MessageType>, status: Status) {
        self.requests
            .get_or_create(&RequestLabels {
                port: port_name(port),
                r#type: kind.and_then(|k| k.name()).unwrap_or("invalid"),
                status: status.name().unwrap_or("unknown"),
            })
            .inc();
    }

    /// Records what the tuner set the difficulty from: the caps' load
    /// and targets, and the capacity's pressure, verdict and budget.
    pub fn tuned(
        &self,
        difficulty: u8,
        load: &Load,
        targets: &LoadTargets,
        pressure: &Pressure,
        verdict: Option<Verdict>,
        p99_budget_ms: f64,
    ) {
        self.capacity.set(pressure.capacity);
        self.waiting.set(pressure.waiting);
        self.overloaded.set(match verdict {
            Some(Verdict::Over) => 1,
            Some(Verdict::Busy) => 0,
            Some(Verdict::Calm) | None => -1,
        });
        self.budget_p99.set(p99_budget_ms / 1000.0);
        self.difficulty.set(i64::from(difficulty));
        self.load_connections.set(load.new_connections_per_s);
        self.load_in_flight.set(load.in_flight);
        self.load_p99.set(load.p99_latency_ms / 1000.0);
        self.target_connections.set(targets.new_connections_per_s);
        self.target_in_flight.set(targets.in_flight);
        self.target_p99.set(targets.p99_latency_ms / 1000.0);
    }
}

/// Holds a connection in `poz_edge_connections_open` while it lives.
pub struct OpenConnection(&'static str);

impl OpenConnection {
    pub fn start(port: Port) -> OpenConnection {
        let name = port_name(port);
        EDGE.open.get_or_create(&PortLabels { port: name }).inc();
        OpenConnection(name)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        EDGE.open.get_or_create(&PortLabels { port: self.0 }).dec();
    }
}
