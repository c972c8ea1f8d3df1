//! The store's connection pool as Prometheus gauges, read at each scrape
//! (docs/OPERATIONS.md, "Metrics"): `poz_db_pool_connections{state}`
//! (`idle`, `in_use`) and `poz_db_pool_max_connections`.

use crate::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
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
