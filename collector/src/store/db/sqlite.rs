//! The SQLite side of the facade: values to and from rusqlite's.

use super::value::{Value, ValueRef};
use rusqlite::types::{ToSqlOutput, ValueRef as SqlRef};

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => SqlRef::Null,
            Value::Int(i) => SqlRef::Integer(i),
            Value::Real(f) => SqlRef::Real(f),
            Value::Text(t) => SqlRef::Text(t.as_bytes()),
            Value::Blob(b) => SqlRef::Blob(b),
            Value::Ints(_) | Value::Texts(_) | Value::Blobs(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "an array parameter is for PostgreSQL only".into(),
                ));
            }
        }))
    }
}

pub(super) fn params<'a>(values: &'a [Value<'a>]) -> rusqlite::ParamsFromIter<&'a [Value<'a>]> {
    rusqlite::params_from_iter(values)
}

pub(super) fn value(v: SqlRef<'_>) -> ValueRef<'_> {
    match v {
        SqlRef::Null => ValueRef::Null,
        SqlRef::Integer(i) => ValueRef::Int(i),
        SqlRef::Real(f) => ValueRef::Real(f),
        SqlRef::Text(t) => ValueRef::Text(t),
        SqlRef::Blob(b) => ValueRef::Blob(b),
    }
}
