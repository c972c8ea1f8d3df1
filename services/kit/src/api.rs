//! What the fleet's gRPC API is, read from the compiled `poz.v1`
//! descriptor: its services and their methods, and the services open to
//! every TLS caller. Allowlists check their keys against it; metrics and
//! spans name calls from it (never from a caller's text).

use std::collections::BTreeMap;

/// Services every caller that completed TLS may use: health checks and
/// reflection reveal nothing a caller could not learn from the .proto
/// files.
pub const OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The fleet's gRPC services (`poz.v1.Signer`, …) and the names of
/// their methods, read once from the compiled `poz.v1` descriptor.
pub fn fleet_api() -> &'static BTreeMap<String, Vec<String>> {
    static API: std::sync::LazyLock<BTreeMap<String, Vec<String>>> =
        std::sync::LazyLock::new(|| {
            use prost::Message;
            // The descriptor is compiled in by build.rs; it decodes, or
            // the build is broken and every key is refused as unknown.
            let set = prost_types::FileDescriptorSet::decode(poz_proto::v1::FILE_DESCRIPTOR_SET)
                .unwrap_or_default();
            let mut api = BTreeMap::new();
            for file in set.file {
                for svc in &file.service {
                    let name = format!("{}.{}", file.package(), svc.name());
                    let methods = svc.method.iter().map(|m| m.name().to_string()).collect();
                    api.insert(name, methods);
                }
            }
            api
        });
    &API
}

/// The methods of health and reflection, the services open to every
/// TLS caller.
const OPEN_METHODS: [(&str, &[&str]); 3] = [
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    (
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        &["ServerReflectionInfo"],
    ),
];

/// Whether `service` has `method`, when `service` is a service of the
/// POZ API or one of [`OPEN_SERVICES`]; `None` for any other service.
pub fn has_method(service: &str, method: &str) -> Option<bool> {
    if let Some((_, m)) = OPEN_METHODS.iter().find(|(s, _)| *s == service) {
        return Some(m.contains(&method));
    }
    fleet_api()
        .get(service)
        .map(|m| m.iter().any(|x| x == method))
}
