//! Which collector to dial. A trust's fleet runs several collectors on one database, and any
//! of them takes any agent's events (exactly once: the database decides), so an agent may be
//! given several addresses, and each address's name may resolve to several IPs.
//!
//! The dialler keeps to the collector that last answered. When it does not answer, the next
//! one is tried at once, each IP of each name with its own short deadline, so a collector that
//! died costs a refused connection, and one whose machine is gone a few seconds, before the
//! agent is streaming to another (the spool keeps everything unacknowledged, so nothing is
//! lost or stored twice on the way). A fresh agent starts at a random place in the list, so a
//! fleet given the same list spreads across its collectors.

use crate::tls::{TlsError, parse_collector_url};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

/// How long one IP may take to accept a TCP connection, and a name to resolve.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the TLS handshake may take once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The collectors an agent reports to, each `https://HOST:PORT`. In `agent.toml`, one address
/// (`collector = "https://…"`, as before) or several (`collector = ["https://…", "https://…"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collectors(Vec<String>);

impl Collectors {
    /// Checks each address; duplicates are dropped, the order kept.
    pub fn new(urls: impl IntoIterator<Item = String>) -> Result<Self, TlsError> {
        let mut list: Vec<String> = Vec::new();
        for url in urls {
            let url = url.trim().to_owned();
            parse_collector_url(&url)?;
            if !list.contains(&url) {
                list.push(url);
            }
        }
        if list.is_empty() {
            return Err(TlsError::BadUrl(String::new()));
        }
        Ok(Self(list))
    }

    pub fn urls(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One address stays a string in the file, as agents enrolled before wrote it.
impl Serialize for Collectors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Collectors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let urls = match OneOrMany::deserialize(d)? {
            OneOrMany::One(u) => vec![u],
            OneOrMany::Many(v) => v,
        };
        Collectors::new(urls).map_err(|e| match e {
            TlsError::BadUrl(u) if u.is_empty() => {
                serde::de::Error::custom("no collector address given")
            }
            e => serde::de::Error::custom(e),
        })
    }
}

/// A gRPC channel to whichever of `collectors` answers, over `tls`. It connects lazily and
/// reconnects by itself, failing over as the module doc says.
pub fn channel(collectors: &Collectors, tls: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    channel_from(collectors, tls, None)
}

