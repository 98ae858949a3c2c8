//! The D-Bus connection to logind: subscriptions, calls, and who may send us signals.

use super::*;

/// One connection's worth of following logind.
pub(super) struct Bus {
    pub(super) conn: Connection,
    pub(super) name: String,
    /// The unique name that owns org.freedesktop.login1: the only sender believed.
    pub(super) owner: String,
}

impl Bus {
    pub(super) fn call_error(&self, call: &'static str, source: zbus::Error) -> SessionError {
        SessionError::Call {
            bus: self.name.clone(),
            call,
            source,
        }
    }

    /// Every open session with its details; sessions that end while being read are left out.
    pub(super) async fn list_sessions(
        &self,
    ) -> Result<Vec<(OwnedObjectPath, SessionInfo)>, SessionError> {
        let listing: Vec<(String, u32, String, String, OwnedObjectPath)> = self
            .conn
            .call_method(
                Some(LOGIND),
                MANAGER_PATH,
                Some(MANAGER_IFACE),
                "ListSessions",
                &(),
            )
            .await
            .and_then(|reply| reply.body().deserialize())
            .map_err(|e| self.call_error("ListSessions", e))?;
        let mut out = Vec::with_capacity(listing.len());
        for (id, uid, user, seat, path) in listing {
            match self.session_info(&path, &id).await {
                Ok(info) => out.push((path, info)),
                Err(err) => tracing::debug!(
                    "session source: session {id} ({user}, uid {uid}, seat {seat:?}) not read: {err}"
                ),
            }
        }
        Ok(out)
    }

    pub(super) async fn session_info(
        &self,
        path: &OwnedObjectPath,
        id: &str,
    ) -> Result<SessionInfo, zbus::Error> {
        let props: HashMap<String, OwnedValue> = self
            .conn
            .call_method(
                Some(LOGIND),
                path,
                Some(PROPERTIES_IFACE),
                "GetAll",
                &SESSION_IFACE,
            )
            .await?
            .body()
            .deserialize()?;
        Ok(SessionInfo::from_properties(id, &props))
    }

    pub(super) async fn get_property(
        &self,
        path: &OwnedObjectPath,
        property: &str,
    ) -> Result<OwnedValue, zbus::Error> {
        let value: OwnedValue = self
            .conn
            .call_method(
                Some(LOGIND),
                path,
                Some(PROPERTIES_IFACE),
                "Get",
                &(SESSION_IFACE, property),
            )
            .await?
            .body()
            .deserialize()?;
        Ok(value)
    }
}
