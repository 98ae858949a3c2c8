//! The local socket the native-messaging hosts connect to, one task per connection.
//!
//! Every connection is a process the pupil runs, so each is bounded: message size, connections
//! in all and per user, visits per user per minute. One connection waiting on a half-written
//! line holds only its own task.

use super::limits::Limits;
use super::message::{self, Incoming, Refused};
use super::{ExtensionConfig, Presence};
use crate::sources::{EventTx, SourceContext, now_us, observed};
use invigilator_proto::v1::Gap;
use invigilator_proto::v1::event::Kind;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long a message may take to arrive once its first byte has (a browser writes each one
/// whole; only a stalled or hostile peer is slower).
const LINE_DEADLINE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

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
    let shared = Arc::new(Shared {
        limits: Limits::new(
            cfg.max_connections,
            cfg.max_connections_per_user,
            cfg.max_visits_per_minute,
        ),
        cfg,
        hostname: cx.hostname.clone(),
        events: cx.events.clone(),
        presence,
        identify,
    });
    tokio::spawn(accept(listener, shared));
    Ok(())
}

struct Shared {
    cfg: ExtensionConfig,
    hostname: String,
    events: EventTx,
    limits: Limits,
    presence: Arc<Presence>,
    /// The browser behind a peer (its pid and uid), if it is one: what the tamper check counts.
    identify: fn(i32, u32) -> Option<&'static str>,
}

/// Why a visit was not taken.
enum NotTaken {
    /// For good: the extension drops it.
    Refused(Refused),
    /// The agent is stopping: no answer, so the extension keeps the visit and sends it again.
    Closed,
}

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
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
        if shared.events.is_closed() {
            return;
        }
        let (uid, pid) = match stream.peer_cred() {
            Ok(cred) => (cred.uid(), cred.pid()),
            Err(e) => {
                tracing::warn!(error = %e, "extension: no peer credentials; connection dropped");
                continue;
            }
        };
        if let Err(why) = shared.limits.admit(uid) {
            tracing::warn!(uid, why, "extension: connection refused");
            let mut stream = stream;
            let _ = stream.write_all(&reply_error(why)).await;
            continue;
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let result = serve(stream, uid, pid, &shared).await;
            shared.limits.release(uid);
            if let Err(e) = result {
                tracing::debug!(uid, error = %e, "extension: connection ended");
            }
        });
    }
}

/// The account behind a uid (the lookup may go to the directory over the network, so it runs
/// off the runtime); a uid without a name is reported as its number.
async fn user_name(uid: u32) -> String {
    tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| uid.to_string())
}

async fn serve(stream: UnixStream, uid: u32, pid: Option<i32>, shared: &Shared) -> io::Result<()> {
    // The extension counts as present for the browser that started the host, found from the
    // peer's process, never from what the hello says: anyone can connect and say anything.
    let peer_browser = match pid {
        Some(pid) => tokio::task::spawn_blocking({
            let identify = shared.identify;
            move || identify(pid, uid)
        })
        .await
        .ok()
        .flatten(),
        None => None,
    };
    let mut counted = None;
    let result = converse(stream, uid, peer_browser, shared, &mut counted).await;
    if let Some(browser) = counted {
        shared.presence.disconnected(uid, browser);
    }
    result
}

