//! The floor: the cheapest useful request this machine serves, measured by the same load
//! generator in the same run as the real workloads. An axum handler reads the 20 newest ids of a
//! sorted set from Redis and answers them as JSON. Workloads are reported as a fraction of it,
//! which moves much less from run to run on a shared machine than absolute throughput does.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use fred::interfaces::ClientLike as _;

const KEY: &str = "agora-bench:floor";
const IDS: usize = 20;

/// Seeds the sorted set, then serves `GET /floor` on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, redis_url: &str) -> anyhow::Result<()> {
    let config = fred::types::config::Config::from_url(redis_url).context("redis url")?;
    let client = fred::types::Builder::from_config(config).build()?;
    client.init().await.context("connecting to redis")?;
    let mut args: Vec<String> = vec![KEY.to_owned()];
    for i in 0..200u64 {
        let id = 114_000_000_000_000_000u64 + i * 4_096;
        args.push(i.to_string());
        args.push(id.to_string());
    }
    let _: i64 = client.custom(fred::cmd!("ZADD"), args).await.context("seeding the floor set")?;
    let app = axum::Router::new().route("/floor", get(floor)).with_state(client);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("floor: serving http://{}/floor", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn floor(State(client): State<fred::clients::Client>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let ids: Result<Vec<String>, _> =
        client.custom(fred::cmd!("ZREVRANGE"), vec![KEY.to_owned(), "0".into(), (IDS - 1).to_string()]).await;
    match ids {
        Ok(ids) => axum::Json(ids).into_response(),
        Err(e) => (http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
