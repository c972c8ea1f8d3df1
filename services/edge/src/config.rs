//! [`EdgeConfig`]: every setting of the edge, the same keys in both
//! gateways' files (`noise_key_file`, `max_connections`, …, flat beside
//! the gateway's own keys) and the same environment variables under each
//! gateway's prefix (`POZ_QUERY_GW_MAX_CONNECTIONS`,
//! `POZ_SUBMIT_GW_MAX_CONNECTIONS`). A gateway's `Config` holds it as
//! `#[serde(flatten)] edge: EdgeConfig`, and it holds the settings every
//! service shares ([`poz_kit::ServeSettings`]: logs, metrics, TLS for the
//! gateway's gRPC calls) the same way. The kit's loader refuses any key
//! none of them names, so a typo is still an error (tested in both
//! gateways).

use crate::{Discipline, EdgeError, LoadMeter};
use poz::noise::StaticKeypair;
use poz::pow::{CapacityPolicy, LoadTargets, PowConfig, Secrets};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Every setting of the edge, with its default (docs/OPERATIONS.md,
/// "The edge"). Durations are in milliseconds, as in the files.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default)]
pub struct EdgeConfig {
    /// This gateway's Noise static secret: 64 hex digits, first line (the
    /// ceremony writes it; mount it from a Kubernetes Secret).
    pub noise_key_file: Option<PathBuf>,
    /// PoW challenge secrets, 64 hex digits per line, the current one
    /// first; shared by every gateway of the fleet. Add a new first line
    /// and keep the old one for a window to rotate without breaking
    /// challenges in flight.
    pub challenge_secrets_file: Option<PathBuf>,
    /// The difficulty (SPEC §15): bits with no overload, at most, per
    /// step (of the capacity tuner; per doubling of the overload of a
    /// cap); the challenge window.
    pub pow_base: u8,
    pub pow_cap: u8,
    pub pow_step: u8,
    pub pow_window_ms: u64,
    /// Operators' caps: load this gateway takes without asking for proofs
    /// of work whatever its capacity. 0 (the default): no cap, the
    /// difficulty follows capacity alone.
    pub target_new_connections_per_s: f64,
    pub target_in_flight: f64,
    pub target_p99_latency_ms: f64,
    /// The service-time budget: a p99 above it is overload (SPEC §15,
    /// "Capacity"); 0: the p99 never is.
    pub p99_budget_ms: f64,
    /// While overloaded, at most one raise per this many ms.
    pub pow_raise_every_ms: u64,
    /// Calm this long lowers the difficulty one step (and each further
    /// such stretch another).
    pub pow_lower_after_ms: u64,
    /// Requests a one-second window must hold before its p99 latency can
    /// raise the difficulty (fewer: no latency overload).
    pub min_latency_samples: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_pending: usize,
    pub read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub rate_per_ip: u32,
    pub burst_per_ip: u32,
    pub max_lookups: usize,
    pub queue_wait_ms: u64,
    pub drain_timeout_ms: u64,
    /// Redis for the fleet's shared load and spent proofs of work (e.g.
    /// redis://redis:6379/0); empty: this gateway's own only.
    pub redis_url: String,
    /// This gateway's name in the shared load (empty: host name and
    /// process ID).
    pub gateway_id: String,
    /// How long a gateway's report lives in Redis.
    pub load_ttl_ms: u64,
    /// Redis slower than this counts as unreachable (own load used).
    pub redis_timeout_ms: u64,
    /// Logs, metrics endpoint, TLS for the gateway's gRPC calls
    /// (docs/OPERATIONS.md, "Every service"). `[allow]` has no use here:
    /// a gateway serves no gRPC.
    #[serde(flatten)]
    pub serve: poz_kit::ServeSettings,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let d = Discipline::default();
        let p = PowConfig::default();
        let t = LoadTargets::default();
        let c = CapacityPolicy::default();
        let ms = |d: Duration| d.as_millis() as u64;
        EdgeConfig {
            noise_key_file: None,
            challenge_secrets_file: None,
            pow_base: p.base,
            pow_cap: p.cap,
            pow_step: p.step,
            pow_window_ms: p.window_ms,
            target_new_connections_per_s: t.new_connections_per_s,
            target_in_flight: t.in_flight,
            target_p99_latency_ms: t.p99_latency_ms,
            p99_budget_ms: c.p99_budget_ms,
            pow_raise_every_ms: c.raise_every_ms,
            pow_lower_after_ms: c.lower_after_ms,
            min_latency_samples: crate::load::MIN_LATENCY_SAMPLES,
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
            max_pending: d.max_pending,
            read_timeout_ms: ms(d.read_timeout),
            idle_timeout_ms: ms(d.idle_timeout),
            write_timeout_ms: ms(d.write_timeout),
            rate_per_ip: d.rate_per_ip,
            burst_per_ip: d.burst_per_ip,
            max_lookups: d.max_lookups,
            queue_wait_ms: ms(d.queue_wait),
            drain_timeout_ms: ms(d.drain_timeout),
            redis_url: String::new(),
            gateway_id: String::new(),
            load_ttl_ms: 3_000,
            redis_timeout_ms: 250,
            serve: poz_kit::ServeSettings::default(),
        }
    }
}

