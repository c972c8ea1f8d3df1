//! What every gateway binary does at start and while it runs, whatever it
//! answers: read its Noise key and the fleet's challenge secrets, keep the
//! proof-of-work difficulty following the load (the fleet's through Redis,
//! or its own), and forget quiet addresses.

use crate::edge::{Answer, Edge};
use crate::fleet::{FleetLoad, SharedReplay, Source};
use crate::load::LoadMeter;
use anyhow::Context;
use poz::noise::StaticKeypair;
use poz::pow::Secrets;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// 32 bytes from 64 hex digits; the decoded buffer is wiped after use
/// (these are secrets).
fn hex32(line: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let b = zeroize::Zeroizing::new(
        hex::decode(line.trim()).with_context(|| format!("{what}: not hex"))?,
    );
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| anyhow::anyhow!("{what}: not 32 bytes"))
}

/// A Noise static secret: 64 hex digits on the first line.
pub fn read_noise_key(path: &Path) -> anyhow::Result<StaticKeypair> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(StaticKeypair::from_secret(hex32(
        text.lines().next().unwrap_or_default(),
        &path.display().to_string(),
    )?))
}

/// Challenge secrets, 64 hex digits per line, the current one first.
pub fn read_secrets(path: &Path) -> anyhow::Result<Secrets> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let secrets = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| hex32(l, &format!("{} line {}", path.display(), i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if secrets.is_empty() {
        anyhow::bail!("{}: no challenge secret", path.display());
    }
    Ok(Secrets(secrets))
}

/// The shared-load settings of a gateway.
pub struct SharedLoad<'a> {
    pub redis_url: &'a str,
    pub gateway_id: &'a str,
    pub ttl: Duration,
    pub timeout: Duration,
}

/// The fleet's replay guard on `redis_url` (None when empty: this
/// gateway's own guard only).
pub fn shared_replay(redis_url: &str, timeout: Duration) -> anyhow::Result<Option<SharedReplay>> {
    if redis_url.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        SharedReplay::new(redis_url, timeout).context("redis_url for the replay guard")?,
    ))
}

/// Recomputes the difficulty four times a second from the fleet's load
/// (Redis) or this gateway's own, logging each change.
pub fn spawn_tuner(
    meter: Arc<LoadMeter>,
    shared: SharedLoad<'_>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut fleet = if shared.redis_url.is_empty() {
        None
    } else {
        let id = if shared.gateway_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        } else {
            shared.gateway_id.to_string()
        };
        Some(FleetLoad::new(
            shared.redis_url,
            id,
            shared.ttl,
            shared.timeout,
        )?)
    };
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = None;
        loop {
            tick.tick().await;
            let local = meter.local();
            let d = match fleet.as_mut() {
                Some(f) => {
                    let (l, t, source) = f.tick(&local, &meter.targets).await;
                    (meter.set_with(&l, &t), source)
                }
                None => (meter.set_from(&local), Source::Local),
            };
            if last != Some(d) {
                tracing::info!(difficulty = d.0, source = ?d.1, "proof-of-work difficulty");
                last = Some(d);
            }
        }
    }))
}

/// Drops the rate-limit state of quiet addresses every 10 s.
pub fn spawn_forgetter<A: Answer>(edge: Arc<Edge<A>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            edge.forget_quiet_addresses();
        }
    })
}
