//! One native-messaging host's conversation with the agent, whatever carries it (a Unix socket,
//! a Windows named pipe): a line of JSON per message each way, each visit acknowledged only once
//! the spool has committed it.
//!
//! Every connection is a process the pupil runs, so each is bounded: message size, connections
//! in all and per user, visits per user per minute. One connection waiting on a half-written
//! line holds only its own task. Who the peer is comes from the transport (the kernel's view of
//! the connection), never from what it writes.

use super::limits::Limits;
use super::message::{self, Incoming, Refused};
use super::{ExtensionConfig, Presence, UserKey};
use crate::sources::{EventTx, SourceContext, now_us, observed};
use invigilator_proto::v1::Gap;
use invigilator_proto::v1::event::Kind;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// How long a message may take to arrive once its first byte has (a browser writes each one
/// whole; only a stalled or hostile peer is slower).
pub(super) const LINE_DEADLINE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

/// Who is on the other end of a connection, as the operating system says.
struct Peer {
    /// The account, for the limits and the presence count.
    user: UserKey,
    /// The account's name, which events carry.
    name: String,
    /// The browser that started the host, when a browser did: only then does the connection
    /// count as the extension running.
    browser: Option<&'static str>,
}

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub cfg: ExtensionConfig,
    hostname: String,
    events: EventTx,
    pub limits: Limits<UserKey>,
    presence: Arc<Presence>,
}

impl Shared {
    pub fn new(cfg: ExtensionConfig, cx: &SourceContext, presence: Arc<Presence>) -> Self {
        Self {
            limits: Limits::new(
                cfg.max_connections,
                cfg.max_connections_per_user,
                cfg.max_visits_per_minute,
            ),
            cfg,
            hostname: cx.hostname.clone(),
            events: cx.events.clone(),
            presence,
        }
    }

    /// True once the agent is stopping: listeners stop accepting.
    pub fn closed(&self) -> bool {
        self.events.is_closed()
    }
}

/// Why a visit was not taken.
enum NotTaken {
    /// For good: the extension drops it.
    Refused(Refused),
    /// The agent is stopping: no answer, so the extension keeps the visit and sends it again.
    Closed,
}

/// Takes a connection slot for `user` and serves the connection on a task of its own, or
/// answers why not. `identify` finds the account's name and the browser behind the peer: it may
/// be slow (a directory lookup), so it runs on that task, after the slot is taken.
pub(super) fn admit<S, F>(mut stream: S, user: UserKey, identify: F, shared: &Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Future<Output = (String, Option<&'static str>)> + Send + 'static,
{
    let admitted = shared.limits.admit(&user);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(why) = admitted {
            tracing::warn!(?user, why, "extension: connection refused");
            let refusal = reply_error(why);
            let _ = tokio::time::timeout(LINE_DEADLINE, stream.write_all(&refusal)).await;
            return;
        }
        let (name, browser) = identify.await;
        let peer = Peer {
            user,
            name,
            browser,
        };
        let mut counted = None;
        let result = converse(stream, &peer, &shared, &mut counted).await;
        if let Some(browser) = counted {
            shared.presence.disconnected(&peer.user, browser);
        }
        shared.limits.release(&peer.user);
        if let Err(e) = result {
            tracing::debug!(user = %peer.name, error = %e, "extension: connection ended");
        }
    });
}

/// One host's conversation; `counted` is the browser whose presence it added, once it says
/// hello.
async fn converse<S: AsyncRead + AsyncWrite>(
    stream: S,
    peer: &Peer,
    shared: &Shared,
    counted: &mut Option<&'static str>,
) -> io::Result<()> {
    let user = peer.name.as_str();
    let (read, mut write) = tokio::io::split(stream);
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
                match peer.browser {
                    Some(b) if counted.is_none() => {
                        shared.presence.connected(&peer.user, b);
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
                if hello.dropped == 0 || !first || peer.browser.is_none() {
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
                    spool_as_visit(gap, peer, shared)
                        .await
                        .map_err(|()| io::Error::other("the agent is stopping"))?;
                    serde_json::json!({ "hello": "ok", "dropped": hello.dropped })
                }
            }
            Ok(Incoming::Visit(raw)) => {
                let id = message::valid_id(&raw.id).then(|| raw.id.clone());
                match visit(raw, peer, shared).await {
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
async fn visit(raw: message::RawVisit, peer: &Peer, shared: &Shared) -> Result<(), NotTaken> {
    let checked = raw.check(now_us()).map_err(NotTaken::Refused)?;
    spool_as_visit(Kind::Browsing(checked), peer, shared)
        .await
        .map_err(|()| NotTaken::Closed)
}

/// Spools what a user's host sent, counted against their visit rate: over it, waits for the
/// next window (slowing only this user's connections). Ok once the spool has committed it;
/// Err when the agent is stopping.
async fn spool_as_visit(kind: Kind, peer: &Peer, shared: &Shared) -> Result<(), ()> {
    let mut warned = false;
    while let Err(wait) = shared.limits.take_visit(&peer.user, Instant::now()) {
        if !warned {
            let limit = shared.cfg.max_visits_per_minute;
            tracing::warn!(user = %peer.name, limit, "extension: over the visit rate; this user's visits wait for the next minute");
            warned = true;
        }
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
    }
    let event = observed(&shared.hostname, peer.name.clone(), kind);
    shared.events.send_committed(event).await.map_err(|_| ())
}

/// A line that tells the host why it was refused.
pub(super) fn reply_error(why: &str) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "error": why })).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
