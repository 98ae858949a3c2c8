//! A web visit as a device reports it, checked once for every way it can arrive: the browser
//! extension's messages (through the agent's native-messaging host, or straight to the
//! collector from a Chromebook), URL cleaning and the search terms in a search engine's URL.
//!
//! Everything here reads text a pupil's browser wrote: it is bounded and typed before it
//! becomes an event.

#![forbid(unsafe_code)]

pub mod extension;
pub mod search;
pub mod url_clean;
