//! The extension's transport on Linux: a Unix socket under /run that every user may connect
//! to, the user being the peer's uid (`SO_PEERCRED`) and the browser the host's parent process.

use super::conversation::{self, Shared};
use super::{ExtensionConfig, Presence};
use crate::sources::SourceContext;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Binds the socket (replacing a stale one left by a killed agent) and starts accepting.
pub(super) fn start(
    cfg: ExtensionConfig,
    cx: &SourceContext,
    presence: Arc<Presence>,
) -> io::Result<()> {
    start_with(cfg, cx, presence, super::peer::browser_of)
}

/// As `start`, with how a peer is identified as a browser (tests stand in for the browser).
fn start_with(
    cfg: ExtensionConfig,
    cx: &SourceContext,
    presence: Arc<Presence>,
    identify: fn(i32, u32) -> Option<&'static str>,
) -> io::Result<()> {
    if let Some(dir) = cfg.socket.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(&cfg.socket) {
        Ok(m) if m.file_type().is_socket() => {
            // Replace it only if nobody answers: a second agent must not take a live one's.
            if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process is listening on {}", cfg.socket.display()),
                ));
            }
            std::fs::remove_file(&cfg.socket)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", cfg.socket.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(&cfg.socket)?;
    // Every user's browser starts a host, and the host runs as that user: anyone may connect;
    // the peer's uid says who they are.
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666))?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    tracing::info!(socket = %cfg.socket.display(), "extension: listening for the browser extension's host");
    let shared = Arc::new(Shared::new(cfg, cx, presence));
    tokio::spawn(accept(listener, shared, identify));
    Ok(())
}

