//! `agora`: the all-in-one CLI.
//!
//! - `agora dev` runs the gateway and every service in one process on embedded stores.
//! - `agora serve --target <service>` runs one service from `AGORA_*` settings.
//! - `agora migrate` applies the migrations of every configured store.
//! - `agora rebuild-timelines` recomputes the feed's derived timelines.

use std::path::PathBuf;

use agora_kit::config::ProcessEnv;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora social platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in this process on embedded stores (SQLite, in-process bus).
    Dev {
        /// Address of the public API.
        #[arg(long, env = "AGORA_DEV_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where data is kept across restarts.
        #[arg(long, env = "AGORA_DATA_DIR", default_value = ".agora")]
        data_dir: PathBuf,
    },
    /// Run one service (or the gateway) as configured by AGORA_* variables.
    Serve {
        #[arg(long, value_enum)]
        target: Target,
    },
    /// Apply database migrations for the configured stores.
    Migrate,
    /// Add a new token signing key to the user store; restart user-service replicas to sign
    /// with it (tokens signed with older keys stay valid until they expire).
    RotateSigningKey,
    /// Make a new Web Push (VAPID) key the one in force, in the notification store as configured
    /// (or `agora dev`'s with --data-dir). Running services use it within 30 s; subscriptions made
    /// with the old key end at their next push, and clients subscribe again with the new key.
    RotateVapidKey {
        /// The data directory of an `agora dev` (default: AGORA_NOTIFICATION_DATABASE_URL).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a new token signing key (a PEM PRIVATE KEY block) for AGORA_USER_SIGNING_KEY(_FILE),
    /// e.g. `agora generate-signing-key > key.pem` and then a Kubernetes Secret from that file.
    GenerateSigningKey,
    /// Recompute timelines (home, public, hashtag, account) from the post and graph services.
    /// The feed store and its hot set are derived views: this is how they are repaired.
    RebuildTimelines {
        /// Only these accounts' home timelines (default: every timeline).
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<i64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Gateway,
    User,
    Post,
    Graph,
    Feed,
    Notification,
}

// glibc's allocator kept hundreds of MiB of freed argon2 blocks resident; mimalloc returns them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev { listen, data_dir } => dev(&listen, data_dir).await,
        Command::Serve { target } => serve(target).await,
        Command::RotateSigningKey => {
            let _t = agora_kit::telemetry::init("rotate-signing-key", &ProcessEnv);
            let config = agora_user::Config::from_env(&ProcessEnv)?;
            let kid = agora_user::rotate_signing_key(&config).await?;
            println!("new signing key {kid}; restart the user service replicas to sign with it");
            Ok(())
        }
        Command::RotateVapidKey { data_dir } => {
            let _t = agora_kit::telemetry::init("rotate-vapid-key", &ProcessEnv);
            let mut config = agora_notification::Config::from_env(&ProcessEnv)?;
            if let Some(dir) = data_dir
                && std::env::var_os("AGORA_NOTIFICATION_DATABASE_URL").is_none()
            {
                config.database_url = format!("sqlite://{}/notification.db", dir.display());
            }
            let public = agora_notification::rotate_vapid_key(&config).await?;
            println!("new VAPID public key {public}; services use it within 30 s, clients subscribe again");
            Ok(())
        }
        Command::GenerateSigningKey => {
            print!("{}", agora_kit::jwt::SigningKey::generate()?.to_pem());
            Ok(())
        }
        Command::Migrate => {
            let _t = agora_kit::telemetry::init("migrate", &ProcessEnv);
            let redact = agora_kit::config::redact_url;
            let user = agora_user::Config::from_env(&ProcessEnv)?;
            agora_user::migrate(&user).await?;
            println!("user store migrated ({})", redact(&user.database_url));
            let post = agora_post::Config::from_env(&ProcessEnv)?;
            agora_post::migrate(&post).await?;
            println!("post store migrated ({})", redact(&post.database_url));
            let graph = agora_graph::Config::from_env(&ProcessEnv)?;
            agora_graph::migrate(&graph).await?;
            println!("graph store migrated ({})", redact(&graph.database_url));
            let feed = agora_feed::Config::from_env(&ProcessEnv)?;
            agora_feed::migrate(&feed).await?;
            println!("feed store migrated ({})", redact(&feed.database_url));
            let notification = agora_notification::Config::from_env(&ProcessEnv)?;
            agora_notification::migrate(&notification).await?;
            println!("notification store migrated ({})", redact(&notification.database_url));
            Ok(())
        }
        Command::RebuildTimelines { accounts } => {
            let _t = agora_kit::telemetry::init("rebuild-timelines", &ProcessEnv);
            let config = agora_feed::Config::from_env(&ProcessEnv)?;
            let only = if accounts.is_empty() { None } else { Some(accounts) };
            let report = agora_feed::rebuild(&config, only).await?;
            println!("timelines rebuilt: {report:?}");
            Ok(())
        }
    }
}

async fn serve(target: Target) -> anyhow::Result<()> {
    match target {
        Target::Gateway => agora_gateway::serve_from_env(&ProcessEnv).await,
        Target::User => agora_user::serve_from_env(&ProcessEnv).await,
        Target::Post => agora_post::serve_from_env(&ProcessEnv).await,
        Target::Graph => agora_graph::serve_from_env(&ProcessEnv).await,
        Target::Feed => agora_feed::serve_from_env(&ProcessEnv).await,
        Target::Notification => agora_notification::serve_from_env(&ProcessEnv).await,
    }
}

async fn dev(listen: &str, data_dir: PathBuf) -> anyhow::Result<()> {
    let _t = agora_kit::telemetry::init("dev", &ProcessEnv);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (choose another with --listen)"))?;
    let addr = listener.local_addr()?;
    let public = std::env::var("AGORA_PUBLIC_URL").unwrap_or_else(|_| format!("http://{addr}"));
    // Every AGORA_* variable set in the environment still applies (rate limits, TTLs, …).
    let mut builder =
        agora_testkit::PlatformBuilder::embedded().data_dir(&data_dir).gateway_listener(listener).public_url(&public);
    for (k, v) in std::env::vars()
        .filter(|(k, _)| k.starts_with("AGORA_") && !k.ends_with("_DATABASE_URL") && k != "AGORA_BUS_URL")
    {
        builder = builder.setting(&k, &v);
    }
    let platform = builder.start().await?;
    let admin =
        tokio::net::TcpListener::bind(std::env::var("AGORA_DEV_ADMIN_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into()))
            .await?;
    let admin_addr = admin.local_addr()?;
    let health = platform.health.clone();
    let combined = agora_kit::health::Health::new();
    for (i, h) in health.into_iter().enumerate() {
        combined.add_check(&format!("component-{i}"), move || {
            let h = h.clone();
            async move { h.ready().await }
        });
    }
    tokio::spawn(agora_kit::health::serve_admin(admin, combined, platform.shutdown.clone()));
    println!("Agora is running at {public}  (data in {}, metrics at http://{admin_addr}/metrics)", data_dir.display());
    println!("Press Ctrl-C to stop.");
    agora_kit::shutdown::on_signal(platform.shutdown.clone()).await;
    platform.stop().await?;
    println!("Agora stopped.");
    Ok(())
}
