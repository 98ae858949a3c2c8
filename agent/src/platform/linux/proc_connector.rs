//! The kernel's process-events connector: a `NETLINK_CONNECTOR` socket subscribed to the
//! `CN_IDX_PROC` group, which the kernel tells about every fork, exec and exit as it happens.
//!
//! Datagrams are parsed field by field from bytes in native byte order (as the kernel writes
//! them), never by reinterpreting a buffer as a struct: a short or malformed datagram is an error,
//! not undefined behaviour.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use netlink_sys::protocols::NETLINK_CONNECTOR;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;

// <linux/connector.h>, <linux/cn_proc.h>, <linux/netlink.h>.
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CN_MSG_LEN: usize = 20;
/// `what`, `cpu`, `timestamp_ns`; the event-specific union follows.
const PROC_EVENT_HDRLEN: usize = 16;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// Receive buffer asked for, in bytes. A burst of short-lived processes queues a fork, an exec
/// and an exit (each under 1 KiB of kernel memory) per process while we are busy reading /proc
/// for earlier ones; a few MiB absorbs thousands of processes before the kernel starts dropping.
pub const RCVBUF_BYTES: usize = 8 << 20;

/// How long to wait for the kernel to acknowledge the subscription. It answers synchronously,
/// so silence means it never will.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
const ACK_POLL: Duration = Duration::from_millis(5);

/// Why the proc connector cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("cannot open a NETLINK_CONNECTOR socket (kernel without CONFIG_CONNECTOR?): {0}")]
    Open(io::Error),
    #[error("permission denied joining the proc connector group: it needs root or CAP_NET_ADMIN")]
    PermissionDenied,
    #[error("cannot join the proc connector group: {0}")]
    Bind(io::Error),
    #[error("cannot send the subscription request to the proc connector: {0}")]
    Send(io::Error),
    #[error("cannot read the proc connector's answer: {0}")]
    Recv(io::Error),
    #[error(
        "the kernel refused the proc connector subscription ({0}): it needs root or CAP_NET_ADMIN"
    )]
    Refused(Errno),
    #[error(
        "no answer from the proc connector within {0:?}: the kernel lacks CONFIG_PROC_EVENTS, or \
         the agent runs outside the initial PID/user namespace (in a container)"
    )]
    NoAnswer(Duration),
}

/// A subscribed proc connector socket. Dropping it unsubscribes, so the kernel stops generating
/// events nobody reads.
pub struct ProcConnector {
    socket: Socket,
    rcvbuf: usize,
}

impl ProcConnector {
    /// Opens the socket, joins the group and subscribes, then waits for the kernel's
    /// acknowledgement: a subscription the kernel silently ignores (inside a container) would
    /// otherwise look like a machine where nothing ever runs.
    pub fn subscribe() -> Result<Self, SubscribeError> {
        let mut socket = Socket::new(NETLINK_CONNECTOR).map_err(SubscribeError::Open)?;
        socket
            .bind(&SocketAddr::new(0, CN_IDX_PROC))
            .map_err(|err| match err.kind() {
                io::ErrorKind::PermissionDenied => SubscribeError::PermissionDenied,
                _ => SubscribeError::Bind(err),
            })?;
        let rcvbuf = enlarge_receive_buffer(&socket);
        let conn = Self { socket, rcvbuf };

        // The kernel overwrites the sequence number of what it sends but echoes `ack + 1`: a
        // clock-derived ack tells our acknowledgement apart from other listeners'.
        let ack = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
        conn.control(PROC_CN_MCAST_LISTEN, ack)
            .map_err(SubscribeError::Send)?;
        conn.await_ack(ack)?;
        Ok(conn)
    }

    /// Receive buffer size the kernel granted, in bytes (as reported by `SO_RCVBUF`).
    pub fn receive_buffer(&self) -> usize {
        self.rcvbuf
    }

