//! `agora-gateway`: the public edge as its own process.

use agora_kit::config::ProcessEnv;

// glibc's allocator kept hundreds of MiB of freed argon2 blocks resident; mimalloc returns them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("gateway", &ProcessEnv);
    let config = agora_gateway::Config::from_env(&ProcessEnv)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = agora_kit::Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    agora_gateway::run(config, listener, shutdown).await
}
