//! The store's connection pool as Prometheus gauges, read at each scrape
//! (docs/OPERATIONS.md, "Metrics"): `poz_db_pool_connections{state}`
//! (`idle`, `in_use`) and `poz_db_pool_max_connections`; with read replicas,
//! their lag, whether they are up, reads by source and the read mark.

use crate::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

#[derive(Debug)]
struct PoolGauges {
    pool: sqlx::AnyPool,
}

impl prometheus_client::collector::Collector for PoolGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        let max = i64::from(self.pool.options().get_max_connections());
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "poz_db_pool_connections",
            "Database connections the store holds, by state",
            None,
            gauge.metric_type(),
        )?;
        for (state, v) in [("idle", idle), ("in_use", (size - idle).max(0))] {
            let labels = PoolState { state };
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
        let m = encoder.encode_descriptor(
            "poz_db_pool_max_connections",
            "Connections the store's pool may open (max_connections)",
            None,
            gauge.metric_type(),
        )?;
        ConstGauge::new(max).encode(m)?;
        Ok(())
    }
}

/// Exports `store`'s pool use at `/metrics`. Call once per process.
pub fn export_pool(store: &Store) {
    poz_kit::metrics::register_collector(Box::new(PoolGauges {
        pool: store.pool().clone(),
    }));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabel {
    source: &'static str,
}

/// The read replicas (docs/OPERATIONS.md, "Read replicas"), read at each
/// scrape from what the last probe (every second) and the reads saw.
#[derive(Debug)]
struct ReplicaGauges {
    store: Store,
}

impl prometheus_client::collector::Collector for ReplicaGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let states = self.store.replica_states();
        let gauge = ConstGauge::new(0i64);
        let mut lag = encoder.encode_descriptor(
            "poz_db_replica_lag",
            "WAL the primary has written that the replica has not replayed, at the last probe",
            Some(&prometheus_client::registry::Unit::Bytes),
            gauge.metric_type(),
        )?;
        for s in &states {
            if let Some(b) = s.lag_bytes {
                let labels = ReplicaLabel {
                    replica: s.label.clone(),
                };
                ConstGauge::new(i64::try_from(b).unwrap_or(i64::MAX))
                    .encode(lag.encode_family(&labels)?)?;
            }
        }
        let mut up = encoder.encode_descriptor(
            "poz_db_replica_up",
            "1 while the replica answers (reads may go to it), 0 after a failed read or probe",
            None,
            gauge.metric_type(),
        )?;
        for s in &states {
            let labels = ReplicaLabel {
                replica: s.label.clone(),
            };
            ConstGauge::new(i64::from(s.up)).encode(up.encode_family(&labels)?)?;
        }
        let [replica, primary, refused, waited] = self.store.read_counts();
        let counter = ConstCounter::new(0u64);
        let mut reads = encoder.encode_descriptor(
            "poz_store_reads",
            "StoreRead calls by where they were served (refused: no replica at the read mark and no fallback)",
            None,
            counter.metric_type(),
        )?;
        for (source, v) in [
            ("replica", replica),
            ("primary", primary),
            ("refused", refused),
        ] {
            ConstCounter::new(v).encode(reads.encode_family(&ReadLabel { source })?)?;
        }
        let w = encoder.encode_descriptor(
            "poz_store_reads_waited",
            "StoreRead calls that waited for a replica to reach the read mark",
            None,
            counter.metric_type(),
        )?;
        ConstCounter::new(waited).encode(w)?;
        let m = encoder.encode_descriptor(
            "poz_store_read_mark",
            "The read mark: a WAL position no later read goes behind",
            Some(&prometheus_client::registry::Unit::Bytes),
            gauge.metric_type(),
        )?;
        ConstGauge::new(i64::try_from(self.store.read_mark()).unwrap_or(i64::MAX)).encode(m)?;
        Ok(())
    }
}

/// Exports the store's read replicas (lag, up, reads by source, the read
/// mark) at `/metrics`, when it has any. Call once per process.
pub fn export_replicas(store: &Store) {
    if store.has_replicas() {
        poz_kit::metrics::register_collector(Box::new(ReplicaGauges {
            store: store.clone(),
        }));
    }
}
