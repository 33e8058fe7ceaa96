//! The `crius` binary: arguments, config, wiring.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crius::config::{Config, DEFAULT_CONFIG};
use crius::network::cni::{exec::RealExec, Cni};
use crius::status::RuntimeStatus;

/// crius: a Kubernetes CRI v1 container runtime.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file; the embedded defaults when absent.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Check the host and the handlers; exits non-zero when the default handler is unusable.
    Check,
    /// Images, on the store directly (the daemon must not be running on the same root).
    Image {
        #[command(subcommand)]
        what: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Pull an image, with a progress bar per layer on a terminal.
    Pull {
        /// Image reference (`busybox`, `registry:5000/name:tag`, `name@sha256:…`).
        reference: String,
        /// Credentials as `user:password`.
        #[arg(long)]
        creds: Option<String>,
    },
    /// Load a `docker save` or OCI image layout archive (optionally gzip-compressed).
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// List images.
    List,
    /// Remove an image by reference, id or id prefix.
    Rm {
        /// What to remove.
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the embedded default configuration.
    Default,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default_config()?,
    })
}

fn shim_search() -> Vec<PathBuf> {
    let exe = std::env::current_exe().ok();
    let path = std::env::var("PATH").ok();
    crius_handlers::shim_search_path(exe.as_deref(), path.as_deref())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            what: ConfigCommand::Default,
        }) => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Some(Command::Check) => {
            let cfg = load(&cli)?;
            let cni = Arc::new(Cni::new(cfg.cni_settings(), Arc::new(RealExec)));
            let status = RuntimeStatus::new(cfg.clone(), shim_search(), cni);
            let mut default_ok = false;
            for c in status.handler_checks() {
                match (&c.shim, &c.error) {
                    (Some(p), _) => println!("handler {:<10} ok       {}", c.name, p.display()),
                    (None, e) => println!(
                        "handler {:<10} MISSING  {}",
                        c.name,
                        e.as_deref().unwrap_or("")
                    ),
                }
                if c.name == cfg.default_handler && c.shim.is_some() {
                    default_ok = true;
                }
            }
            for cond in status.report().conditions {
                println!(
                    "{:<13} {} {} {}",
                    cond.kind, cond.ok, cond.reason, cond.message
                );
            }
            anyhow::ensure!(
                default_ok,
                "default handler {:?} has no shim binary",
                cfg.default_handler
            );
            Ok(())
        }
        Some(Command::Image { what }) => {
            let cfg = load(&cli)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(image_command(cfg, what))
        }
        None => run(cli),
    }
}

async fn open_images(cfg: &Config) -> anyhow::Result<crius::image::ImageService> {
    let store = crius::store::Store::open(&cfg.store_path())?;
    crius::image::ImageService::open(&cfg.root, store, cfg.registry.clone())
        .await
        .context("opening the image store")
}

