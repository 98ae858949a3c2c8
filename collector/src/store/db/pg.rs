//! The PostgreSQL side of the facade: connecting (TLS on the workspace's rustls), statement
//! text and cache, and values to and from the wire.

use super::Result;
use super::value::{Value, ValueRef};
use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Statements kept prepared per connection; the store has a few hundred texts.
const STATEMENT_CACHE: usize = 512;
/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may leave what was sent unacknowledged before the connection is given
/// up (unless the URL sets `tcp_user_timeout`; the keepalive timings follow unless it sets
/// `keepalives_interval`).
const UNANSWERED: Duration = Duration::from_secs(20);

/// TLS to the database, with the roots to trust (a CA file, or the system's).
#[derive(Clone)]
pub(in crate::store) struct PgTls(tokio_postgres_rustls::MakeRustlsConnect);

impl PgTls {
    pub(in crate::store) fn new(ca_file: Option<&Path>) -> std::result::Result<Self, String> {
        let roots = crate::pki::trust_roots(ca_file)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }
}

pub(in crate::store) struct Session {
    /// For a test's second connection to the same database.
    #[cfg(test)]
    pub(super) target: (String, PgTls),
    /// Taken only by Drop, which must close the connection off any async thread too.
    client: RefCell<Option<postgres::Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

/// Runs `f`, which blocks on the `postgres` client's own runtime, where that is allowed. The
/// store is meant to be called from blocking threads, but a call from an async task (start-up
/// code, a test) must not panic the task: on a multi-threaded runtime the worker is handed off
/// for the call; on a single-threaded one the call runs on a thread of its own.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

impl Session {
    pub(super) fn connect(url: &str, tls: &PgTls) -> Result<Self> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("invigilator-collector");
        }
        // A server that stops answering (a network partition, a half-open connection) fails
        // the call in seconds rather than after the kernel's quarter of an hour of
        // retransmissions: the batch is refused and resent, and the committer moves on.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(UNANSWERED);
        }
        if config.get_keepalives_interval().is_none() {
            config
                .keepalives_idle(UNANSWERED / 2)
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3);
        }
        let make = tls.0.clone();
        let client = off_runtime(move || config.connect(make))?;
        Ok(Self {
            #[cfg(test)]
            target: (url.to_owned(), tls.clone()),
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
        })
    }

    /// Runs `f` on the client, off any async thread.
    fn with<R: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> R + Send) -> R {
        let mut client = self.client.borrow_mut();
        let client = client.as_mut().expect("the client is taken only on drop");
        off_runtime(move || f(client))
    }

    /// Waits up to `timeout` for a notification on a channel this session listens to; true
    /// when one (or more) came.
    pub(super) fn notified(&self, timeout: Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        Ok(self.with(|c| {
            let mut notes = c.notifications();
            let got = notes.timeout_iter(timeout).next()?.is_some();
            // Those already queued are the same wake-up.
            while notes.iter().next()?.is_some() {}
            Ok::<_, postgres::Error>(got)
        })?)
    }

    pub(super) fn broken(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(|c| c.is_closed())
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.with(|c| c.batch_execute(sql))?)
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(stmt) = self.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let text = translate(sql);
        let stmt = self.with(|c| c.prepare(&text))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub(super) fn execute(
        &self,
        stmt: &postgres::Statement,
        values: &[Value<'_>],
    ) -> Result<usize> {
        let params = refs(values);
        let n = self.with(|c| c.execute(stmt, &params))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(
        &self,
        stmt: &postgres::Statement,
        values: &[Value<'_>],
    ) -> Result<Vec<postgres::Row>> {
        let params = refs(values);
        Ok(self.with(|c| c.query(stmt, &params))?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing blocks on the client's runtime as every call does.
        if let Some(client) = self.client.get_mut().take() {
            off_runtime(move || drop(client));
        }
    }
}

fn refs<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// `?N` (and a bare `?`) to `$N`, outside quotes and comments. The store writes SQLite's
/// placeholders; PostgreSQL's `?` is an operator the store never uses.
///
/// And the column `user` (events, alerts, sessions, visit reports: a school's SQLite files
/// have it by that name) quoted: bare, PostgreSQL reads it as CURRENT_USER, a silent wrong
/// answer rather than an error.
pub(super) fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next_bare = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    next_bare += 1;
                    out.push_str(&next_bare.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(d) = chars
                    .peek()
                    .filter(|d| d.is_ascii_alphanumeric() || **d == '_')
                {
                    word.push(*d);
                    chars.next();
                }
                if word.eq_ignore_ascii_case("user") {
                    out.push_str("\"user\"");
                } else {
                    out.push_str(&word);
                }
            }
            c if c.is_ascii_digit() => {
                // A number's letters (1e5) are not a word.
                out.push(c);
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_alphanumeric()) {
                    out.push(*d);
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn mismatch(v: &Value<'_>, ty: &Type) -> Box<dyn std::error::Error + Sync + Send> {
    format!("cannot send {v:?} as {ty}").into()
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)
                    .map_err(|_| mismatch(self, ty))?
                    .to_sql(ty, out),
                Type::INT2 => i16::try_from(i)
                    .map_err(|_| mismatch(self, ty))?
                    .to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(mismatch(self, ty)),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                _ => Err(mismatch(self, ty)),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Value::Ints(a) => match *ty {
                Type::INT8_ARRAY => a.to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Value::Texts(a) => match *ty {
                Type::TEXT_ARRAY => a.to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
            Value::Blobs(a) => match *ty {
                Type::BYTEA_ARRAY => a.to_sql(ty, out),
                _ => Err(mismatch(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for ValueRef<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => ValueRef::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => ValueRef::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => ValueRef::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => ValueRef::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => ValueRef::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => ValueRef::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => ValueRef::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => ValueRef::Blob(raw),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                ValueRef::Text(raw)
            }
            _ => return Err(format!("unsupported column type {ty}").into()),
        })
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(ValueRef::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A NUMERIC (what `sum` of a bigint gives) as an integer when it has no fraction, else a
/// real. Binary form: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(
    raw: &[u8],
) -> std::result::Result<ValueRef<'static>, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value cut short".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    if sign == 0xC000 {
        return Ok(ValueRef::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut int: i128 = 0;
    let mut real: f64 = 0.0;
    let mut whole = true;
    for i in 0..ndigits {
        let digit = i128::from(word(4 + i)?);
        let power = weight - i as i32;
        real += digit as f64 * 10_000f64.powi(power);
        if power < 0 {
            whole &= digit == 0;
        } else {
            int = int.saturating_add(digit.saturating_mul(10_000i128.saturating_pow(power as u32)));
        }
    }
    let int = if negative { -int } else { int };
    Ok(match i64::try_from(int) {
        Ok(i) if whole => ValueRef::Int(i),
        _ => ValueRef::Real(if negative { -real } else { real }),
    })
}

/// The server's own words where it sent any (message, detail, hint), else the client's.
pub(super) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("PostgreSQL: {}", db.message());
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            // The client's message often repeats its cause's: each is added once.
            let mut s = format!("PostgreSQL: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !s.contains(&cause_text) {
                    s.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_column_is_quoted_and_nothing_else() {
        assert_eq!(
            translate("SELECT user, a.user, users, user_id FROM t WHERE 'user' = ?1"),
            "SELECT \"user\", a.\"user\", users, user_id FROM t WHERE 'user' = $1"
        );
    }

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            translate(
                "SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?\" = ?10 -- ?3\n AND e = ?"
            ),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?\" = $10 -- ?3\n AND e = $1"
        );
    }

    #[test]
    fn numerics_decode_to_integers_or_reals() {
        let words = |w: &[u16]| w.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<_>>();
        // ndigits, weight, sign, dscale, then base-10000 digits.
        let big = words(&[2, 1, 0, 0, 1234, 5678]);
        assert_eq!(numeric(&big).unwrap(), ValueRef::Int(12_345_678));
        let fraction = words(&[2, 0, 0x4000, 1, 1, 5000]);
        assert_eq!(numeric(&fraction).unwrap(), ValueRef::Real(-1.5));
        let zero = words(&[0, 0, 0, 0]);
        assert_eq!(numeric(&zero).unwrap(), ValueRef::Int(0));
        assert!(numeric(&words(&[2, 1, 0])).is_err());
    }
}