async fn accept(
    listener: UnixListener,
    shared: Arc<Shared>,
    identify: fn(i32, u32) -> Option<&'static str>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "extension: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if shared.closed() {
            return;
        }
        let (uid, pid) = match stream.peer_cred() {
            Ok(cred) => (cred.uid(), cred.pid()),
            Err(e) => {
                tracing::warn!(error = %e, "extension: no peer credentials; connection dropped");
                continue;
            }
        };
        // The extension counts as present for the browser that started the host, found from
        // the peer's process, never from what the hello says: anyone can connect and say
        // anything.
        let who = async move {
            tokio::task::spawn_blocking(move || {
                let browser = pid.and_then(|pid| identify(pid, uid));
                (super::account_name(&uid), browser)
            })
            .await
            .unwrap_or_else(|_| (uid.to_string(), None))
        };
        conversation::admit(stream, uid, who, &shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Observation, channel};
    use invigilator_proto::v1::event::Kind;
    use std::time::Instant;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixStream;

    async fn started(
        cfg: impl FnOnce(&mut ExtensionConfig),
    ) -> (
        tempfile::TempDir,
        ExtensionConfig,
        crate::sources::EventRx,
        Arc<Presence>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ExtensionConfig {
            socket: dir.path().join("run/browser.sock"),
            ..Default::default()
        };
        cfg(&mut c);
        let (tx, rx) = channel(64);
        let cx = SourceContext {
            hostname: "pc1".into(),
            state_dir: dir.path().to_path_buf(),
            events: tx,
            checkpoints: Arc::new(|_| Ok(None)),
        };
        let presence = Arc::new(Presence::default());
        // This test process stands in for a host that Chromium started.
        start_with(c.clone(), &cx, Arc::clone(&presence), |_, _| {
            Some("chromium")
        })
        .unwrap();
        (dir, c, rx, presence)
    }

    /// Plays the spool: commits whatever arrives, after `delay`.
    fn spool(
        mut rx: crate::sources::EventRx,
        delay: Duration,
    ) -> tokio::sync::mpsc::UnboundedReceiver<invigilator_proto::v1::Event> {
        let (out, got) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Observation {
                event, committed, ..
            }) = rx.recv().await
            {
                tokio::time::sleep(delay).await;
                if let Some(e) = event {
                    let _ = out.send(e);
                }
                if let Some(c) = committed {
                    let _ = c.send(());
                }
            }
        });
        got
    }

    async fn ask(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
        w: &mut tokio::net::unix::OwnedWriteHalf,
        msg: &str,
    ) -> serde_json::Value {
        w.write_all(format!("{msg}\n").as_bytes()).await.unwrap();
        let line = lines.next_line().await.unwrap().expect("a reply");
        serde_json::from_str(&line).unwrap()
    }

    /// Visits the extension had to drop come as a gap of the browsing source, spooled before
    /// the hello's reply says how many were recorded.
    #[tokio::test]
    async fn drops_the_extension_reports_become_a_gap_before_the_reply() {
        let (_dir, cfg, rx, _presence) = started(|_| {}).await;
        let mut got = spool(rx, Duration::from_millis(300));
        let (r, mut w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        let started = Instant::now();
        assert_eq!(
            ask(
                &mut lines,
                &mut w,
                r#"{"type":"hello","browser":"chromium","dropped":42}"#
            )
            .await,
            serde_json::json!({"hello": "ok", "dropped": 42})
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "replied before the commit"
        );
        let e = got.recv().await.unwrap();
        let Some(Kind::Gap(g)) = e.kind else {
            panic!("not a gap: {e:?}")
        };
        assert_eq!((g.source.as_str(), g.lost), ("browsing", 42));
        assert!(g.reason.contains("chromium extension"), "{}", g.reason);
        assert!(!e.user.is_empty());
    }

    #[tokio::test]
    async fn a_visit_is_acknowledged_only_after_the_spool_commits_it_and_names_the_peer() {
        let (_dir, cfg, rx, presence) = started(|_| {}).await;
        let mode = std::fs::metadata(&cfg.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        let mut got = spool(rx, Duration::from_millis(300));
        let (r, mut w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        assert_eq!(
            ask(
                &mut lines,
                &mut w,
                r#"{"type":"hello","version":"0.1.0","browser":"chromium"}"#
            )
            .await,
            serde_json::json!({"hello": "ok"})
        );
        let my_uid = nix::unistd::getuid().as_raw();
        assert!(presence.has(&my_uid, "chromium") && !presence.has(&my_uid, "firefox"));
        let started = Instant::now();
        let reply = ask(
            &mut lines,
            &mut w,
            r#"{"type":"visit","id":"v-1","url":"https://www.bing.com/search?q=kms","title":"kms","transition":"typed","incognito":true,"time":1764780000000,"browser":"chromium","user":"someone-else"}"#,
        )
        .await;
        assert_eq!(reply, serde_json::json!({"ack": "v-1"}));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "acknowledged before the commit"
        );
        let e = got.recv().await.unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .name;
        assert_eq!(
            e.user, me,
            "the user is the socket's peer, not the message's claim"
        );
        assert_eq!(e.hostname, "pc1");
        let Some(Kind::Browsing(b)) = e.kind else {
            panic!("{e:?}")
        };
        assert_eq!(
            (b.search_terms.as_str(), b.incognito, b.reporter.as_str()),
            ("kms", true, "extension")
        );

        let reply = ask(
            &mut lines,
            &mut w,
            r#"{"type":"visit","id":"v-2","url":"chrome://settings","time":1}"#,
        )
        .await;
        assert_eq!(reply["reject"], "v-2");
        let reply = ask(&mut lines, &mut w, "not json").await;
        assert!(
            reply["error"].as_str().unwrap().contains("not a message"),
            "{reply}"
        );
        // The host goes: so does the user's presence.
        drop((lines, w));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!presence.has(&my_uid, "chromium"));
    }

    #[tokio::test]
    async fn a_hostile_host_is_bounded() {
        let (_dir, cfg, rx, _) = started(|c| {
            c.max_message_bytes = 1024;
            c.max_connections_per_user = 2;
            c.max_visits_per_minute = 3;
        })
        .await;
        let mut got = spool(rx, Duration::ZERO);
        // An over-long message closes that connection only.
        let (r, mut w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        let reply = ask(&mut lines, &mut w, &"x".repeat(5000)).await;
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("longer than 1024"),
            "{reply}"
        );
        assert!(lines.next_line().await.unwrap().is_none(), "closed");
        // A message begun and never finished closes its connection after the deadline, while
        // an idle one stays open.
        let (r, mut w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        let mut stalled = BufReader::new(r).lines();
        let (idle_r, _idle_w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        w.write_all(br#"{"type":"hel"#).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), stalled.next_line())
            .await
            .expect("closed within the deadline")
            .unwrap()
            .unwrap();
        assert!(reply.contains("not finished within"), "{reply}");
        assert!(stalled.next_line().await.unwrap().is_none(), "closed");
        let mut idle = BufReader::new(idle_r).lines();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), idle.next_line())
                .await
                .is_err(),
            "an idle connection was closed"
        );
        drop((idle, _idle_w, stalled, w));
        // Its slot is given back once its task has ended.
        tokio::time::sleep(Duration::from_millis(100)).await;

        // A third connection of one user is refused while two are open.
        let a = UnixStream::connect(&cfg.socket).await.unwrap();
        let (r, mut w) = UnixStream::connect(&cfg.socket).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        // (wait until both are admitted: a reply on the second proves it)
        ask(&mut lines, &mut w, r#"{"type":"hello"}"#).await;
        let third = UnixStream::connect(&cfg.socket).await.unwrap();
        let mut third = BufReader::new(third).lines();
        let refused = third.next_line().await.unwrap().unwrap();
        assert!(
            refused.contains("too many browser connections for this user"),
            "{refused}"
        );
        drop(a);

        // Three visits a minute; the fourth is neither refused nor spooled but held until the
        // next minute (the extension keeps it meanwhile).
        for i in 0..3 {
            let reply = ask(
                &mut lines,
                &mut w,
                &format!(r#"{{"type":"visit","id":"r{i}","url":"http://a.test/{i}","time":1}}"#),
            )
            .await;
            assert_eq!(reply["ack"], format!("r{i}"));
        }
        w.write_all(b"{\"type\":\"visit\",\"id\":\"r3\",\"url\":\"http://a.test/3\",\"time\":1}\n")
            .await
            .unwrap();
        let held = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
        assert!(held.is_err(), "answered at once: {held:?}");
        let mut stored = 0;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), got.recv()).await {
            assert_eq!(e.kind.unwrap().name(), "browsing");
            stored += 1;
        }
        assert_eq!(stored, 3);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_another_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("browser.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (tx, _rx) = channel(4);
        let cx = SourceContext {
            hostname: "pc1".into(),
            state_dir: dir.path().to_path_buf(),
            events: tx,
            checkpoints: Arc::new(|_| Ok(None)),
        };
        let cfg = ExtensionConfig {
            socket: path.clone(),
            ..Default::default()
        };
        start(cfg.clone(), &cx, Arc::default()).unwrap();
        UnixStream::connect(&path).await.unwrap();
        let err = start(cfg.clone(), &cx, Arc::default()).unwrap_err();
        assert!(
            err.to_string().contains("another process is listening"),
            "{err}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").unwrap();
        let err = start(
            ExtensionConfig {
                socket: file.clone(),
                ..cfg
            },
            &cx,
            Arc::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "keep");
    }
}
