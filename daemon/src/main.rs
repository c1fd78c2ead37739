//! `peerixd`: the daemon binary.

use std::path::PathBuf;

/// mimalloc, or the system allocator with the `system-allocator` feature; why, in
/// `peerixd::alloc` (one definition, also installed by the bench's raw baseline).
#[global_allocator]
static GLOBAL: peerixd::alloc::Allocator = peerixd::alloc::ALLOCATOR;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use peerixd::config::{self, FlagOverrides};

/// A daemon that makes this machine a peer in Peerix WebRTC rooms, driven by local programs over a
/// Unix socket (see `peerix --help`).
#[derive(Debug, Parser)]
#[command(name = "peerixd", version, about)]
struct Args {
    /// Configuration file (layered over /etc/peerix/peerixd.toml and ~/.config/peerix/peerixd.toml).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// IPC socket path [default: $XDG_RUNTIME_DIR/peerix/peerixd.sock or /run/peerix/peerixd.sock].
    #[arg(long, env = "PEERIX_SOCKET")]
    socket: Option<PathBuf>,
    /// Log filter, e.g. `info` or `peerixd=debug`.
    #[arg(long)]
    log: Option<String>,
    /// Default signaling driver: local (same host, no server), nats, memory.
    #[arg(long)]
    driver: Option<String>,
    /// Rendezvous directory of the local driver (daemons sharing it find each other).
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// NATS server URL (repeatable); configures the `nats` driver.
    #[arg(long = "nats")]
    nats: Vec<String>,
    /// Join this room at start (repeatable).
    #[arg(long = "join")]
    join: Vec<String>,
    /// Ignore /etc/peerix and the user config dir.
    #[arg(long)]
    no_system_config: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check a configuration file, name every bad key (with its line), and exit: 0 when it is
    /// good, 2 when it is not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    peerixd::alloc::configure();
    let args = Args::parse();
    let flags = FlagOverrides {
        socket: args.socket.clone(),
        log: args.log.clone(),
        default_driver: args.driver.clone(),
        local_dir: args.local_dir.clone(),
        nats: args.nats.clone(),
        join: args.join.clone(),
    };
    if let Some(file) = &args.check_config {
        let problems = peerixd::check_config::check(file, args.no_system_config);
        for p in &problems {
            eprintln!("{p}");
        }
        if problems.is_empty() {
            eprintln!("{}: OK", file.display());
            return Ok(());
        }
        std::process::exit(2);
    }
    let cfg = config::load(args.config.as_deref(), &flags, args.no_system_config)
        .context("loading configuration")?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&cfg).context("rendering configuration")?
        );
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log)
        .with_context(|| format!("invalid log filter {:?}", cfg.log))?;
    // SIGHUP may change the filter.
    let (filter, log_filter) = tracing_subscriber::reload::Layer::new(filter);
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(filter)
            .with(peerixd::logging::ExpectedStackWarnings)
            .with(
                // Colours only for a terminal: journald and log files get plain text.
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    // Before anything listens: a corrupt key file must stop the daemon, not hand out new ids.
    let (identity, identity_source, _key_lock) =
        peerixd::identity_store::load_or_create(&cfg.service).context("loading the identity")?;
    let cfg = Arc::new(cfg);
    // The reactor threads and the actor thread's runtime (below) each wait for a boundary of
    // the timer grid (up to 64 ms); started now, the reactors wait for the same boundary,
    // and `run::start` finds them running.
    if !cfg.webrtc.inline_drivers {
        peerix_rtc::start_reactors_in_background(cfg.webrtc.reactor_threads);
    }
    // With `webrtc.inline_drivers` the connections are driven on this thread, so its timer
    // wheel is aligned to the wake-up grid as the reactor threads' are (`peerix_rtc::
    // aligned_runtime`); otherwise an idle daemon would wake twice per grid sleep.
    let system = actix::System::with_tokio_rt(|| {
        peerix_rtc::aligned_runtime().expect("building the actor thread's tokio runtime")
    });
    system.block_on(async move {
        let mut running = peerixd::run::start(cfg.clone(), identity, true)
            .await
            .with_context(|| format!("starting peerixd on {}", cfg.socket_path().display()))?;
        #[cfg(unix)]
        {
            use actix::Actor as _;
            let listen = if running.activated {
                format!("{} (from systemd)", running.socket.display())
            } else {
                running.socket.display().to_string()
            };
            peerixd::actors::service::ServiceNotifier::new(
                running.daemon.clone(),
                peerixd::actors::service::StartupInfo {
                    listen,
                    identity: identity_source.to_string(),
                    configured_rooms: cfg.rooms.iter().map(|r| r.id.clone()).collect(),
                },
            )
            .start();
        }
        #[cfg(not(unix))]
        tracing::info!(id = %running.id, socket = %running.socket.display(), identity = %identity_source, "peerixd ready");
        let mut current = cfg.clone();
        while let Signal::Reload = wait_for_signal().await {
            #[cfg(unix)]
            peerixd::actors::service::notify_reloading();
            current = peerixd::reload::on_sighup(
                current,
                || config::load(args.config.as_deref(), &flags, args.no_system_config),
                &running.daemon,
                |log| {
                    let f = tracing_subscriber::EnvFilter::try_new(log).map_err(|e| e.to_string())?;
                    log_filter.reload(f).map_err(|e| e.to_string())
                },
                &mut running.metrics,
            )
            .await;
            #[cfg(unix)]
            peerixd::actors::service::notify_reloaded();
        }
        tracing::info!("shutting down");
        #[cfg(unix)]
        peerixd::actors::service::notify_stopping();
        peerixd::run::shutdown(&running).await;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP: read the configuration again.
    Reload,
}

#[cfg(unix)]
async fn wait_for_signal() -> Signal {
    use std::sync::OnceLock;
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::Mutex;
    type Streams = (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    );
    // Registered once, on the first call, and kept: a SIGHUP between two calls waits in its
    // stream instead of killing the process with the default action.
    static STREAMS: OnceLock<Option<Mutex<Streams>>> = OnceLock::new();
    let streams = STREAMS.get_or_init(|| {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => Some(Mutex::new((t, i, h))),
            _ => None,
        }
    });
    let Some(streams) = streams else {
        // Without signal handlers we can only run until killed.
        return std::future::pending().await;
    };
    let mut s = streams.lock().await;
    let (term, int, hup) = &mut *s;
    tokio::select! {
        _ = term.recv() => Signal::Stop,
        _ = int.recv() => Signal::Stop,
        _ = hup.recv() => Signal::Reload,
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Signal {
    let _ = tokio::signal::ctrl_c().await;
    Signal::Stop
}