    /// Blocks for the next datagram from the kernel and returns it. Datagrams from anyone else
    /// are skipped: any local process can address our port, and only the kernel speaks for the
    /// proc connector.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        loop {
            let (len, from) = self.socket.recv_from(&mut &mut buf[..], 0)?;
            if from.port_number() == 0 {
                return Ok(&buf[..len.min(buf.len())]);
            }
        }
    }

    fn control(&self, op: u32, ack: u32) -> io::Result<()> {
        self.socket
            .send_to(&control_message(op, ack), &SocketAddr::new(0, 0), 0)
            .map(drop)
    }

    fn await_ack(&self, ack: u32) -> Result<(), SubscribeError> {
        self.socket
            .set_non_blocking(true)
            .map_err(SubscribeError::Recv)?;
        let result = self.poll_for_ack(ack);
        self.socket
            .set_non_blocking(false)
            .map_err(SubscribeError::Recv)?;
        result
    }

    /// Events that arrive before the acknowledgement are discarded: the source starts once the
    /// subscription is confirmed.
    fn poll_for_ack(&self, ack: u32) -> Result<(), SubscribeError> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            let datagram = match self.recv(&mut buf) {
                Ok(datagram) => datagram,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(ACK_POLL);
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(SubscribeError::Recv(err)),
            };
            for message in parse(datagram).flatten() {
                match message {
                    Message::Ack { ack: a, err } if a == ack.wrapping_add(1) => {
                        return match err {
                            0 => Ok(()),
                            errno => Err(SubscribeError::Refused(Errno::from_raw(errno as i32))),
                        };
                    }
                    Message::NetlinkError { errno } if errno != 0 => {
                        return Err(SubscribeError::Refused(Errno::from_raw(-errno)));
                    }
                    _ => {}
                }
            }
        }
        Err(SubscribeError::NoAnswer(ACK_TIMEOUT))
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // Best effort: older kernels count listeners globally and only forget one on request.
        if let Err(err) = self.control(PROC_CN_MCAST_IGNORE, 0) {
            tracing::debug!(%err, "could not unsubscribe from the proc connector");
        }
    }
}

/// `SO_RCVBUF` is capped by `net.core.rmem_max`; `SO_RCVBUFFORCE` would let root exceed it but is
/// not reachable without unsafe code or nix's `socket` feature, so we take what the cap allows.
fn enlarge_receive_buffer(socket: &Socket) -> usize {
    // The kernel doubles the value for bookkeeping; ask for half so the total is RCVBUF_BYTES.
    let request = (RCVBUF_BYTES / 2) as i32;
    // As root, SO_RCVBUFFORCE goes past net.core.rmem_max (about 208 KiB on a stock system,
    // too little for an exec storm); otherwise SO_RCVBUF, capped by rmem_max.
    let forced = nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::RcvBufForce,
        &(request as usize),
    );
    if forced.is_err()
        && let Err(err) = socket.set_rx_buf_sz(request)
    {
        tracing::debug!(%err, "could not enlarge the proc connector receive buffer");
    }
    socket.get_rx_buf_sz().unwrap_or(0)
}

/// A `PROC_CN_MCAST_*` request: `nlmsghdr` + `cn_msg` + the `u32` operation.
fn control_message(op: u32, ack: u32) -> [u8; NLMSG_HDRLEN + CN_MSG_LEN + 4] {
    let mut msg = [0u8; NLMSG_HDRLEN + CN_MSG_LEN + 4];
    let total = msg.len() as u32;
    let mut fields = Writer(&mut msg[..]);
    // nlmsghdr: len, type, flags, seq, pid (0: the kernel fills in our port).
    fields.u32(total);
    fields.u16(NLMSG_DONE);
    fields.u16(0);
    fields.u32(0);
    fields.u32(0);
    // cn_msg: id.idx, id.val, seq, ack, len, flags.
    fields.u32(CN_IDX_PROC);
    fields.u32(CN_VAL_PROC);
    fields.u32(0);
    fields.u32(ack);
    fields.u16(4);
    fields.u16(0);
    fields.u32(op);
    msg
}

