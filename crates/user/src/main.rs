//! `agora-user`: the user service as its own process.

use agora_kit::config::ProcessEnv;

// glibc's allocator kept hundreds of MiB of freed argon2 blocks resident; mimalloc returns them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agora_user::serve_from_env(&ProcessEnv).await
}
