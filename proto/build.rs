//! Generates the poz.v1 messages and services with a vendored protoc, so
//! a fresh machine needs nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Build scripts are single-threaded; this only tells prost-build
    // where the vendored protoc is.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("poz_v1_descriptor.bin"))
        .compile_protos(
            &[
                "poz/v1/common.proto",
                "poz/v1/store.proto",
                "poz/v1/verifier.proto",
                "poz/v1/signer.proto",
                "poz/v1/provider.proto",
            ],
            &["."],
        )?;
    Ok(())
}