/// Appends native-endian fields to a buffer sized for them in advance.
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let buf = std::mem::take(&mut self.0);
        let (head, tail) = buf.split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.0 = tail;
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_ne_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_ne_bytes());
    }
}

/// One message of a proc connector datagram, reduced to what the process source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The answer to a subscription request: `ack` is the request's plus one, `err` 0 or an
    /// errno.
    Ack { ack: u32, err: u32 },
    /// A process image was replaced. `pid` is the thread, `tgid` the process.
    Exec {
        pid: u32,
        tgid: u32,
        timestamp_ns: u64,
    },
    /// A thread exited; when `pid == tgid` it was the thread-group leader.
    Exit {
        pid: u32,
        tgid: u32,
        timestamp_ns: u64,
    },
    /// Netlink's own error report (`NLMSG_ERROR`) about something we sent; errno is negative.
    NetlinkError { errno: i32 },
    /// Anything else: other event kinds (fork, uid, comm...), other connector users, no-ops.
    Other,
}

/// A datagram that does not hold what its headers claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated {what} at byte {offset}: {needed} bytes needed, {available} present")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("netlink message at byte {offset} declares length {len}, shorter than its header")]
    BadLength { offset: usize, len: usize },
}

/// The messages of one datagram, in order. After an error the framing is lost, so iteration
/// stops there.
pub fn parse(datagram: &[u8]) -> Messages<'_> {
    Messages {
        datagram,
        offset: 0,
        failed: false,
    }
}

pub struct Messages<'a> {
    datagram: &'a [u8],
    offset: usize,
    failed: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.datagram.len() {
            return None;
        }
        let result = self.next_message();
        self.failed = result.is_err();
        Some(result)
    }
}

impl Messages<'_> {
    fn next_message(&mut self) -> Result<Message, ParseError> {
        let start = self.offset;
        let rest = &self.datagram[start..];
        let header = Fields::new(rest, start, "netlink header");
        let len = header.u32(0)? as usize;
        let kind = header.u16(4)?;
        if len < NLMSG_HDRLEN {
            return Err(ParseError::BadLength { offset: start, len });
        }
        let body = rest.get(NLMSG_HDRLEN..len).ok_or(ParseError::Truncated {
            what: "netlink message",
            offset: start,
            needed: len,
            available: rest.len(),
        })?;
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        self.offset = start + len.next_multiple_of(4);

        let body_offset = start + NLMSG_HDRLEN;
        match kind {
            NLMSG_ERROR => {
                let errno = Fields::new(body, body_offset, "netlink error").u32(0)? as i32;
                Ok(Message::NetlinkError { errno })
            }
            NLMSG_DONE => parse_connector(body, body_offset),
            _ => Ok(Message::Other),
        }
    }
}

/// `cn_msg` followed by `proc_event`.
fn parse_connector(body: &[u8], offset: usize) -> Result<Message, ParseError> {
    let cn = Fields::new(body, offset, "connector header");
    let (idx, val) = (cn.u32(0)?, cn.u32(4)?);
    let ack = cn.u32(12)?;
    let data_len = cn.u16(16)? as usize;
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) {
        return Ok(Message::Other);
    }
    let data_offset = offset + CN_MSG_LEN;
    let data = body
        .get(CN_MSG_LEN..CN_MSG_LEN + data_len)
        .ok_or(ParseError::Truncated {
            what: "connector payload",
            offset,
            needed: CN_MSG_LEN + data_len,
            available: body.len(),
        })?;

    let event = Fields::new(data, data_offset, "process event");
    let what = event.u32(0)?;
    let timestamp_ns = event.u64(8)?;
    let union = PROC_EVENT_HDRLEN;
    Ok(match what {
        PROC_EVENT_NONE => Message::Ack {
            ack,
            err: event.u32(union)?,
        },
        PROC_EVENT_EXEC => Message::Exec {
            pid: event.u32(union)?,
            tgid: event.u32(union + 4)?,
            timestamp_ns,
        },
        PROC_EVENT_EXIT => Message::Exit {
            pid: event.u32(union)?,
            tgid: event.u32(union + 4)?,
            timestamp_ns,
        },
        _ => Message::Other,
    })
}

