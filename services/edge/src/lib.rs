//! The POZ edge (`poz-edge`): what every internet-facing POZ port does
//! whatever it answers. The query gateway (7074, 7075), the submit
//! gateway (7076) and `pozd` are built from it:
//!
//! - [`Edge`]: accepting connections under a connection discipline
//!   ([`Discipline`]), reading one request each, admitting it through the
//!   proof-of-work gate, and handing it to an [`Answer`];
//! - [`LoadMeter`]: the load that sets the proof-of-work difficulty, and
//!   [`LoadShare`]: whose load that is ([`LocalLoad`], this process's;
//!   [`RedisLoad`], the fleet's through Redis), with the fleet's spent
//!   proofs ([`SharedReplay`]);
//! - [`Guard`]: what the edges of one process share (gate, load meter,
//!   the tuner that follows the load), and [`run`], serving one edge on
//!   its listeners until shutdown;
//! - [`EdgeConfig`]: every setting of the above, the same for both
//!   gateways and `pozd` (docs/OPERATIONS.md, "The edge");
//! - [`read_noise_key`] and [`read_secrets`]: the key files.
#![forbid(unsafe_code)]

pub mod config;
pub mod edge;
pub mod fleet;
pub mod guard;
pub mod keys;
pub mod load;
pub mod metrics;
pub mod share;

pub use config::{EdgeConfig, GatewayArgs};
pub use edge::{Answer, Counters, Discipline, Edge};
pub use fleet::{RedisLoad, SharedReplay, Source, Spend};
pub use guard::{run, spawn_forgetter, spawn_tuner, Guard};
pub use keys::{read_noise_key, read_secrets};
pub use load::LoadMeter;
pub use share::{LoadShare, LocalLoad};

/// Why an edge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A key or secret file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A key or secret line is not 64 hex digits (`what` names the file
    /// and line; the line itself is never shown: it is a secret).
    #[error("{what}: not 64 hex digits")]
    NotKey { what: String },
    /// The challenge secrets file holds no secret.
    #[error("{0}: no challenge secret")]
    NoSecret(std::path::PathBuf),
    /// Neither TLS nor `insecure` (the kit's message).
    #[error("{0}")]
    NoTls(String),
    /// A required file setting is not set.
    #[error("{0} is required")]
    Missing(&'static str),
    /// `redis_url` is not one the Redis client accepts.
    #[error("redis_url: {0}")]
    Redis(#[from] redis::RedisError),
    /// A listen address could not be bound (or read back).
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// A peer's address (`setting`) is not one a channel can be built
    /// to (or its TLS files do not load).
    #[error("{setting}: {source}")]
    Peer {
        setting: &'static str,
        source: poz_kit::channel::ChannelError,
    },
}

/// Binds a listen address (`IP:port`).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, EdgeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| EdgeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The address a listener is bound to (`setting` names it in the error).
pub fn local_addr(
    listener: &tokio::net::TcpListener,
    setting: &str,
) -> Result<std::net::SocketAddr, EdgeError> {
    listener.local_addr().map_err(|source| EdgeError::Bind {
        addr: setting.to_string(),
        source,
    })
}