impl EdgeConfig {
    /// Refuses what would only fail later; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.noise_key_file.is_none() {
            return Err("noise_key_file is required (the ceremony writes one per gateway)".into());
        }
        if self.challenge_secrets_file.is_none() {
            return Err(
                "challenge_secrets_file is required (shared by the fleet's gateways)".into(),
            );
        }
        if self.pow_cap > 32 || self.pow_base > self.pow_cap {
            return Err("pow: base <= cap <= 32".into());
        }
        let caps = [
            self.target_new_connections_per_s,
            self.target_in_flight,
            self.target_p99_latency_ms,
            self.p99_budget_ms,
        ];
        if caps.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("target_* and p99_budget_ms: 0 (off) or more".into());
        }
        if self.pow_window_ms < 1_000 {
            return Err("pow_window_ms: at least 1000".into());
        }
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_pending", self.max_pending),
            ("max_lookups", self.max_lookups),
        ] {
            if v == 0 {
                return Err(format!("{name}: at least 1"));
            }
        }
        if self.rate_per_ip == 0 || self.burst_per_ip == 0 {
            return Err("rate_per_ip and burst_per_ip: at least 1".into());
        }
        let redis_ok = self.redis_url.is_empty()
            || self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("rediss://");
        if !redis_ok {
            return Err(format!(
                "redis_url {} is not a redis:// URL",
                poz_kit::shown(&self.redis_url)
            ));
        }
        if self.load_ttl_ms < 500 || self.redis_timeout_ms == 0 {
            return Err("load_ttl_ms: at least 500; redis_timeout_ms: at least 1".into());
        }
        if self.read_timeout_ms == 0 || self.idle_timeout_ms == 0 || self.write_timeout_ms == 0 {
            return Err("timeouts: at least 1 ms".into());
        }
        if !self.serve.allow.0.is_empty() {
            return Err("allow: a gateway serves no gRPC, so has no allowlist".into());
        }
        self.serve.validate()
    }

    /// The gRPC channel to the peer at `url`, with this gateway's TLS
    /// identity for `https://` (`setting` names it in the error).
    pub fn peer(&self, setting: &'static str, url: &str) -> Result<poz_kit::Channel, EdgeError> {
        self.serve
            .channels()
            .and_then(|c| c.lazy(url))
            .map_err(|source| EdgeError::Peer { setting, source })
    }

    /// The connection discipline these settings describe.
    pub fn discipline(&self) -> Discipline {
        let ms = Duration::from_millis;
        Discipline {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending: self.max_pending,
            read_timeout: ms(self.read_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            write_timeout: ms(self.write_timeout_ms),
            rate_per_ip: self.rate_per_ip,
            burst_per_ip: self.burst_per_ip,
            max_lookups: self.max_lookups,
            queue_wait: ms(self.queue_wait_ms),
            drain_delay: ms(self.serve.drain_delay_ms),
            drain_timeout: ms(self.drain_timeout_ms),
        }
    }

    /// The difficulty function and challenge window.
    pub fn pow(&self) -> PowConfig {
        PowConfig {
            base: self.pow_base,
            cap: self.pow_cap,
            step: self.pow_step,
            window_ms: self.pow_window_ms,
        }
    }

    /// The load one gateway takes without asking for proofs.
    pub fn targets(&self) -> LoadTargets {
        LoadTargets {
            new_connections_per_s: self.target_new_connections_per_s,
            in_flight: self.target_in_flight,
            p99_latency_ms: self.target_p99_latency_ms,
        }
    }

    /// A load meter for these settings (difficulty at `pow_base` until
    /// the tuner first runs).
    pub fn capacity_policy(&self) -> CapacityPolicy {
        CapacityPolicy {
            p99_budget_ms: self.p99_budget_ms,
            raise_every_ms: self.pow_raise_every_ms,
            lower_after_ms: self.pow_lower_after_ms,
        }
    }

    pub fn load_meter(&self) -> LoadMeter {
        LoadMeter::new(self.pow(), self.targets())
            .with_min_latency_samples(self.min_latency_samples)
            .with_policy(self.capacity_policy())
    }

    /// How long a request to Redis may take before Redis counts as down.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// How long this gateway's load report lives in Redis.
    pub fn load_ttl(&self) -> Duration {
        Duration::from_millis(self.load_ttl_ms)
    }

    /// This gateway's name in the shared load: `gateway_id`, else the
    /// host name and process ID.
    pub fn gateway_id(&self) -> String {
        if !self.gateway_id.is_empty() {
            return self.gateway_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }

    /// The Noise static key from `noise_key_file`.
    pub fn noise_key(&self) -> Result<StaticKeypair, EdgeError> {
        let path = self
            .noise_key_file
            .as_deref()
            .ok_or(EdgeError::Missing("noise_key_file"))?;
        crate::read_noise_key(path)
    }

    /// The challenge secrets from `challenge_secrets_file`.
    pub fn secrets(&self) -> Result<Secrets, EdgeError> {
        let path = self
            .challenge_secrets_file
            .as_deref()
            .ok_or(EdgeError::Missing("challenge_secrets_file"))?;
        crate::read_secrets(path)
    }
}

/// The flags every gateway binary takes besides its addresses: flatten
/// into its clap arguments (`#[command(flatten)]`, `#[serde(flatten)]`).
/// Each overrides the file and the environment.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct GatewayArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub config: poz_kit::ConfigArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub serve: poz_kit::ServeArgs,
    /// The fleet's Redis (shared load and spent proofs).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// This gateway's name in the shared load.
    #[arg(long)]
    pub gateway_id: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn valid() -> EdgeConfig {
        EdgeConfig {
            noise_key_file: Some("noise.key".into()),
            challenge_secrets_file: Some("challenge.secrets".into()),
            serve: poz_kit::ServeSettings {
                insecure: true,
                ..Default::default()
            },
            ..EdgeConfig::default()
        }
    }

    #[test]
    fn validation_names_the_setting() {
        assert_eq!(valid().validate(), Ok(()));
        let refused = |f: fn(&mut EdgeConfig), says: &str| {
            let mut c = valid();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(says), "{e} lacks {says}");
        };
        refused(|c| c.noise_key_file = None, "noise_key_file is required");
        refused(
            |c| c.challenge_secrets_file = None,
            "challenge_secrets_file is required",
        );
        refused(|c| c.pow_cap = 33, "base <= cap <= 32");
        refused(|c| c.pow_base = c.pow_cap + 1, "base <= cap <= 32");
        refused(|c| c.pow_window_ms = 999, "pow_window_ms");
        refused(|c| c.target_in_flight = -1.0, "0 (off) or more");
        refused(|c| c.p99_budget_ms = f64::NAN, "0 (off) or more");
        refused(|c| c.max_connections = 0, "max_connections: at least 1");
        refused(|c| c.max_connections_per_ip = 0, "max_connections_per_ip");
        refused(|c| c.max_pending = 0, "max_pending");
        refused(|c| c.max_lookups = 0, "max_lookups");
        refused(|c| c.rate_per_ip = 0, "rate_per_ip");
        refused(|c| c.burst_per_ip = 0, "burst_per_ip");
        refused(
            |c| c.redis_url = "http://redis".into(),
            "not a redis:// URL",
        );
        refused(|c| c.load_ttl_ms = 499, "load_ttl_ms");
        refused(|c| c.redis_timeout_ms = 0, "redis_timeout_ms");
        refused(|c| c.idle_timeout_ms = 0, "timeouts");
        refused(
            |c| c.serve.allow = poz_kit::Allowlist::of(&[("poz.v1.StoreRead", &["x"])]),
            "a gateway serves no gRPC",
        );
        let mut c = valid();
        c.redis_url = "rediss://r:6379/0".into();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn the_mappings_carry_every_setting() {
        let c = EdgeConfig {
            pow_base: 3,
            pow_cap: 20,
            pow_step: 2,
            pow_window_ms: 30_000,
            target_new_connections_per_s: 7.0,
            target_in_flight: 8.0,
            target_p99_latency_ms: 9.0,
            read_timeout_ms: 11,
            queue_wait_ms: 12,
            max_lookups: 13,
            min_latency_samples: 5,
            p99_budget_ms: 14.0,
            pow_raise_every_ms: 15,
            pow_lower_after_ms: 16,
            ..valid()
        };
        let p = c.pow();
        assert_eq!((p.base, p.cap, p.step, p.window_ms), (3, 20, 2, 30_000));
        let t = c.targets();
        assert_eq!(
            (t.new_connections_per_s, t.in_flight, t.p99_latency_ms),
            (7.0, 8.0, 9.0)
        );
        let d = c.discipline();
        assert_eq!(d.read_timeout, Duration::from_millis(11));
        assert_eq!(d.queue_wait, Duration::from_millis(12));
        assert_eq!(d.max_lookups, 13);
        assert_eq!(
            c.capacity_policy(),
            CapacityPolicy {
                p99_budget_ms: 14.0,
                raise_every_ms: 15,
                lower_after_ms: 16
            }
        );
        let m = c.load_meter();
        assert_eq!(m.policy(), c.capacity_policy());
        assert_eq!((m.min_latency_samples, m.difficulty()), (5, 3));
        // The defaults are the discipline's and the difficulty function's.
        let d = EdgeConfig::default();
        assert_eq!(
            format!("{:?}", d.discipline()),
            format!("{:?}", Discipline::default())
        );
        assert_eq!(d.pow(), PowConfig::default());
        assert_eq!(d.capacity_policy(), CapacityPolicy::default());
        assert_eq!(d.targets(), LoadTargets::default());
        assert_eq!(
            EdgeConfig {
                gateway_id: "g1".into(),
                ..d
            }
            .gateway_id(),
            "g1"
        );
    }

    /// A configuration that flattens the edge, as the gateways' do.
    #[derive(Serialize, Deserialize, Debug)]
    struct Outer {
        listen: String,
        #[serde(flatten)]
        edge: EdgeConfig,
    }
    impl Default for Outer {
        fn default() -> Self {
            Outer {
                listen: "127.0.0.1:1".into(),
                edge: valid(),
            }
        }
    }
    /// Loads `Outer` as a gateway binary does.
    fn start<C: poz_kit::ServiceConfig>(
        args: &GatewayArgs,
        flags: &GatewayArgs,
    ) -> Result<Option<C>, poz_kit::ConfigError> {
        poz_kit::start("POZ_T_", &args.config, flags)
    }
    impl poz_kit::ServiceConfig for Outer {
        fn validate(&self) -> Result<(), String> {
            poz_kit::check_listen("listen", &self.listen)?;
            self.edge.validate()
        }
    }

    /// The edge's keys stay flat in files and environment variables, and
    /// a key neither the outer configuration nor the edge knows is refused.
    #[test]
    #[allow(clippy::result_large_err)]
    fn flattened_keys_load_flat_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                "listen = \"127.0.0.1:9\"\nmax_connections = 77\ntarget_in_flight = 3\n",
            )?;
            let args = GatewayArgs {
                config: poz_kit::ConfigArgs {
                    file: Some(jail.directory().join("gw.toml")),
                    print_config: false,
                },
                ..GatewayArgs::default()
            };
            jail.set_env("POZ_T_MAX_PENDING", "5");
            jail.set_env("POZ_T_REDIS_TIMEOUT_MS", "40");
            let c: Outer = start::<Outer>(&args, &args).unwrap().unwrap();
            assert_eq!(c.listen, "127.0.0.1:9");
            assert_eq!(c.edge.max_connections, 77);
            assert_eq!(c.edge.target_in_flight, 3.0);
            assert_eq!(c.edge.max_pending, 5);
            assert_eq!(c.edge.redis_timeout(), Duration::from_millis(40));
            assert_eq!(c.edge.noise_key_file, valid().noise_key_file);
            // Flags that the edge holds reach it too.
            let flags = GatewayArgs {
                gateway_id: Some("gw-7".into()),
                ..GatewayArgs::default()
            };
            let c: Outer = start::<Outer>(&args, &flags).unwrap().unwrap();
            assert!(!c.edge.serve.log_json);
            assert_eq!(c.edge.gateway_id, "gw-7");
            // The edge's validation runs.
            jail.set_env("POZ_T_MAX_PENDING", "0");
            let e = start::<Outer>(&args, &args).unwrap_err();
            assert_eq!(e.to_string(), "configuration: max_pending: at least 1");
            jail.set_env("POZ_T_MAX_PENDING", "5");
            // Unknown keys: in the file, and in the environment.
            jail.create_file("gw.toml", "listen = \"127.0.0.1:9\"\nmax_conections = 7\n")?;
            let e = start::<Outer>(&args, &args).unwrap_err();
            assert!(e.to_string().contains("max_conections"), "{e}");
            jail.create_file("gw.toml", "listen = \"127.0.0.1:9\"\n")?;
            assert!(start::<Outer>(&args, &args).is_ok());
            jail.set_env("POZ_T_MAX_CONECTIONS", "7");
            let e = start::<Outer>(&args, &args).unwrap_err();
            assert!(e.to_string().contains("max_conections"), "{e}");
            Ok(())
        });
    }
}