/// One host's conversation; `counted` is the browser whose presence it added, once it says
/// hello.
async fn converse(
    stream: UnixStream,
    uid: u32,
    peer_browser: Option<&'static str>,
    shared: &Shared,
    counted: &mut Option<&'static str>,
) -> io::Result<()> {
    let user = user_name(uid).await;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let max = shared.cfg.max_message_bytes;
    let mut line = Vec::with_capacity(1024);
    let mut said_hello = false;
    loop {
        line.clear();
        // A connection may stay quiet as long as the browser keeps it, but a message, once
        // begun, must end soon: a host that stops half-way would otherwise keep its slot.
        if read.fill_buf().await?.is_empty() {
            return Ok(());
        }
        let mut bounded = (&mut read).take(max as u64 + 1);
        let rest = bounded.read_until(b'\n', &mut line);
        let Ok(n) = tokio::time::timeout(LINE_DEADLINE, rest).await else {
            let why = format!(
                "a message not finished within {}s; connection closed",
                LINE_DEADLINE.as_secs_f32()
            );
            tracing::warn!(%user, "extension: {why}");
            write.write_all(&reply_error(&why)).await?;
            return Ok(());
        };
        if n? == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            // Longer than allowed (or cut off by the peer): nothing after it can be framed.
            let why = format!("a message longer than {max} bytes; connection closed");
            tracing::warn!(%user, "extension: {why}");
            write.write_all(&reply_error(&why)).await?;
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let reply = match message::parse(text) {
            Ok(Incoming::Hello {
                version,
                browser,
                incognito_access,
                dropped,
            }) => {
                let hello = Incoming::hello(version, browser, incognito_access, &dropped);
                match peer_browser {
                    Some(b) if counted.is_none() => {
                        shared.presence.connected(uid, b);
                        *counted = Some(b);
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(%user, claimed = hello.browser, "extension: a hello from a process no browser started; its visits are taken as the user's, but it does not count as the extension running")
                    }
                }
                tracing::info!(%user, browser = hello.browser, version = %hello.version, incognito_access = hello.incognito_access, "extension: connected");
                // Drops are taken once per connection, from a host a browser started, and
                // charged as a visit: a local process saying hello in a loop writes no gaps.
                let first = !std::mem::replace(&mut said_hello, true);
                if hello.dropped == 0 || !first || peer_browser.is_none() {
                    serde_json::json!({ "hello": "ok" })
                } else {
                    // The loss goes to the school like any other source's; the extension
                    // forgets the count only once this is spooled.
                    let gap = Kind::Gap(Gap {
                        source: "browsing".into(),
                        reason: format!(
                            "the {} extension's queue was full while the agent was unreachable: it dropped {} visits, the oldest",
                            hello.browser, hello.dropped
                        ),
                        lost: hello.dropped,
                    });
                    tracing::warn!(%user, browser = hello.browser, dropped = hello.dropped, "extension: visits lost in the browser");
                    spool_as_visit(gap, uid, &user, shared)
                        .await
                        .map_err(|()| io::Error::other("the agent is stopping"))?;
                    serde_json::json!({ "hello": "ok", "dropped": hello.dropped })
                }
            }
            Ok(Incoming::Visit(raw)) => {
                let id = message::valid_id(&raw.id).then(|| raw.id.clone());
                match visit(raw, uid, &user, shared).await {
                    Ok(()) => serde_json::json!({ "ack": id }),
                    Err(NotTaken::Refused(why)) => {
                        tracing::debug!(%user, %why, "extension: visit refused");
                        match id {
                            Some(id) => serde_json::json!({ "reject": id, "why": why.to_string() }),
                            None => serde_json::json!({ "error": why.to_string() }),
                        }
                    }
                    Err(NotTaken::Closed) => {
                        return Err(io::Error::other("the agent is stopping"));
                    }
                }
            }
            Err(why) => serde_json::json!({ "error": why.to_string() }),
        };
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
    }
}

/// Checks, rates and spools one visit; Ok once the spool has committed it.
async fn visit(
    raw: message::RawVisit,
    uid: u32,
    user: &str,
    shared: &Shared,
) -> Result<(), NotTaken> {
    let checked = raw.check(now_us()).map_err(NotTaken::Refused)?;
    spool_as_visit(Kind::Browsing(checked), uid, user, shared)
        .await
        .map_err(|()| NotTaken::Closed)
}

/// Spools what a user's host sent, counted against their visit rate: over it, waits for the
/// next window (slowing only this user's connections). Ok once the spool has committed it;
/// Err when the agent is stopping.
async fn spool_as_visit(kind: Kind, uid: u32, user: &str, shared: &Shared) -> Result<(), ()> {
    let mut warned = false;
    while let Err(wait) = shared.limits.take_visit(uid, Instant::now()) {
        if !warned {
            let limit = shared.cfg.max_visits_per_minute;
            tracing::warn!(%user, limit, "extension: over the visit rate; this user's visits wait for the next minute");
            warned = true;
        }
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
    }
    let event = observed(&shared.hostname, user.to_owned(), kind);
    shared.events.send_committed(event).await.map_err(|_| ())
}

fn reply_error(why: &str) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "error": why })).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Observation, channel};
    use tokio::io::AsyncBufReadExt;

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
        assert!(presence.has(my_uid, "chromium") && !presence.has(my_uid, "firefox"));
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
        assert!(!presence.has(my_uid, "chromium"));
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
