//! The POZ fleet's internal gRPC API, generated from `proto/poz/v1/*.proto`.
#![forbid(unsafe_code)]
#![allow(clippy::all)] // generated code

/// Package `poz.v1`.
pub mod v1 {
    tonic::include_proto!("poz.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("poz_v1_descriptor");
}
