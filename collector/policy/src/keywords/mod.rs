//! Keyword libraries for search terms and page titles: a library per concern (self-harm,
//! extremism, ...), each a list of words and phrases, matched as whole words in normalised text
//! with one Aho-Corasick automaton for every library at once.
//!
//! False positives are the first complaint about every product in this field, so a term can be
//! switched off by its surroundings in two ways:
//! - an innocent *phrase* sharing a word with it where it occurs ("kill myself laughing",
//!   "want to die" in "die laughing", "suicide squad"): that occurrence does not count, another
//!   occurrence elsewhere in the text still does;
//! - a *topic term* ("cocaine", "suicide") names a subject pupils also study; it only counts when
//!   the text has no *schoolwork* word ("homework", "GCSE", "Macbeth"). Plain `terms` are intent
//!   ("kill myself", "buy weed") and count whatever the text says about homework.

mod english;
pub mod eval;
mod matcher;
pub mod model;
mod normalise;
mod phrase;
#[cfg(test)]
mod tests;
mod textspeak;
pub mod typo;

pub use matcher::Keywords;
pub use normalise::normalise;

use super::{Setting, Severity};
use serde::Deserialize;
use toml::Spanned;

/// Default libraries, for the default policy: a `[[keywords]]` table per concern and a
/// `[keyword_exclusions]` table.
pub const DEFAULT_KEYWORDS: &str = include_str!("../default_keywords.toml");

/// One `[[keywords]]` table: the library of one concern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordLibrarySpec {
    pub id: Spanned<String>,
    /// Shown to staff: what the library is about ("self-harm and suicide").
    pub concern: String,
    /// `"off"` keeps the library in the file but never raises it.
    pub severity: Setting,
    /// Words and phrases that count wherever they appear. A trailing `*` matches any word that
    /// begins with the rest (`suicid*`: suicide, suicidal).
    #[serde(default)]
    pub terms: Vec<Spanned<String>>,
    /// Phrase patterns: words with `{a|b}` alternatives and `..` gaps (see `phrase.rs`). They
    /// count like terms.
    #[serde(default)]
    pub patterns: Vec<Spanned<String>>,
    /// Terms naming a subject also studied at school: they count only when the text has no
    /// schoolwork word (global `keyword_exclusions.schoolwork` or this library's `schoolwork`).
    #[serde(default)]
    pub topic_terms: Vec<Spanned<String>>,
    /// Innocent phrases for this library only, like `keyword_exclusions.phrases`.
    #[serde(default)]
    pub exclusions: Vec<Spanned<String>>,
    /// Schoolwork words for this library only.
    #[serde(default)]
    pub schoolwork: Vec<Spanned<String>>,
    /// The recommended response for this library's alerts, instead of the severity's row of
    /// `[responses]`: a child reaching out for help is not to be sanctioned.
    #[serde(default)]
    pub response: Option<String>,
    /// The same concern in another language (`[[keywords.languages]]` after the library):
    /// terms and patterns that count like the library's own, with the language named in the
    /// alert.
    #[serde(default)]
    pub languages: Vec<LanguageSpec>,
    /// Terms and patterns for an age band only (`[[keywords.bands]]` after the library): they
    /// count for a person in one of the band's user groups, as well as the library's own, which
    /// count for everyone. A band only adds alerts.
    #[serde(default)]
    pub bands: Vec<BandSpec>,
}

/// One age band's extra terms for a library: what is a concern at seven and not at fifteen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandSpec {
    /// Shown in alerts: "primary".
    pub name: Spanned<String>,
    /// The `[[groups.users]]` groups the band is for: ["eyfs", "ks1", "ks2"].
    pub users: Vec<Spanned<String>>,
    #[serde(default)]
    pub terms: Vec<Spanned<String>>,
    #[serde(default)]
    pub patterns: Vec<Spanned<String>>,
    /// Silenced by schoolwork words, as the library's `topic_terms` ("sex" in "RSE year 6").
    #[serde(default)]
    pub topic_terms: Vec<Spanned<String>>,
}

/// One language's terms for a library.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageSpec {
    /// A language tag: "pl", "ur", "ur-Latn" (romanised Urdu), "cy" ...
    pub language: Spanned<String>,
    /// False until a native speaker has reviewed the list; alerts say so.
    #[serde(default)]
    pub reviewed: bool,
    #[serde(default)]
    pub terms: Vec<Spanned<String>>,
    #[serde(default)]
    pub patterns: Vec<Spanned<String>>,
    #[serde(default)]
    pub topic_terms: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclusions: Vec<Spanned<String>>,
}

/// The `[keyword_exclusions]` table, for every library.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordExclusionsSpec {
    /// Known innocent phrases: an occurrence of a term that shares a word with one of them does
    /// not count.
    #[serde(default)]
    pub phrases: Vec<Spanned<String>>,
    /// Words that mark a text as schoolwork, which silences topic terms.
    #[serde(default)]
    pub schoolwork: Vec<Spanned<String>>,
}

/// A library that matched a text: at most one per library and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordHit {
    pub library: String,
    pub concern: String,
    pub severity: Severity,
    /// The library's own recommended response, if it has one.
    pub response: Option<String>,
    /// The term as written in the policy (`suicid*`).
    pub term: String,
    /// The words of the text that matched it, normalised (`suicidal`).
    pub found: String,
    /// The language of the term when it is not the library's own (English): "pl", or "pl, not
    /// yet reviewed by native speakers".
    pub language: Option<String>,
    /// Set when the classifier (`model.rs`), not a term, found the concern: its probability in
    /// percent. `term` is then "model" and `found` the features that weighed most.
    pub model_percent: Option<u8>,
    /// The age band whose term matched, when it was not one of the library's own: "primary".
    pub band: Option<String>,
}

impl KeywordHit {
    /// For an alert's `matched` field: the term and the words, never the whole text.
    pub fn matched(&self) -> String {
        if let Some(p) = self.model_percent {
            return format!(
                "keyword model ({p}%) on {} in {:?}",
                self.found, self.library
            );
        }
        let language = self
            .language
            .as_ref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default();
        let band = self
            .band
            .as_ref()
            .map(|b| format!(" [age band: {b}]"))
            .unwrap_or_default();
        format!(
            "keyword {:?} ({:?}) in {:?}{language}{band}",
            self.term, self.found, self.library
        )
    }
}
