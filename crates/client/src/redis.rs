//! The one way an Agora process opens a Redis client (the feed's hot set, the gateway's rate
//! limiter, the epochs of [`crate::epoch`]): bounded timeouts, reconnection with back-off and
//! Nagle off.

use std::time::Duration;

pub use fred::clients::Client;

fn builder(url: &str, command_timeout: Duration) -> Result<fred::types::Builder, fred::error::Error> {
    let config = fred::types::config::Config::from_url(url)?;
    let mut builder = fred::types::Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
            c.internal_command_timeout = Duration::from_secs(3);
            // Commands share one connection; with Nagle on, a command written while the
            // previous one is unacknowledged waits for that ACK.
            c.tcp.nodelay = Some(true);
        })
        .set_policy(fred::types::config::ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        });
    Ok(builder)
}

/// A connected client for `url` (`redis://host:port[/db]`); commands time out after
/// `command_timeout`.
pub async fn connect(url: &str, command_timeout: Duration) -> Result<Client, fred::error::Error> {
    use fred::interfaces::ClientLike as _;
    let client = builder(url, command_timeout)?.build()?;
    client.init().await?;
    Ok(client)
}

/// A connected pub/sub subscriber for `url`, which subscribes again to its channels after a
/// reconnection.
pub async fn subscriber(url: &str) -> Result<fred::clients::SubscriberClient, fred::error::Error> {
    use fred::interfaces::ClientLike as _;
    let mut b = builder(url, Duration::from_secs(3))?;
    // The client hands messages on through a broadcast channel; its default of 32 drops a burst
    // (one status fanned out to many streams of this process) before anyone reads it.
    b.with_performance_config(|p| p.broadcast_channel_capacity = 4096);
    let client = b.build_subscriber_client()?;
    client.init().await?;
    client.manage_subscriptions();
    Ok(client)
}
