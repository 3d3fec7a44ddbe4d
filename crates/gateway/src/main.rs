//! `agora-gateway`: the public edge as its own process.

use agora_kit::config::ProcessEnv;

// The allocator of every Agora binary (see ARCHITECTURE.md, invariants).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agora_gateway::serve_from_env(&ProcessEnv).await
}
