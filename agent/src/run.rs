//! `run`: starts the sources, the spool writer, the uplink and the heartbeat, and keeps them
//! running until SIGTERM or Ctrl-C (or, as a Windows service, until the SCM says stop).

use crate::config::AgentConfig;
use crate::heartbeat::Heartbeat;
use crate::identity::StatePaths;
use crate::sources::{SourceConfig, SourceContext};
use crate::spool::{self, Spool};
use crate::tls;
use crate::uplink::Uplink;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

/// Events waiting between the sources and the spool writer.
const SOURCE_QUEUE: usize = 16 * 1024;

pub async fn run(state_dir: &Path) -> anyhow::Result<()> {
    run_until(state_dir, shutdown_signal(), |_| {}).await
}

/// Runs the agent until `shutdown` completes. `on_started` is handed the sources' queue once
/// the spool writer is up, for event sources that live outside this module (the Windows
/// service's session-change notifications); it runs inside the runtime, so it may spawn tasks.
pub async fn run_until(
    state_dir: &Path,
    shutdown: impl std::future::Future<Output = ()>,
    on_started: impl FnOnce(crate::sources::EventTx),
) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(state_dir)?;
    let span = tracing::info_span!("agent", agent_id = %cfg.agent.agent_id);
    async move {
        let paths = StatePaths::new(state_dir);
        let spool = Arc::new(Spool::open(&paths.spool(), cfg.spool.max_bytes)?);
        let stats = spool.stats();
        tracing::info!(collector = %cfg.agent.collector, group = %cfg.agent.group, spooled = stats.depth, "agent starting");

        let (events_tx, events_rx) = crate::sources::channel(SOURCE_QUEUE);
        let (seq_tx, seq_rx) = watch::channel(stats.last_seq);
        let writer_spool = Arc::clone(&spool);
        let once = Arc::new(crate::one_report::OneReport::default());
        let writer_once = Arc::clone(&once);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || spool::run_writer(events_rx, writer_spool, seq_tx, writer_once))
            .context("starting the spool writer")?;

        let cx = SourceContext {
            hostname: crate::hostname(),
            state_dir: state_dir.to_path_buf(),
            events: events_tx.clone(),
            checkpoints: {
                let spool = Arc::clone(&spool);
                Arc::new(move |key: &str| spool.checkpoint(key))
            },
        };
        // Only the process source is essential: without it the agent would be blind to what
        // the policy most relies on. The others warn and the agent reports the rest.
        start_optional(&cfg.session, &cx);
        start_optional(&cfg.browsing, &cx);
        let presence = if !cfg.extension.enabled() {
            tracing::info!("extension source off, as configured");
            None
        } else {
            cfg.extension
                .build(&cx)
                .map_err(|err| tracing::warn!(%err, "extension source not started"))
                .ok()
        };
        start_optional(&cfg.usb, &cx);
        let mode = cfg.process.build(&cx)?;
        tracing::info!(process_source = mode.get().as_str(), "process source running");

        #[cfg(not(any(target_os = "linux", windows)))]
        let _ = presence;
        let channel = tls::channel(&cfg.agent.collector, tls::mtls_config(&paths)?)?;
        let (channel_tx, channel_rx) = watch::channel(channel);
        let uplink = Uplink { cfg: cfg.uplink.clone(), spool: Arc::clone(&spool), last_seq: seq_rx, channel: channel_rx };
        tokio::spawn(uplink.run().in_current_span());
        let heartbeat = Heartbeat {
            interval: cfg.uplink.heartbeat_interval,
            spool,
            paths,
            collector: cfg.agent.collector.clone(),
            process_source: mode,
            channel: channel_tx,
            once,
            #[cfg(any(target_os = "linux", windows))]
            browsers: Arc::new(crate::posture::BrowserWatch::new(
                presence,
                cfg.extension.missing_after,
                cfg.extension.chromium_ids.clone(),
            )),
        };
        tokio::spawn(heartbeat.run().in_current_span());

        on_started(events_tx.clone());
        shutdown.await;
        tracing::info!("stopping; undelivered events stay in the spool");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Starts a source the agent can run without, if enabled; a failure is a warning.
fn start_optional<C: SourceConfig<Handle = ()>>(config: &C, cx: &SourceContext) {
    if !config.enabled() {
        tracing::info!("{} source off, as configured", C::NAME);
    } else if let Err(err) = config.build(cx) {
        tracing::warn!(%err, "{} source not started", C::NAME);
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() {
    // Ctrl-C, for `run` from a console; the service has the SCM's stop instead.
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(unix)]
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
