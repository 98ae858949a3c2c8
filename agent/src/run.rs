//! `run`: starts the sources, the spool writer, the uplink and the heartbeat, and keeps them
//! running until SIGTERM or Ctrl-C (or, as a Windows service, until the SCM says stop).

use crate::config::AgentConfig;
use crate::heartbeat::Heartbeat;
use crate::identity::StatePaths;
use crate::sources::process::{self, ProcessSourceConfig};
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
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || spool::run_writer(events_rx, writer_spool, seq_tx))
            .context("starting the spool writer")?;

        #[cfg(unix)]
        if cfg.session.enabled {
            use crate::sources::session::{self, SessionSourceConfig};
            let session_cfg = SessionSourceConfig {
                hostname: crate::hostname(),
                bus_address: cfg.session.bus_address.clone(),
            };
            tokio::spawn(session::run(session_cfg, events_tx.clone()).in_current_span());
        }

        if cfg.browsing.enabled {
            let b = &cfg.browsing;
            let source = crate::sources::browsing::BrowsingSourceConfig {
                hostname: crate::hostname(),
                scan_homes: b.scan_homes,
                extra_roots: b.extra_roots.clone(),
                work_dir: state_dir.join("browsing"),
                debounce: b.debounce,
                poll_interval: b.poll_interval,
                rediscover_interval: b.rediscover_interval,
                backfill: b.backfill,
                limits: crate::sources::browsing::snapshot::ReadLimits {
                    max_bytes: b.max_history_bytes,
                    deadline: b.read_deadline,
                },
                ..Default::default()
            };
            let cursors = Arc::clone(&spool);
            crate::sources::browsing::spawn(source, Box::new(move |key| cursors.checkpoint(key)), events_tx.clone())
                .context("starting the browsing source")?;
        }

        // On Windows, session changes reach the service only (`platform::windows::service`);
        // `run` from a prompt has none.

        let mode = process::spawn(
            ProcessSourceConfig {
                hostname: crate::hostname(),
                poll_interval: cfg.process.poll_interval,
                force_poll: cfg.process.force_poll,
                ebpf: cfg.process.ebpf,
                ring_buffer_bytes: cfg.process.ring_buffer_bytes,
                btf_path: cfg.process.btf_path.clone(),
                lockdown_path: cfg.process.lockdown_path.clone(),
            },
            events_tx.clone(),
        )
        .context("starting the process source")?;
        let process_source = mode.get().as_str();
        tracing::info!(process_source, "process source running");

        // USB monitoring failing must not stop the agent reporting everything else.
        #[cfg(target_os = "linux")]
        if cfg.usb.enabled {
            let usb = crate::sources::usb::UsbSourceConfig {
                hostname: crate::hostname(),
                sysfs_root: cfg.usb.sysfs_root.clone(),
            };
            if let Err(err) = crate::sources::usb::spawn(usb, events_tx.clone()) {
                tracing::warn!(%err, "usb source not started");
            }
        }

        #[cfg(windows)]
        if cfg.usb.enabled
            && let Err(err) = crate::sources::usb_pnp::spawn(crate::hostname(), events_tx.clone())
        {
            tracing::warn!(%err, "usb source not started");
        }

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
