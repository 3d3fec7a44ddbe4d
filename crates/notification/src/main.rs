//! `agora-notification`: the notification service as its own process.

use agora_kit::config::ProcessEnv;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agora_notification::serve_from_env(&ProcessEnv).await
}
