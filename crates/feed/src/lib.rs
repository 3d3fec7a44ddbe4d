//! agora-feed (under construction).

use agora_kit::config::Env;

pub async fn serve_from_env(_env: &dyn Env) -> anyhow::Result<()> {
    anyhow::bail!("the feed service is not built yet")
}
