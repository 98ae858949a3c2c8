//! Kernel device events ("uevents") from a `NETLINK_KOBJECT_UEVENT` socket.
//!
//! The kernel multicasts every device add/remove/change to group 1 of this protocol as one
//! datagram: `ACTION@DEVPATH\0KEY=VALUE\0KEY=VALUE\0...`. udev re-broadcasts its own processed
//! copy to group 2 in a binary format that starts with `libudev\0`; we join only group 1 and
//! reject that format anyway.
//!
//! Anyone on the machine can *unicast* a datagram to our port id, and it would look exactly like
//! a kernel event. Only the sender's port id tells them apart: the kernel's is 0 and no user
//! space socket can have it. [`UeventSocket::recv`] therefore drops everything else, so a local
//! user cannot invent (or hide behind) a USB device.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netlink_sys::protocols::NETLINK_KOBJECT_UEVENT;
use netlink_sys::{Socket, SocketAddr};

/// The kernel's multicast group (udev's re-broadcast is group 2, which we never join).
const KERNEL_GROUP: u32 = 1;

/// Receive buffer asked for. Plugging in one USB stick queues a dozen or two uevents of under
/// 1 KiB each (device, interfaces, SCSI host, target, disk, partitions, bdi...); a hub full of
/// devices, a few hundred. 1 MiB absorbs that while the source reads sysfs.
const RCVBUF_BYTES: usize = 1 << 20;

/// The magic that starts udev's own (binary) netlink messages.
const LIBUDEV_MAGIC: &[u8] = b"libudev\0";

/// Why the uevent socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open a NETLINK_KOBJECT_UEVENT socket: {0}")]
    Open(io::Error),
    #[error("cannot join the kernel uevent multicast group: {0}")]
    Bind(io::Error),
    #[error("cannot read the uevent socket's address: {0}")]
    Address(io::Error),
}

/// A socket subscribed to the kernel's uevents.
pub struct UeventSocket {
    socket: Socket,
    port: u32,
    rcvbuf: usize,
    /// Datagrams dropped because user space, not the kernel, sent them (shared so that it can
    /// be read while another thread owns the socket).
    foreign: Arc<AtomicU64>,
}

/// One datagram as received from the kernel.
#[derive(Debug)]
pub struct Received<'b> {
    pub bytes: &'b [u8],
    /// The datagram was larger than the buffer and was cut (`MSG_TRUNC` semantics).
    pub truncated: bool,
}

impl UeventSocket {
    pub fn open() -> Result<Self, OpenError> {
        let mut socket = Socket::new(NETLINK_KOBJECT_UEVENT).map_err(OpenError::Open)?;
        // Port 0 asks the kernel to assign us a unique port id; the group is a bit mask.
        socket
            .bind(&SocketAddr::new(0, 1 << (KERNEL_GROUP - 1)))
            .map_err(OpenError::Bind)?;
        let mut addr = SocketAddr::new(0, 0);
        socket.get_address(&mut addr).map_err(OpenError::Address)?;
        let rcvbuf = enlarge_receive_buffer(&socket);
        Ok(Self {
            socket,
            port: addr.port_number(),
            rcvbuf,
            foreign: Arc::default(),
        })
    }

    /// Our port id: where user space would have to send to forge an event (tests do).
    pub fn port_id(&self) -> u32 {
        self.port
    }

    /// Receive buffer size the kernel granted, in bytes.
    pub fn receive_buffer(&self) -> usize {
        self.rcvbuf
    }

    /// How many datagrams from user space have been dropped so far; stays live after the
    /// socket moves to another thread.
    pub fn foreign_dropped(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.foreign)
    }

    /// Blocks at most this long in [`recv`](Self::recv) (`None`: forever). The source wakes up
    /// to finish attach events whose block device never came, and to notice shutdown.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // A zero timeval means "block forever" to the kernel.
        let d = timeout.unwrap_or_default();
        let tv = nix::sys::time::TimeVal::new(d.as_secs() as _, d.subsec_micros() as _);
        nix::sys::socket::setsockopt(&self.socket, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(io::Error::from)
    }

    /// The next datagram sent by the kernel. Datagrams from any other sender are counted,
    /// logged and skipped. A timeout is `ErrorKind::WouldBlock`/`TimedOut`; a kernel buffer
    /// overrun is `ENOBUFS` (events were lost).
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Received<'b>> {
        loop {
            // MSG_TRUNC: the kernel reports the datagram's full length, so a cut one is known.
            let (len, from) = self
                .socket
                .recv_from(&mut &mut buf[..], nix::libc::MSG_TRUNC)?;
            if from.port_number() != 0 {
                let dropped = self.foreign.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    sender_port = from.port_number(),
                    dropped,
                    "uevent from user space, not the kernel: ignored"
                );
                continue;
            }
            let truncated = len > buf.len();
            return Ok(Received {
                bytes: &buf[..len.min(buf.len())],
                truncated,
            });
        }
    }
}