/// Bounds-checked native-endian reads from one structure; `offset` (of the structure within the
/// datagram) and `what` only serve error messages.
struct Fields<'a> {
    bytes: &'a [u8],
    offset: usize,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], offset: usize, what: &'static str) -> Self {
        Self {
            bytes,
            offset,
            what,
        }
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], ParseError> {
        self.bytes
            .get(at..at + N)
            .and_then(|field| field.try_into().ok())
            .ok_or(ParseError::Truncated {
                what: self.what,
                offset: self.offset,
                needed: at + N,
                available: self.bytes.len(),
            })
    }

    fn u16(&self, at: usize) -> Result<u16, ParseError> {
        self.array(at).map(u16::from_ne_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32, ParseError> {
        self.array(at).map(u32::from_ne_bytes)
    }

    fn u64(&self, at: usize) -> Result<u64, ParseError> {
        self.array(at).map(u64::from_ne_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sizeof(struct proc_event)`: the 16-byte header plus the largest union member (exit,
    /// comm: 24 bytes).
    const PROC_EVENT_LEN: usize = PROC_EVENT_HDRLEN + 24;

    /// A datagram message exactly as the kernel's `cn_netlink_send` builds it.
    fn kernel_message(what: u32, union: &[u32], seq: u32, ack: u32) -> Vec<u8> {
        let total = NLMSG_HDRLEN + CN_MSG_LEN + PROC_EVENT_LEN;
        let mut out = Vec::with_capacity(total);
        // nlmsghdr
        out.extend((total as u32).to_ne_bytes());
        out.extend(NLMSG_DONE.to_ne_bytes());
        out.extend(0u16.to_ne_bytes());
        out.extend(seq.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        // cn_msg
        out.extend(CN_IDX_PROC.to_ne_bytes());
        out.extend(CN_VAL_PROC.to_ne_bytes());
        out.extend(seq.to_ne_bytes());
        out.extend(ack.to_ne_bytes());
        out.extend((PROC_EVENT_LEN as u16).to_ne_bytes());
        out.extend(0u16.to_ne_bytes());
        // proc_event: what, cpu, timestamp_ns, then the union, zero-padded.
        out.extend(what.to_ne_bytes());
        out.extend(1u32.to_ne_bytes());
        out.extend(123_456_789_000u64.to_ne_bytes());
        for v in union {
            out.extend(v.to_ne_bytes());
        }
        out.resize(total, 0);
        out
    }

    fn all(datagram: &[u8]) -> Vec<Result<Message, ParseError>> {
        parse(datagram).collect()
    }

    #[test]
    fn parses_exec() {
        let datagram = kernel_message(PROC_EVENT_EXEC, &[4242, 4242], 7, 0);
        assert_eq!(datagram.len(), 76);
        assert_eq!(
            all(&datagram),
            vec![Ok(Message::Exec {
                pid: 4242,
                tgid: 4242,
                timestamp_ns: 123_456_789_000
            })]
        );
    }

    #[test]
    fn parses_exit_of_a_thread() {
        // exit_proc_event: pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid.
        let datagram = kernel_message(PROC_EVENT_EXIT, &[101, 100, 0, 17, 1, 1], 8, 0);
        assert_eq!(
            all(&datagram),
            vec![Ok(Message::Exit {
                pid: 101,
                tgid: 100,
                timestamp_ns: 123_456_789_000
            })]
        );
    }

    #[test]
    fn parses_ack_and_ignores_other_kinds() {
        let ack = kernel_message(PROC_EVENT_NONE, &[1], 55, 10);
        assert_eq!(all(&ack), vec![Ok(Message::Ack { ack: 10, err: 1 })]);
        let fork = kernel_message(0x1, &[1, 1, 2, 2], 0, 0);
        assert_eq!(all(&fork), vec![Ok(Message::Other)]);
    }

    #[test]
    fn parses_two_messages_in_one_datagram() {
        let mut datagram = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        datagram.extend(kernel_message(PROC_EVENT_EXIT, &[10, 10, 0, 0, 1, 1], 2, 0));
        assert_eq!(
            all(&datagram),
            vec![
                Ok(Message::Exec {
                    pid: 10,
                    tgid: 10,
                    timestamp_ns: 123_456_789_000
                }),
                Ok(Message::Exit {
                    pid: 10,
                    tgid: 10,
                    timestamp_ns: 123_456_789_000
                }),
            ]
        );
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let full = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        for cut in 1..full.len() {
            let results = all(&full[..cut]);
            assert_eq!(results.len(), 1, "cut at {cut}");
            assert!(
                matches!(results[0], Err(ParseError::Truncated { .. })),
                "cut at {cut}: {:?}",
                results[0]
            );
        }
        // The error names what is missing.
        let err = all(&full[..40]).remove(0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated netlink message at byte 0: 76 bytes needed, 40 present"
        );
    }

    #[test]
    fn a_second_message_cut_short_keeps_the_first() {
        let mut datagram = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        datagram.extend(&kernel_message(PROC_EVENT_EXEC, &[11, 11], 2, 0)[..30]);
        let results = all(&datagram);
        assert_eq!(results.len(), 2);
        assert!(matches!(results[0], Ok(Message::Exec { pid: 10, .. })));
        assert!(matches!(
            results[1],
            Err(ParseError::Truncated { offset: 76, .. })
        ));
    }

    #[test]
    fn rejects_a_length_shorter_than_the_header() {
        let mut datagram = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        datagram[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            all(&datagram),
            vec![Err(ParseError::BadLength { offset: 0, len: 8 })]
        );
    }

    #[test]
    fn connector_payload_shorter_than_declared_is_an_error() {
        let mut datagram = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        // Declare a larger cn_msg.len than the message holds.
        datagram[32..34].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(
            all(&datagram)[..],
            [Err(ParseError::Truncated {
                what: "connector payload",
                ..
            })]
        ));
    }

    #[test]
    fn other_connector_users_are_ignored() {
        let mut datagram = kernel_message(PROC_EVENT_EXEC, &[10, 10], 1, 0);
        datagram[16..20].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(all(&datagram), vec![Ok(Message::Other)]);
    }

    #[test]
    fn netlink_error_message() {
        let mut datagram = Vec::new();
        datagram.extend(36u32.to_ne_bytes());
        datagram.extend(NLMSG_ERROR.to_ne_bytes());
        datagram.extend([0u8; 10]);
        datagram.extend((-1i32).to_ne_bytes());
        datagram.resize(36, 0);
        assert_eq!(
            all(&datagram),
            vec![Ok(Message::NetlinkError { errno: -1 })]
        );
    }

    #[test]
    fn control_message_layout() {
        let msg = control_message(PROC_CN_MCAST_LISTEN, 3);
        assert_eq!(msg.len(), 40);
        assert_eq!(&msg[0..4], &40u32.to_ne_bytes());
        assert_eq!(&msg[4..6], &NLMSG_DONE.to_ne_bytes());
        assert_eq!(&msg[16..20], &CN_IDX_PROC.to_ne_bytes());
        assert_eq!(&msg[20..24], &CN_VAL_PROC.to_ne_bytes());
        assert_eq!(&msg[28..32], &3u32.to_ne_bytes());
        assert_eq!(&msg[32..34], &4u16.to_ne_bytes());
        assert_eq!(&msg[36..40], &PROC_CN_MCAST_LISTEN.to_ne_bytes());
    }
}
