//! Generates Rust from the contracts in /proto. protoc comes from protoc-bin-vendored, so no
//! system protoc is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build script compiled in one checkout is reused from a
    // shared target dir by another, and a baked-in path would point at the first.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "agora/user/v1/user.proto",
        "agora/post/v1/post.proto",
        "agora/graph/v1/graph.proto",
        "agora/feed/v1/feed.proto",
        "agora/notification/v1/notification.proto",
        "agora/events/v1/envelope.proto",
        "agora/events/v1/user.proto",
        "agora/events/v1/post.proto",
        "agora/events/v1/graph.proto",
    ];
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &paths,
        &[root],
    )?;
    Ok(())
}