/// Past `net.core.rmem_max` when root (SO_RCVBUFFORCE), else up to it.
fn enlarge_receive_buffer(socket: &Socket) -> usize {
    // The kernel doubles the value for bookkeeping; ask for half.
    let request = RCVBUF_BYTES / 2;
    let forced =
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &request);
    if forced.is_err()
        && let Err(err) = socket.set_rx_buf_sz(request)
    {
        tracing::debug!(%err, "could not enlarge the uevent receive buffer");
    }
    socket.get_rx_buf_sz().unwrap_or(0)
}

/// What the kernel did to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Change,
    Move,
    Online,
    Offline,
    Bind,
    Unbind,
    /// An action this code does not know (kept, so newer kernels do not become errors).
    Other(String),
}

impl Action {
    fn from_str(s: &str) -> Self {
        match s {
            "add" => Self::Add,
            "remove" => Self::Remove,
            "change" => Self::Change,
            "move" => Self::Move,
            "online" => Self::Online,
            "offline" => Self::Offline,
            "bind" => Self::Bind,
            "unbind" => Self::Unbind,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Change => "change",
            Self::Move => "move",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Bind => "bind",
            Self::Unbind => "unbind",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: Action,
    /// e.g. "/devices/pci0000:00/0000:00:14.0/usb1/1-2" (relative to the sysfs mount).
    pub devpath: String,
    /// KEY=VALUE pairs in the order sent (ACTION, DEVPATH, SUBSYSTEM, ..., SEQNUM).
    pub vars: Vec<(String, String)>,
}

impl Uevent {
    /// The value of the first `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn subsystem(&self) -> Option<&str> {
        self.get("SUBSYSTEM")
    }

    pub fn devtype(&self) -> Option<&str> {
        self.get("DEVTYPE")
    }

    pub fn seqnum(&self) -> Option<u64> {
        self.get("SEQNUM")?.parse().ok()
    }
}

/// A datagram that is not a well-formed kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty uevent datagram")]
    Empty,
    #[error("udev's binary \"libudev\" message, not a kernel uevent")]
    Libudev,
    #[error("uevent header not NUL-terminated within the {len}-byte datagram (truncated?)")]
    UnterminatedHeader { len: usize },
    #[error("uevent header {header:?} is not ACTION@/DEVPATH")]
    BadHeader { header: String },
    #[error("uevent variable at byte {offset} is not NUL-terminated (truncated datagram)")]
    Truncated { offset: usize },
    #[error("uevent variable at byte {offset} has no '=': {text:?}")]
    BadVariable { offset: usize, text: String },
    #[error("uevent {key} {value:?} contradicts the header's {header:?}")]
    Inconsistent {
        key: &'static str,
        value: String,
        header: String,
    },
}

/// Longest text quoted back in an error message.
const QUOTE_MAX: usize = 64;

fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_MAX)]).into_owned()
}