/// As [`channel`], with the local address to connect from (multi-homed devices, load tests).
pub fn channel_from(
    collectors: &Collectors,
    tls: Arc<ClientConfig>,
    local: Option<IpAddr>,
) -> Result<Channel, TlsError> {
    let dialer = Arc::new(Dialer::new(collectors, tls, local)?);
    let connector = tower::service_fn(move |_: http::Uri| {
        let dialer = Arc::clone(&dialer);
        async move {
            let stream = dialer.dial().await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // The URI only names the HTTP/2 authority; the connector above does the real dialling.
    let first = &collectors.urls()[0];
    let endpoint = Endpoint::from_shared(format!("http://{}", authority(first)?))?
        // Each IP has its own deadline below; this one only bounds a long list.
        .connect_timeout(Duration::from_secs(60))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

fn authority(url: &str) -> Result<String, TlsError> {
    let uri: http::Uri = url.parse().map_err(|_| TlsError::BadUrl(url.to_owned()))?;
    uri.authority()
        .map(|a| a.to_string())
        .ok_or_else(|| TlsError::BadUrl(url.to_owned()))
}

struct Target {
    url: String,
    host: String,
    port: u16,
    name: ServerName<'static>,
}

struct Dialer {
    targets: Vec<Target>,
    /// The target to try first: the last that answered, or the one after the last that failed.
    next: AtomicUsize,
    local: Option<IpAddr>,
    tls: tokio_rustls::TlsConnector,
}

impl Dialer {
    fn new(
        collectors: &Collectors,
        tls: Arc<ClientConfig>,
        local: Option<IpAddr>,
    ) -> Result<Self, TlsError> {
        let targets = collectors
            .urls()
            .iter()
            .map(|url| {
                let (host, port, name) = parse_collector_url(url)?;
                Ok(Target {
                    url: url.clone(),
                    host,
                    port,
                    name,
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        let start = rand::random_range(0..targets.len());
        Ok(Self {
            targets,
            next: AtomicUsize::new(start),
            local,
            tls: tokio_rustls::TlsConnector::from(tls),
        })
    }

    async fn dial(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let n = self.targets.len();
        let start = self.next.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let t = &self.targets[idx];
            match self.dial_one(t).await {
                Ok(stream) => {
                    if i > 0 {
                        tracing::warn!(collector = %t.url, "failed over to another collector");
                    }
                    self.next.store(idx, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::debug!(collector = %t.url, error = %e, "collector did not answer");
                    // Were this dial cut short, the next begins past the one that failed.
                    self.next.store((idx + 1) % n, Ordering::Relaxed);
                    failures.push(format!("{}: {e}", t.url));
                }
            }
        }
        Err(std::io::Error::other(failures.join("; ")))
    }

    /// Each IP of the target's name in turn, until one connects and completes TLS.
    async fn dial_one(&self, t: &Target) -> std::io::Result<TlsStream<TcpStream>> {
        let addrs = within(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((t.host.as_str(), t.port)),
        )
        .await?;
        let addrs: Vec<SocketAddr> = addrs
            .filter(|a| self.local.is_none_or(|ip| a.is_ipv4() == ip.is_ipv4()))
            .collect();
        self.dial_addrs(t, &addrs).await
    }

    async fn dial_addrs(
        &self,
        t: &Target,
        addrs: &[SocketAddr],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut last = std::io::Error::other(format!("{} has no usable address", t.host));
        for &addr in addrs {
            let attempt = async {
                let tcp = within(CONNECT_TIMEOUT, connect(addr, self.local)).await?;
                tcp.set_nodelay(true)?;
                within(HANDSHAKE_TIMEOUT, self.tls.connect(t.name.clone(), tcp)).await
            };
            match attempt.await {
                Ok(s) => return Ok(s),
                Err(e) => last = std::io::Error::new(e.kind(), format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

async fn within<T>(
    limit: Duration,
    f: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        )
    })?
}

async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_several_in_agent_toml() {
        #[derive(Deserialize, Serialize)]
        struct T {
            collector: Collectors,
        }
        let one: T = toml::from_str(r#"collector = "https://a.school.lan:7443""#).unwrap();
        assert_eq!(one.collector.urls(), ["https://a.school.lan:7443"]);
        assert_eq!(
            toml::to_string(&one).unwrap().trim(),
            r#"collector = "https://a.school.lan:7443""#,
            "one address is written as before"
        );
        let many: T =
            toml::from_str(r#"collector = ["https://a:7443", "https://b:7443", "https://a:7443"]"#)
                .unwrap();
        assert_eq!(many.collector.urls(), ["https://a:7443", "https://b:7443"]);
        let back: T = toml::from_str(&toml::to_string(&many).unwrap()).unwrap();
        assert_eq!(back.collector, many.collector);
        for (bad, says) in [
            (r#"collector = []"#, "no collector address"),
            (r#"collector = ["https://a:7443", "ftp://b"]"#, "ftp://b"),
            (r#"collector = 7"#, "collector"),
        ] {
            let err = toml::from_str::<T>(bad).err().unwrap().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn dialer(urls: &[String]) -> Dialer {
        let tls = crate::tls::enrolment_config(&"0".repeat(64)).unwrap();
        Dialer::new(&Collectors::new(urls.to_vec()).unwrap(), tls, None).unwrap()
    }

    /// A listener that takes TCP connections and never speaks TLS: enough to see which
    /// address was dialled, and that a dead one was passed over.
    async fn listener() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
        (l, url)
    }

    #[tokio::test]
    async fn a_dead_collector_is_passed_over_for_the_next() {
        let (dead, dead_url) = listener().await;
        drop(dead);
        let (live, live_url) = listener().await;
        let d = dialer(&[dead_url, live_url]);
        d.next.store(0, Ordering::Relaxed);
        let accepted = tokio::spawn(async move { live.accept().await.map(|_| ()) });
        // The live one accepts, then the handshake finds no TLS there: the error names both.
        let err = d.dial().await.err().unwrap().to_string();
        assert!(err.contains("Connection refused"), "{err}");
        tokio::time::timeout(Duration::from_secs(5), accepted)
            .await
            .expect("the second collector was never dialled")
            .unwrap()
            .unwrap();
        assert_eq!(
            d.next.load(Ordering::Relaxed),
            0,
            "past the end it starts again at the first"
        );
    }

    #[tokio::test]
    async fn one_name_with_several_addresses_tries_each() {
        let (live, url) = listener().await;
        let live_addr = live.local_addr().unwrap();
        let dead = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let d = dialer(&[url]);
        let accepted = tokio::spawn(async move { live.accept().await.map(|_| ()) });
        // As a resolver answering with two addresses, the first of them dead.
        let err = d
            .dial_addrs(&d.targets[0], &[dead_addr, live_addr])
            .await
            .err()
            .unwrap()
            .to_string();
        tokio::time::timeout(Duration::from_secs(5), accepted)
            .await
            .expect("the second address was never dialled")
            .unwrap()
            .unwrap();
        // What failed last was the live address's handshake, not the dead one's connect.
        assert!(err.starts_with(&live_addr.to_string()), "{err}");
    }
}
