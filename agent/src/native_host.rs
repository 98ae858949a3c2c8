//! The native-messaging host: the browser starts `invigilator-agent` as the pupil, talks to it
//! on stdin/stdout in its framing (a 32-bit native-endian length, then that many bytes of
//! JSON), and this relays each message as one line to the agent's local socket and each reply
//! back. It keeps nothing and checks little: the agent checks everything, since anyone can run
//! this program and write what they like to the socket.
//!
//! Chromium-family browsers start the host with the extension's origin
//! (`chrome-extension://ID/`) as its argument, Firefox with the host manifest's path and the
//! extension's id; [`invoked_by_browser`] recognises both, since a manifest cannot pass a
//! subcommand.

use std::io;
use std::path::PathBuf;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

/// The host's name in the browsers' manifests (`agent/browser-extension`, `deploy/`).
pub const HOST_NAME: &str = "uk.invigilator.agent";
/// The extension's id in Firefox (`browser_specific_settings.gecko.id`).
pub const FIREFOX_ID: &str = "invigilator@invigilator.school";
/// Longest message taken from the browser (the agent's own default bound).
pub const MAX_FROM_BROWSER: usize = 64 * 1024;
/// Longest reply passed to the browser (Chromium's limit for host messages is 1 MiB).
const MAX_TO_BROWSER: usize = 1024 * 1024;

/// True when a browser started this process as its native-messaging host.
pub fn invoked_by_browser(args: &[std::ffi::OsString]) -> bool {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str());
    arg(1).is_some_and(|a| a.starts_with("chrome-extension://")) || arg(2) == Some(FIREFOX_ID)
}

/// Where the agent listens: a socket path, or on Windows a pipe name.
pub fn socket_path() -> PathBuf {
    std::env::var_os(crate::sources::extension::SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::sources::extension::DEFAULT_SOCKET))
}

/// Relays between the browser (stdin/stdout) and the agent until either side closes.
pub fn run() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(relay());
    // Reading stdin holds a blocking thread that may still wait on the browser: not waited for.
    runtime.shutdown_background();
    result
}

async fn relay() -> io::Result<()> {
    let path = socket_path();
    let agent = connect(&path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the agent at {}: {e}", path.display()),
        )
    })?;
    let (from_agent, mut to_agent) = tokio::io::split(agent);
    // The browser closing the port ends the conversation (the agent sees the connection
    // close); the agent closing it (it is stopping) ends this host, and the extension
    // reconnects later.
    tokio::select! {
        up = to_agent_lines(tokio::io::stdin(), &mut to_agent) => up,
        down = to_browser_frames(BufReader::new(from_agent), tokio::io::stdout()) => down,
    }
}

#[cfg(unix)]
async fn connect(path: &std::path::Path) -> io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(path).await
}

/// Every instance busy is a moment's state (the agent makes a new one after each
/// connection): waited out for a few seconds.
#[cfg(windows)]
async fn connect(
    path: &std::path::Path,
) -> io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match crate::platform::windows::pipe::open_client(path.as_os_str()) {
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

/// Browser frames in, one compact JSON line per message out. A message that is not a JSON
/// object is dropped (said on stderr, which the browser logs); one over the bound ends the
/// relay, since the stream cannot be trusted after it.
pub async fn to_agent_lines(
    mut from_browser: impl AsyncRead + Unpin,
    mut to_agent: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    loop {
        match from_browser.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_ne_bytes(len) as usize;
        if n > MAX_FROM_BROWSER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message of {n} bytes from the browser (at most {MAX_FROM_BROWSER})"),
            ));
        }
        body.resize(n, 0);
        from_browser.read_exact(&mut body).await?;
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body) {
            Ok(object) => {
                // Compact JSON escapes every newline inside strings: one message, one line.
                let mut line = serde_json::to_vec(&object)?;
                line.push(b'\n');
                to_agent.write_all(&line).await?;
                to_agent.flush().await?;
            }
            Err(e) => eprintln!(
                "invigilator native host: dropped a message that is not a JSON object: {e}"
            ),
        }
    }
}

/// The agent's reply lines in, browser frames out.
pub async fn to_browser_frames(
    from_agent: impl AsyncBufRead + Unpin,
    mut to_browser: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut from_agent = from_agent.take(0);
    let mut line = Vec::new();
    loop {
        line.clear();
        from_agent.set_limit(MAX_TO_BROWSER as u64 + 1);
        if from_agent.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if line.len() > MAX_TO_BROWSER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a reply from the agent over 1 MiB",
            ));
        }
        let body = line.trim_ascii();
        if body.is_empty() {
            continue;
        }
        to_browser
            .write_all(&(body.len() as u32).to_ne_bytes())
            .await?;
        to_browser.write_all(body).await?;
        to_browser.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn frames_become_lines_and_lines_become_frames() {
        let mut input = frame(br#"{"type":"visit","title":"a\nb"}"#);
        input.extend(frame(b"[1,2]"));
        input.extend(frame(br#"{"type":"hello"}"#));
        let mut out = Vec::new();
        to_agent_lines(&input[..], &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"title\":\"a\\nb\",\"type\":\"visit\"}\n{\"type\":\"hello\"}\n",
            "one line per object; the array dropped"
        );

        let mut out = Vec::new();
        to_browser_frames(&b"{\"ack\":\"1\"}\n\n{\"hello\":\"ok\"}\n"[..], &mut out)
            .await
            .unwrap();
        let mut want = frame(br#"{"ack":"1"}"#);
        want.extend(frame(br#"{"hello":"ok"}"#));
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn an_oversized_or_cut_frame_ends_the_relay() {
        let mut out = Vec::new();
        let big = ((MAX_FROM_BROWSER + 1) as u32).to_ne_bytes();
        let err = to_agent_lines(&big[..], &mut out).await.unwrap_err();
        assert!(err.to_string().contains("bytes from the browser"), "{err}");
        let mut cut = frame(br#"{"type":"hello"}"#);
        cut.truncate(8);
        assert!(to_agent_lines(&cut[..], &mut out).await.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn browsers_are_recognised_by_their_arguments() {
        let args = |a: &[&str]| {
            a.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        assert!(invoked_by_browser(&args(&[
            "agent",
            "chrome-extension://abc/"
        ])));
        assert!(invoked_by_browser(&args(&[
            "agent",
            "/usr/lib/mozilla/native-messaging-hosts/uk.invigilator.agent.json",
            FIREFOX_ID
        ])));
        assert!(!invoked_by_browser(&args(&[
            "agent",
            "run",
            "--state-dir",
            "x"
        ])));
        assert!(!invoked_by_browser(&args(&["agent"])));
    }
}