/// Parses one datagram in the kernel's format. Values are decoded leniently (invalid UTF-8
/// becomes U+FFFD): the kernel writes ASCII, and one odd byte should not cost the event.
pub fn parse(datagram: &[u8]) -> Result<Uevent, ParseError> {
    if datagram.is_empty() {
        return Err(ParseError::Empty);
    }
    if datagram.starts_with(LIBUDEV_MAGIC) {
        return Err(ParseError::Libudev);
    }
    let header_end =
        datagram
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::UnterminatedHeader {
                len: datagram.len(),
            })?;
    let header = &datagram[..header_end];
    let bad_header = || ParseError::BadHeader {
        header: quote(header),
    };
    let at = header
        .iter()
        .position(|&b| b == b'@')
        .ok_or_else(bad_header)?;
    let (action, devpath) = (&header[..at], &header[at + 1..]);
    if action.is_empty() || !action.iter().all(u8::is_ascii_lowercase) || !devpath.starts_with(b"/")
    {
        return Err(bad_header());
    }
    let action = Action::from_str(&String::from_utf8_lossy(action));
    let devpath = String::from_utf8_lossy(devpath).into_owned();

    let mut vars = Vec::new();
    let mut offset = header_end + 1;
    while offset < datagram.len() {
        let rest = &datagram[offset..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Truncated { offset })?;
        let field = &rest[..len];
        // Tolerate empty strings (padding): the kernel does not send them, but they are harmless.
        if !field.is_empty() {
            let eq = field
                .iter()
                .position(|&b| b == b'=')
                .filter(|&eq| eq > 0)
                .ok_or_else(|| ParseError::BadVariable {
                    offset,
                    text: quote(field),
                })?;
            vars.push((
                String::from_utf8_lossy(&field[..eq]).into_owned(),
                String::from_utf8_lossy(&field[eq + 1..]).into_owned(),
            ));
        }
        offset += len + 1;
    }

    let event = Uevent {
        action,
        devpath,
        vars,
    };
    // The header and the variables are written from the same values by the kernel; a mismatch
    // means the datagram was not built by it.
    if let Some(value) = event.get("ACTION")
        && value != event.action.as_str()
    {
        return Err(ParseError::Inconsistent {
            key: "ACTION",
            value: quote(value.as_bytes()),
            header: quote(event.action.as_str().as_bytes()),
        });
    }
    if let Some(value) = event.get("DEVPATH")
        && value != event.devpath
    {
        return Err(ParseError::Inconsistent {
            key: "DEVPATH",
            value: quote(value.as_bytes()),
            header: quote(event.devpath.as_bytes()),
        });
    }
    Ok(event)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A datagram exactly as the kernel's `kobject_uevent_env` builds it: the header, then
    /// every `KEY=VALUE`, each NUL-terminated.
    pub(crate) fn kernel_datagram(action: &str, devpath: &str, vars: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!("{action}@{devpath}\0").into_bytes();
        out.extend(format!("ACTION={action}\0DEVPATH={devpath}\0").bytes());
        for (k, v) in vars {
            out.extend(format!("{k}={v}\0").bytes());
        }
        out
    }

    #[test]
    fn parses_a_usb_device_add() {
        let d = kernel_datagram(
            "add",
            "/devices/pci0000:00/0000:00:14.0/usb1/1-2",
            &[
                ("SUBSYSTEM", "usb"),
                ("MAJOR", "189"),
                ("MINOR", "4"),
                ("DEVNAME", "bus/usb/001/005"),
                ("DEVTYPE", "usb_device"),
                ("PRODUCT", "781/5581/100"),
                ("TYPE", "0/0/0"),
                ("BUSNUM", "001"),
                ("DEVNUM", "005"),
                ("SEQNUM", "4711"),
            ],
        );
        let e = parse(&d).unwrap();
        assert_eq!(e.action, Action::Add);
        assert_eq!(e.devpath, "/devices/pci0000:00/0000:00:14.0/usb1/1-2");
        assert_eq!(e.subsystem(), Some("usb"));
        assert_eq!(e.devtype(), Some("usb_device"));
        assert_eq!(e.get("PRODUCT"), Some("781/5581/100"));
        assert_eq!(e.seqnum(), Some(4711));
        assert_eq!(e.vars.len(), 12);
        assert_eq!(e.vars[0], ("ACTION".into(), "add".into()));
    }

    #[test]
    fn rejects_libudev_messages() {
        // udev's monitor header: "libudev\0", magic 0xfeedcafe (network order), sizes...
        let mut d = b"libudev\0".to_vec();
        d.extend(0xfeed_cafe_u32.to_be_bytes());
        d.extend(40u32.to_ne_bytes());
        d.extend([0u8; 28]);
        d.extend(b"ACTION=add\0SUBSYSTEM=usb\0");
        assert_eq!(parse(&d), Err(ParseError::Libudev));
    }

    #[test]
    fn malformed_input_is_a_named_error() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(
            parse(b"add@/devices/x"),
            Err(ParseError::UnterminatedHeader { len: 14 })
        );
        assert!(matches!(
            parse(b"add/devices/x\0"),
            Err(ParseError::BadHeader { .. })
        ));
        assert!(matches!(
            parse(b"@/devices/x\0"),
            Err(ParseError::BadHeader { .. })
        ));
        assert!(matches!(
            parse(b"add@devices/x\0"),
            Err(ParseError::BadHeader { .. })
        ));
        assert_eq!(
            parse(b"add@/d\0ACTION=add\0NOEQUALS\0")
                .unwrap_err()
                .to_string(),
            "uevent variable at byte 18 has no '=': \"NOEQUALS\""
        );
        assert!(matches!(
            parse(b"add@/d\0=value\0"),
            Err(ParseError::BadVariable { offset: 7, .. })
        ));
        assert!(matches!(
            parse(b"add@/d\0ACTION=remove\0"),
            Err(ParseError::Inconsistent { key: "ACTION", .. })
        ));
        assert!(matches!(
            parse(b"add@/d\0DEVPATH=/e\0"),
            Err(ParseError::Inconsistent { key: "DEVPATH", .. })
        ));
    }

    #[test]
    fn contradictions_quote_at_most_quote_max_bytes() {
        // Found by fuzzing (fuzz/corpus/uevent/crash-inconsistent-long-devpath): a long DEVPATH
        // that contradicts a long header was quoted whole, twice, into the error (and the log).
        let long = format!("/devices/{}", "x".repeat(8000));
        let d = format!("add@{long}\0DEVPATH={long}y\0ACTION=add\0");
        let err = parse(d.as_bytes()).unwrap_err();
        assert!(matches!(
            err,
            ParseError::Inconsistent { key: "DEVPATH", .. }
        ));
        assert!(
            err.to_string().len() < 4 * QUOTE_MAX,
            "{} bytes",
            err.to_string().len()
        );
        let d = format!("add@/d\0ACTION={}\0", "z".repeat(8000));
        assert!(parse(d.as_bytes()).unwrap_err().to_string().len() < 4 * QUOTE_MAX);
    }

    #[test]
    fn every_truncation_of_a_real_datagram_is_an_error_or_a_prefix_never_a_panic() {
        let full = kernel_datagram(
            "add",
            "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0",
            &[
                ("SUBSYSTEM", "usb"),
                ("DEVTYPE", "usb_interface"),
                ("PRODUCT", "781/5581/100"),
                ("INTERFACE", "8/6/80"),
                ("SEQNUM", "4712"),
            ],
        );
        let complete = parse(&full).unwrap();
        for cut in 0..full.len() {
            match parse(&full[..cut]) {
                // A cut exactly after a NUL is indistinguishable from a shorter message: it
                // parses, with fewer variables, never with a wrong one.
                Ok(e) => {
                    assert_eq!(full[cut - 1], 0, "cut {cut}");
                    assert!(complete.vars.starts_with(&e.vars), "cut {cut}");
                }
                Err(
                    ParseError::Empty
                    | ParseError::UnterminatedHeader { .. }
                    | ParseError::Truncated { .. },
                ) => {}
                Err(other) => panic!("cut {cut}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let junk: [&[u8]; 6] = [
            b"\0\0\0\0",
            b"@\0",
            b"add@/\xff\xfe\0KEY=\xff\0",
            b"\xffadd@/x\0",
            &[0xAA; 300],
            b"add@/x\0\0\0\0",
        ];
        for d in junk {
            let _ = parse(d);
        }
        let e = parse(b"add@/x\0KEY=\xff\0").unwrap();
        assert_eq!(e.get("KEY"), Some("\u{fffd}"));
    }

    /// Live: the kernel's own uevent is received; a forged one unicast to our port, queued
    /// before it, is not.
    #[test]
    fn live_socket_receives_kernel_uevents_and_drops_forged_ones() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test writes to /sys/class/mem/null/uevent: run it as root"
        );
        let socket = UeventSocket::open().unwrap();
        assert_ne!(socket.port_id(), 0);
        let foreign = socket.foreign_dropped();

        let mut forger = Socket::new(NETLINK_KOBJECT_UEVENT).unwrap();
        let forger_addr = forger.bind_auto().unwrap();
        let forged = kernel_datagram(
            "add",
            "/devices/pci0000:00/0000:00:14.0/usb1/1-9",
            &[
                ("SUBSYSTEM", "usb"),
                ("DEVTYPE", "usb_device"),
                ("SEQNUM", "1"),
            ],
        );
        forger
            .send_to(&forged, &SocketAddr::new(socket.port_id(), 0), 0)
            .unwrap();

        let uuid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            rand::random::<u64>() >> 16
        );
        std::fs::write("/sys/class/mem/null/uevent", format!("change {uuid}")).unwrap();

        socket.set_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let kernel = loop {
            let received = socket
                .recv(&mut buf)
                .expect("the kernel's uevent within 5 s");
            assert!(!received.truncated);
            let event = parse(received.bytes).unwrap();
            assert!(
                !event.devpath.contains("usb1/1-9"),
                "forged uevent accepted"
            );
            if event.get("SYNTH_UUID") == Some(uuid.as_str()) {
                break event;
            }
        };
        assert_eq!(kernel.action, Action::Change);
        assert_eq!(kernel.devpath, "/devices/virtual/mem/null");
        assert_eq!(kernel.subsystem(), Some("mem"));
        assert_eq!(kernel.get("DEVNAME"), Some("null"));
        assert_eq!(foreign.load(Ordering::Relaxed), 1);
        println!(
            "forger port {}, our port {}, kernel uevent: {:?}",
            forger_addr.port_number(),
            socket.port_id(),
            kernel
        );

        // The receive timeout holds: with nothing more to read, recv returns within it.
        socket.set_timeout(Some(Duration::from_millis(50))).unwrap();
        let start = std::time::Instant::now();
        loop {
            match socket.recv(&mut buf) {
                Ok(_) => assert!(start.elapsed() < Duration::from_secs(5), "uevent storm"),
                Err(err) => {
                    assert!(
                        matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ),
                        "{err}"
                    );
                    break;
                }
            }
        }
    }
}
