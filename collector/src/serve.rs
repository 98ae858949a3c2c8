//! `serve`: the gRPC ingest (mTLS) and the HTTP endpoint, with their background tasks.

use crate::admission::Admission;
use crate::committer::{CommitLimits, Committer};
use crate::config::CollectorConfig;
use crate::enroll::EnrollmentService;
use crate::identity::Revocations;
use crate::ingest::TelemetryService;
use crate::metrics::{self, Metrics};
use crate::pki::{CertificateAuthority, PkiPaths};
use crate::state::Shared;
use crate::store::{self, Store};
use crate::{alerts, housekeeping};
use anyhow::Context;
use arc_swap::ArcSwap;
use invigilator_policy::Policy;
use invigilator_proto::MAX_MESSAGE_BYTES;
use invigilator_proto::v1::{
    enrollment_server::EnrollmentServer, telemetry_server::TelemetryServer,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// What [`store::Store::system`] asks for. Minted only here and handed to the services `run`
/// starts, so the console and the CLI, which are never given one, cannot reach the system's
/// reads (see `store::access`).
#[derive(Clone)]
pub struct SystemKey(());

impl SystemKey {
    fn mint() -> Self {
        Self(())
    }
}

pub struct ServeOptions {
    pub grpc_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

pub async fn run(data_dir: &Path, opts: ServeOptions) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut config = CollectorConfig::load(data_dir)?;
    if let Some(a) = opts.grpc_listen {
        config.grpc.listen = a;
    }
    if let Some(a) = opts.http_listen {
        config.http.listen = a;
    }
    let paths = PkiPaths::new(data_dir);
    let ca = CertificateAuthority::load(&paths).context("loading the certificate authority")?;
    let policy = Policy::load_in(data_dir)?;
    tracing::info!(version = %policy.version, "policy loaded");
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let (d1, d2) = (data_dir.to_path_buf(), data_dir.to_path_buf());
    crate::reload::spawn(
        vec![data_dir.to_path_buf()],
        move |p| p.inputs_in(&d1),
        Box::new(move || Ok(Policy::load_in(&d2)?)),
        Arc::clone(&policy),
    )?;
    // New lists land as files; the reload above picks them up like a policy edit.
    tokio::spawn(invigilator_lists::refresh::run(
        data_dir.to_path_buf(),
        config.lists.clone(),
    ));

    let store = Store::open(data_dir, &config.store)?;
    // Collectors sharing a database must share its CA, or each refuses the others' agents.
    let bound = store.admin(|a| store::ca_binding::bind(a, &ca.fingerprint))?;
    if bound != ca.fingerprint {
        anyhow::bail!(
            "this collector's CA (fingerprint {}) is not the one the database's agents were \
             issued by ({bound}): a collector sharing a database must be made with \
             `init --join <the data directory of one already on it>`",
            ca.fingerprint
        );
    }
    let key = SystemKey::mint();
    let leader = store
        .leadership(&key)
        .context("starting the leadership check")?;
    let approvers = &config.console.reveal_approvers;
    if let Some(change) = store.admin(|a| store::approvers::sync(a, approvers))? {
        tracing::warn!("{change}");
    }
    let revocations = Revocations::default();
    revocations.replace(store.admin(store::agents::revoked_ids)?);
    // Pending commits need no draining on shutdown: nothing unacknowledged is lost, agents resend it.
    let metrics = Arc::new(Metrics::new());
    // Read before anything listens: a bad token file stops the start with its reason.
    let metrics_token = config
        .metrics
        .token_file
        .as_ref()
        .map(|f| metrics::http::Token::load(&data_dir.join(f)))
        .transpose()?;
    let (committer, _committer_thread) = Committer::spawn(
        store.clone(),
        key.clone(),
        Arc::clone(&policy),
        CommitLimits {
            events: config.ingest.max_commit_events,
            bytes: config.ingest.max_commit_mib * 1024 * 1024,
        },
        Arc::clone(&metrics),
        config.store.lanes(),
    )?;

    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(paths.server_cert())?,
            read(paths.server_key())?,
        ))
        .client_ca_root(Certificate::from_pem(ca.cert_pem.as_bytes()))
        // Enrolment happens before the agent has a certificate; every other call checks one.
        .client_auth_optional(true)
        .timeout(config.grpc.handshake_timeout);

    let shared = Arc::new(Shared {
        config: config.clone(),
        ca,
        store: store.clone(),
        key: key.clone(),
        committer,
        admission: Admission::new(&config.ingest, &config.quotas),
        policy,
        revocations,
        leader: leader.clone(),
        health: Mutex::new(Default::default()),
        metrics: Arc::clone(&metrics),
    });

    tokio::spawn(alerts::watch_silent_agents(Arc::clone(&shared)));
    tokio::spawn(alerts::watch_unattended_sessions(Arc::clone(&shared)));
    tokio::spawn(housekeeping::flush_health(
        Arc::clone(&shared),
        config.ingest.health_flush_interval,
    ));
    // The deletes go in short chunks beside ingest's writes.
    tokio::spawn(housekeeping::retention(
        store.clone(),
        config.retention.clone(),
        leader.clone(),
    ));
    tokio::spawn(housekeeping::refresh_revocations(
        Arc::clone(&shared),
        Duration::from_secs(2),
    ));
    tokio::spawn(crate::reports::run_weekly(
        store.clone(),
        config.reports.clone(),
        Arc::clone(&shared.policy),
        leader.clone(),
    ));
    tokio::spawn(crate::notify::run(
        store.clone(),
        key.clone(),
        config.notify.clone(),
        leader.clone(),
    ));
    tokio::spawn(metrics::fleet::run(Arc::clone(&shared)));
    tokio::spawn(crate::peers::run(
        Arc::clone(&shared),
        data_dir.to_path_buf(),
    ));
    for hook in &config.webhooks {
        let dest = crate::handoff::Webhook::load(hook.clone(), data_dir)?;
        tokio::spawn(crate::handoff::run(
            store.clone(),
            key.clone(),
            dest,
            leader.clone(),
        ));
    }
    tokio::spawn(crate::roster::drop::run(
        store.clone(),
        data_dir.to_owned(),
        config.roster.clone(),
    ));
    for receiver in &config.syslog {
        let dest = crate::handoff::Syslog::load(receiver.clone(), data_dir)?;
        tokio::spawn(crate::handoff::run(
            store.clone(),
            key.clone(),
            dest,
            leader.clone(),
        ));
    }
    let scrape = Arc::new(metrics::http::Scrape {
        metrics: Arc::clone(&metrics),
        admission: Arc::clone(&shared.admission),
        committer: shared.committer.clone(),
        data_dir: data_dir.to_path_buf(),
    });
    let metrics_addr = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let bound = listener.local_addr()?;
            let app = metrics::http::routes(Arc::clone(&scrape), None);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
            Some(bound)
        }
        None => None,
    };

    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = http.local_addr()?;
    if let Some(sso) = &config.console.sso {
        // A bad CA or secret file stops the start with its reason.
        crate::console::sso::Provider::new(sso.clone(), data_dir)
            .and_then(|p| p.secret())
            .context("console.sso")?;
    }
    // The console is given the store, never the key.
    let console = crate::console::Console::new(
        store.clone(),
        config.console.clone(),
        Arc::clone(&shared.policy),
    );
    if let Some(provider) = console.sso_provider() {
        // Discovery now, so the first sign-in does not wait for it; an unreachable provider
        // only disables sign-on until it answers (local accounts keep working).
        tokio::task::spawn_blocking(move || match provider.check() {
            Ok(()) => tracing::info!(issuer = %provider.cfg.issuer, "single sign-on ready"),
            Err(e) => tracing::error!(error = %e, "single sign-on cannot reach its provider yet"),
        });
    }
    let mut app = crate::console::router(console).route_layer(
        axum::middleware::from_fn_with_state(Arc::clone(&metrics), metrics::http::track),
    );
    if metrics_token.is_some() {
        app = app.merge(metrics::http::routes(scrape, metrics_token));
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let extension_addr = match config.extension.listen {
        Some(addr) => {
            let tls = crate::extension::server_config(
                &read(paths.server_cert())?,
                &read(paths.server_key())?,
                shared.ca.cert_pem.as_bytes(),
            )?;
            Some(
                crate::extension::serve(
                    Arc::clone(&shared),
                    addr,
                    tls,
                    config.grpc.handshake_timeout,
                )
                .await?,
            )
        }
        None => None,
    };

    let grpc = tokio::net::TcpListener::bind(config.grpc.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.grpc.listen))?;
    let grpc_addr = grpc.local_addr()?;
    tracing::info!(grpc = %grpc_addr, http = %http_addr, metrics = ?metrics_addr, extension = ?extension_addr, data_dir = %data_dir.display(), "collector serving");
    // Tests and scripts wait for this line.
    let metrics_field = metrics_addr
        .map(|a| format!(" metrics={a}"))
        .unwrap_or_default();
    let extension_field = extension_addr
        .map(|a| format!(" extension={a}"))
        .unwrap_or_default();
    eprintln!(
        "invigilator-collector listening: grpc={grpc_addr} http={http_addr}{metrics_field}{extension_field}"
    );

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .add_service(
            EnrollmentServer::new(EnrollmentService::new(Arc::clone(&shared)))
                .max_decoding_message_size(64 * 1024),
        )
        .add_service(
            TelemetryServer::new(TelemetryService::new(Arc::clone(&shared)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await
        .context("gRPC server failed")?;

    tracing::info!("collector stopped");
    Ok(())
}

/// Every connected agent holds a socket: take the whole allowance the system grants.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, "could not raise the open-files limit");
            }
        }
        _ => {}
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