async fn image_command(cfg: Config, what: &ImageCommand) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // Warnings (a failed mirror, a neutralized layer entry) matter here too.
    let filter = std::env::var("CRIUS_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("CRIUS_LOG {filter:?}"))?,
        )
        .with_writer(std::io::stderr)
        .try_init();
    let images = open_images(&cfg).await?;
    match what {
        ImageCommand::Pull { reference, creds } => {
            let auth = creds.as_ref().map(|c| {
                let (u, p) = c.split_once(':').unwrap_or((c, ""));
                crius::image::registry::AuthConfig {
                    username: u.into(),
                    password: p.into(),
                    ..Default::default()
                }
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let terminal = std::io::stdout().is_terminal();
            let show = tokio::spawn(async move {
                let mut r = crius::image::progress::Renderer::new(std::io::stdout(), terminal);
                while let Some(p) = rx.recv().await {
                    let _ = r.show(&p);
                }
            });
            let res = images.pull(reference, auth.as_ref(), Some(tx)).await;
            let _ = show.await;
            let rec = res?;
            println!("pulled {reference} as {}", rec.id);
        }
        ImageCommand::Import { file } => {
            for rec in images.import(file).await? {
                println!("imported {} {}", rec.id, rec.repo_tags.join(" "));
            }
        }
        ImageCommand::List => {
            for rec in images.all()? {
                let names = if rec.repo_tags.is_empty() {
                    rec.repo_digests.join(" ")
                } else {
                    rec.repo_tags.join(" ")
                };
                println!("{}  {:>12}  {names}", &rec.id.hex()[..12], rec.size);
            }
        }
        ImageCommand::Rm { image } => match images.remove(image).await? {
            Some(rec) => println!("removed {}", rec.id),
            None => println!("no image {image:?}; nothing to remove"),
        },
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load(&cli)?;
    // CRIUS_LOG overrides the config's log_level (handy for a one-off debug run).
    let filter = std::env::var("CRIUS_LOG").unwrap_or_else(|_| cfg.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("log filter {filter:?}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        for dir in [&cfg.root, &cfg.state] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let socket = cfg.socket_path();
        let store = crius::store::Store::open(&cfg.store_path())?;
        let images = Arc::new(
            crius::image::ImageService::open(&cfg.root, store.clone(), cfg.registry.clone())
                .await
                .context("opening the image store")?,
        );
        let search = shim_search();
        let registry = crius_handlers::Registry::new(&cfg.handlers, &cfg.default_handler, &search);
        let ttrpc_path = PathBuf::from(format!("{}.ttrpc", socket.display()));
        let (events_server, events) = runtime_v2_api::serve_events(&ttrpc_path)
            .await
            .context("serving shim events")?;
        let cni = Arc::new(Cni::new(cfg.cni_settings(), Arc::new(RealExec)));
        cni.watch();
        let pods = crius::pods::Pods::open(
            store,
            images.clone(),
            registry,
            crius::pods::PodsConfig {
                dirs: crius::pods::Dirs::new(&cfg.root, &cfg.state),
                env: crius_handlers::ShimEnv {
                    namespace: "k8s.io".into(),
                    address: socket.display().to_string(),
                    ttrpc_address: ttrpc_path.display().to_string(),
                    publish_binary: std::env::current_exe().unwrap_or_else(|_| "crius".into()),
                },
                host: crius::host::detect(),
                sandbox_image: cfg.sandbox_image.clone(),
                cni: cni.clone(),
            },
        )?;
        tokio::spawn(crius::pods::events::run(pods.clone(), events));
        pods.recover().await;
        let streaming_cfg = cfg.streaming.clone();
        let status = Arc::new(RuntimeStatus::new(cfg, search, cni));
        for c in status.handler_checks() {
            if let Some(e) = c.error {
                tracing::warn!(handler = %c.name, "handler unusable: {e}");
            }
        }
        let stream_cfg = streaming_cfg
            .config()
            .map_err(anyhow::Error::msg)
            .context("[streaming]")?;
        let stream_listener = tokio::net::TcpListener::bind(stream_cfg.listen)
            .await
            .with_context(|| format!("binding the streaming server to {}", stream_cfg.listen))?;
        let stream_addr = stream_listener
            .local_addr()
            .context("streaming server address")?;
        let streaming = Arc::new(crius::streaming::Streaming::new(
            &stream_cfg,
            stream_addr,
            pods.clone(),
        ));
        let stream_tls = match &stream_cfg.tls {
            Some((cert, key)) => {
                Some(crius::streaming::tls::acceptor(cert, key).context("[streaming] TLS")?)
            }
            None => None,
        };
        tracing::info!(address = %stream_addr, tls = stream_tls.is_some(), "streaming server");
        tokio::spawn(crius::streaming::server::serve(
            stream_listener,
            stream_tls,
            streaming.clone(),
            std::future::pending(),
        ));
        crius::server::serve::serve(&socket, status, images, pods, streaming, shutdown_signal())
            .await
            .context("CRI server")?;
        events_server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon still serves; it just cannot shut down cleanly.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
