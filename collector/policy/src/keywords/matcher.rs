//! The compiled libraries: every term, innocent phrase and schoolwork word of every library in
//! one automaton, so a text is read once whatever the number of libraries.

use super::english;
use super::model::Model;
use super::normalise::normalise;
use super::phrase::{Phrase, Words};
use super::typo::Vocabulary;
use super::{BandSpec, KeywordExclusionsSpec, KeywordHit, KeywordLibrarySpec, LanguageSpec};
use crate::{Severity, SpecError};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
// foldhash: these maps are read at every word of every text, where SipHash's cost shows.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use toml::Spanned;

/// What a pattern of the automaton stands for; one pattern can have several roles (the same
/// word in two libraries).
#[derive(Debug, Clone, Copy)]
enum Role {
    Term {
        library: usize,
        topic: bool,
        written: usize,
    },
    /// An innocent phrase, for one library or (None) all.
    Phrase(Option<usize>),
    Schoolwork(Option<usize>),
}

#[derive(Debug)]
struct Library {
    id: String,
    concern: String,
    severity: Severity,
    response: Option<String>,
}

/// Compiled keyword libraries; cheap to share, `scan` takes `&self`.
#[derive(Debug, Default)]
pub struct Keywords {
    libraries: Vec<Library>,
    /// None when no library is on.
    automaton: Option<AhoCorasick>,
    /// By pattern id.
    roles: Vec<Vec<Role>>,
    /// Terms as written, for hits.
    written: Vec<Written>,
    /// Phrase patterns: (library, written, pattern).
    patterns: Vec<(usize, usize, Phrase)>,
    /// Which patterns can begin with a word: most words begin none, so most positions of a
    /// text cost one lookup.
    first_word: HashMap<String, Vec<usize>>,
    /// Patterns that can begin with an open word (prefix), with the prefix.
    first_prefix: Vec<(String, usize)>,
    /// Patterns by their anchor words ([`Phrase::anchor_words`]): only those whose anchor is
    /// in a text are tried on it.
    anchors: HashMap<String, Vec<usize>>,
    /// Patterns without an anchor, tried on every text.
    unanchored: Vec<usize>,
    /// The second signal, with its threshold, when the policy has it on.
    model: Option<(std::sync::Arc<Model>, f32)>,
    /// The longer words of the English terms and patterns, that misspellings are read as.
    vocabulary: Vocabulary,
    /// Age bands, by the index terms written for them carry.
    bands: Vec<Band>,
}

/// An age band: its name and the user groups it is for.
#[derive(Debug)]
struct Band {
    name: String,
    users: Vec<String>,
}

impl Band {
    fn covers(&self, group: Option<&str>) -> bool {
        group.is_some_and(|g| self.users.iter().any(|u| u == g))
    }
}

/// The automaton being built: patterns by text, each with its roles.
#[derive(Default)]
struct Patterns {
    index: HashMap<String, usize>,
    texts: Vec<String>,
    roles: Vec<Vec<Role>>,
}

impl Patterns {
    fn add(&mut self, pattern: String, role: Role) {
        let id = *self.index.entry(pattern.clone()).or_insert_with(|| {
            self.texts.push(pattern);
            self.roles.push(Vec::new());
            self.texts.len() - 1
        });
        self.roles[id].push(role);
    }
}

/// A term or phrase as an automaton pattern: normalised, with the spaces around it that make it
/// match whole words; a trailing `*` leaves the last word open.
fn pattern(owner: &str, field: &str, raw: &Spanned<String>) -> Result<String, SpecError> {
    let text = raw.get_ref().trim();
    let fail = |why: &str| SpecError::at(raw.span(), format!("{owner}: {field} {text:?}: {why}"));
    let (body, prefix) = match text.strip_suffix('*') {
        Some(body) => (body, true),
        None => (text, false),
    };
    if body.contains('*') {
        return Err(fail("`*` is only allowed once, at the end"));
    }
    let mut norm = normalise(body);
    let last_word = norm.trim_end().rsplit(' ').next().unwrap_or("");
    if last_word.is_empty() {
        return Err(fail("has no letters or digits"));
    }
    if prefix {
        // "a*" would match half the dictionary; three characters is the least that means much.
        if last_word.chars().count() < 3 {
            return Err(fail("needs at least 3 letters before `*`"));
        }
        if body.ends_with(|c: char| !c.is_alphanumeric()) {
            return Err(fail("`*` must follow a letter or digit"));
        }
        norm.pop();
    }
    Ok(norm)
}

/// A term or pattern as the policy writes it, for the hits it makes.
#[derive(Debug)]
struct Written {
    text: String,
    /// Its language, when not the library's own.
    language: Option<String>,
    /// Its age band (an index of `Keywords::bands`), when it counts for that band only.
    band: Option<usize>,
}

impl Written {
    fn of(raw: &Spanned<String>, language: Option<&str>, band: Option<usize>) -> Self {
        Self {
            text: raw.get_ref().trim().to_owned(),
            language: language.map(str::to_owned),
            band,
        }
    }
}

/// The lists of a library, or of one of its languages.
struct Lists<'a> {
    terms: &'a [Spanned<String>],
    topic_terms: &'a [Spanned<String>],
    patterns: &'a [Spanned<String>],
    exclusions: &'a [Spanned<String>],
}

impl<'a> Lists<'a> {
    fn of(lib: &'a KeywordLibrarySpec) -> Self {
        Self {
            terms: &lib.terms,
            topic_terms: &lib.topic_terms,
            patterns: &lib.patterns,
            exclusions: &lib.exclusions,
        }
    }

    fn of_language(l: &'a LanguageSpec) -> Self {
        Self {
            terms: &l.terms,
            topic_terms: &l.topic_terms,
            patterns: &l.patterns,
            exclusions: &l.exclusions,
        }
    }

    fn of_band(b: &'a BandSpec) -> Self {
        Self {
            terms: &b.terms,
            topic_terms: &b.topic_terms,
            patterns: &b.patterns,
            exclusions: &[],
        }
    }
}

/// Files pattern `i` under `word`, once.
fn index(map: &mut HashMap<String, Vec<usize>>, word: &str, i: usize) {
    let list = map.entry(word.to_owned()).or_default();
    if !list.contains(&i) {
        list.push(i);
    }
}

/// A term of several words also as one word (` kill myself ` → ` killmyself `): hashtags and
/// letters spelled out (`k i l l m y s e l f`, which normalising joins) run the words together.
/// Only where the result is long enough not to be some other word by chance.
fn run_together(pattern: &str) -> Option<String> {
    let words: Vec<&str> = pattern.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() < 2 || !pattern.ends_with(' ') {
        return None;
    }
    let joined: String = words.concat();
    (joined.chars().count() >= 8).then(|| format!(" {joined} "))
}

impl Keywords {
    /// `knows` says whether a user group exists, for the bands' `users`.
    pub fn compile(
        libs: &[KeywordLibrarySpec],
        exclusions: &KeywordExclusionsSpec,
        knows: impl Fn(&str) -> bool,
    ) -> Result<Self, SpecError> {
        let mut pats = Patterns::default();
        let mut bands: Vec<Band> = Vec::new();
        let mut libraries = Vec::new();
        let mut written: Vec<Written> = Vec::new();
        let mut patterns = Vec::new();
        let mut vocabulary = Vocabulary::default();
        let mut ids = HashSet::new();
        for lib in libs {
            let id = lib.id.get_ref();
            if id.trim().is_empty() {
                return Err(SpecError::at(
                    lib.id.span(),
                    "keywords: `id` must not be empty",
                ));
            }
            if !ids.insert(id.as_str()) {
                return Err(SpecError::at(
                    lib.id.span(),
                    format!("keywords {id:?}: id is used twice"),
                ));
            }
            let owner = format!("keywords {id:?}");
            let empty =
                |l: &Lists| l.terms.is_empty() && l.topic_terms.is_empty() && l.patterns.is_empty();
            if empty(&Lists::of(lib)) && lib.languages.iter().all(|l| empty(&Lists::of_language(l)))
            {
                return Err(SpecError::at(
                    lib.id.span(),
                    format!("{owner}: matches nothing: give terms, topic_terms or patterns"),
                ));
            }
            // Check every pattern even in a library that is off, so switching it on later
            // cannot reveal an old mistake.
            let severity = lib.severity.severity();
            let n = libraries.len();
            let add = |pats: &mut Patterns, pattern: String, role: Role| {
                if severity.is_some() {
                    pats.add(pattern, role);
                }
            };
            let mut sets = vec![(None, Lists::of(lib), None)];
            for l in &lib.languages {
                let tag = l.language.get_ref().trim();
                if tag.is_empty() || tag.len() > 16 {
                    return Err(SpecError::at(
                        l.language.span(),
                        format!("{owner}: `language` must be a short tag such as \"pl\""),
                    ));
                }
                let label = if l.reviewed {
                    tag.to_owned()
                } else {
                    format!("{tag}, not yet reviewed by native speakers")
                };
                sets.push((Some(label), Lists::of_language(l), None));
            }
            for b in &lib.bands {
                let name = b.name.get_ref().trim();
                if name.is_empty() || b.users.is_empty() {
                    return Err(SpecError::at(
                        b.name.span(),
                        format!("{owner}: a band needs a `name` and the `users` groups it is for"),
                    ));
                }
                if let Some(u) = b.users.iter().find(|u| !knows(u.get_ref())) {
                    return Err(SpecError::at(
                        u.span(),
                        format!(
                            "{owner}: band {name:?}: users: {:?} is not a [[groups.users]] group",
                            u.get_ref()
                        ),
                    ));
                }
                bands.push(Band {
                    name: name.to_owned(),
                    users: b.users.iter().map(|u| u.get_ref().clone()).collect(),
                });
                sets.push((None, Lists::of_band(b), Some(bands.len() - 1)));
            }
            for (language, lists, band) in sets {
                for (field, list, topic) in [
                    ("term", lists.terms, false),
                    ("topic term", lists.topic_terms, true),
                ] {
                    for raw in list {
                        let p = pattern(&owner, field, raw)?;
                        written.push(Written::of(raw, language.as_deref(), band));
                        let role = Role::Term {
                            library: n,
                            topic,
                            written: written.len() - 1,
                        };
                        if let Some(joined) = run_together(&p) {
                            add(&mut pats, joined, role);
                        }
                        if severity.is_some() && language.is_none() && band.is_none() {
                            vocabulary.add_term(&p);
                        }
                        add(&mut pats, p, role);
                    }
                }
                for raw in lists.patterns {
                    let p = Phrase::compile(&owner, raw)?;
                    if severity.is_some() && language.is_none() && band.is_none() {
                        for w in p.exact_words() {
                            vocabulary.add_word(w);
                        }
                    }
                    written.push(Written::of(raw, language.as_deref(), band));
                    if severity.is_some() {
                        patterns.push((n, written.len() - 1, p));
                    }
                }
                for raw in lists.exclusions {
                    add(
                        &mut pats,
                        pattern(&owner, "exclusion", raw)?,
                        Role::Phrase(Some(n)),
                    );
                }
            }
            for raw in &lib.schoolwork {
                add(
                    &mut pats,
                    pattern(&owner, "schoolwork", raw)?,
                    Role::Schoolwork(Some(n)),
                );
            }
            if let Some(severity) = severity {
                libraries.push(Library {
                    id: id.clone(),
                    concern: lib.concern.clone(),
                    severity,
                    response: lib.response.clone().filter(|r| !r.trim().is_empty()),
                });
            }
        }
        let owner = "keyword_exclusions";
        for raw in &exclusions.phrases {
            pats.add(pattern(owner, "phrase", raw)?, Role::Phrase(None));
        }
        for raw in &exclusions.schoolwork {
            pats.add(pattern(owner, "schoolwork", raw)?, Role::Schoolwork(None));
        }
        let automaton = if libraries.is_empty() {
            None
        } else {
            // Standard semantics for overlapping search: every occurrence of every pattern is
            // seen, so a longer term that fails to match at a place cannot hide a shorter one,
            // and neighbouring words can share the space between them.
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&pats.texts)
                .map_err(|e| SpecError::new(format!("keywords: cannot build the matcher: {e}")))?;
            Some(ac)
        };
        let mut first_word: HashMap<String, Vec<usize>> = HashMap::new();
        let mut first_prefix = Vec::new();
        let mut anchors: HashMap<String, Vec<usize>> = HashMap::new();
        let mut unanchored = Vec::new();
        for (i, (_, _, p)) in patterns.iter().enumerate() {
            let (exact, open) = p.first_words();
            for w in exact {
                index(&mut first_word, w, i);
            }
            first_prefix.extend(open.into_iter().map(|o| (o.to_owned(), i)));
            match p.anchor_words() {
                Some(words) => {
                    for w in words {
                        index(&mut anchors, w, i);
                    }
                }
                None => unanchored.push(i),
            }
        }
        Ok(Self {
            libraries,
            automaton,
            roles: pats.roles,
            written,
            patterns,
            first_word,
            first_prefix,
            anchors,
            unanchored,
            model: None,
            vocabulary,
            bands,
        })
    }

    /// Leaves misspellings out: terms then match only as written (`[keyword_misspellings]`).
    pub fn without_misspellings(mut self) -> Self {
        self.vocabulary = Vocabulary::default();
        self
    }

    /// Adds the classifier: from then on `scan` also reports concerns it finds at or above
    /// `threshold` that no term of their library matched.
    pub fn with_model(mut self, model: std::sync::Arc<Model>, threshold: f32) -> Self {
        self.model = Some((model, threshold));
        self
    }

    /// The libraries' terms and patterns and, when on, the classifier, for someone in no age
    /// band.
    pub fn scan(&self, text: &str) -> Vec<KeywordHit> {
        self.scan_for(text, None)
    }

    /// [`Keywords::scan`] for a person of user group `group`: the terms of the age bands that
    /// group is in count too.
    pub fn scan_for(&self, text: &str, group: Option<&str>) -> Vec<KeywordHit> {
        let norm = normalise(text);
        let mut hits = self.scan_normalised(&norm, group);
        let Some((model, threshold)) = &self.model else {
            return hits;
        };
        if !english::reads_as_english(&norm) {
            return hits;
        }
        // Only the libraries that are on and that no term matched.
        let skip = |label: &str| {
            hits.iter().any(|h| h.library == label) || !self.libraries.iter().any(|l| l.id == label)
        };
        let verdicts = model.classify_normalised(&norm, *threshold, skip);
        for v in verdicts {
            let Some(lib) = self.libraries.iter().find(|l| l.id == v.label) else {
                continue;
            };
            hits.push(KeywordHit {
                library: lib.id.clone(),
                concern: lib.concern.clone(),
                severity: lib.severity,
                response: lib.response.clone(),
                term: "model".into(),
                found: v
                    .because
                    .iter()
                    .map(|b| format!("{b:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                language: None,
                model_percent: Some((v.probability * 100.0).floor().clamp(0.0, 100.0) as u8),
                band: None,
            });
        }
        self.in_policy_order(&mut hits);
        hits
    }

    /// Hits in the order of their libraries in the policy, as terms are reported.
    fn in_policy_order(&self, hits: &mut [KeywordHit]) {
        let order = |id: &str| self.libraries.iter().position(|l| l.id == id);
        hits.sort_by_key(|h| order(&h.library));
    }

    /// True when no library is on.
    pub fn is_empty(&self) -> bool {
        self.libraries.is_empty()
    }

    /// The ids of the libraries that are on, in policy order.
    pub fn libraries(&self) -> impl Iterator<Item = &str> {
        self.libraries.iter().map(|l| l.id.as_str())
    }

    /// The libraries whose terms or patterns match `text` (a search query or a page title), in
    /// policy order, each with the best term: a plain term before a topic term, then the
    /// longest, then the first.
    pub fn scan_terms(&self, text: &str) -> Vec<KeywordHit> {
        self.scan_normalised(&normalise(text), None)
    }

    /// The hits of the text as typed, then of the text with its misspellings corrected for
    /// the libraries that had none; such a hit says what was typed.
    fn scan_normalised(&self, text: &str, group: Option<&str>) -> Vec<KeywordHit> {
        let mut hits = self.scan_as_written(text, group);
        if self.vocabulary.is_empty() {
            return hits;
        }
        let Some((fixed, typed)) = self.vocabulary.correct(text) else {
            return hits;
        };
        let typed = typed
            .iter()
            .map(|(was, read)| format!("{was} \u{2192} {read}"))
            .collect::<Vec<_>>()
            .join(", ");
        let before = hits.len();
        for mut h in self.scan_as_written(&fixed, group) {
            if hits[..before].iter().all(|k| k.library != h.library) {
                h.found = format!("{} (typed: {typed})", h.found);
                hits.push(h);
            }
        }
        self.in_policy_order(&mut hits);
        hits
    }

    fn scan_as_written(&self, text: &str, group: Option<&str>) -> Vec<KeywordHit> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        let counts = |written: usize| {
            self.written[written]
                .band
                .is_none_or(|b| self.bands[b].covers(group))
        };
        let n = self.libraries.len();
        // (library, topic, written, start, end) of each term occurrence.
        let mut terms = Vec::new();
        let mut phrases: Vec<(Option<usize>, usize, usize)> = Vec::new();
        let mut schoolwork_all = false;
        let mut schoolwork = vec![false; n];
        for m in ac.find_overlapping_iter(text) {
            for role in &self.roles[m.pattern().as_usize()] {
                match *role {
                    Role::Term {
                        library,
                        topic,
                        written,
                    } => terms.push((library, topic, written, m.start(), m.end())),
                    Role::Phrase(lib) => phrases.push((lib, m.start(), m.end())),
                    Role::Schoolwork(None) => schoolwork_all = true,
                    Role::Schoolwork(Some(lib)) => schoolwork[lib] = true,
                }
            }
        }
        if !self.patterns.is_empty() {
            let words = Words::of(text);
            // Patterns whose anchor is absent are marked found: there is nothing to try.
            let mut found = vec![true; self.patterns.len()];
            for &i in &self.unanchored {
                found[i] = false;
            }
            // Patterns left to try; most texts hold no pattern's anchor, and then there is
            // nothing to try at any word.
            let mut pending = self.unanchored.len();
            for at in 0..words.len() {
                for &i in self.anchors.get(words.word(at)).into_iter().flatten() {
                    pending += usize::from(found[i]);
                    found[i] = false;
                }
            }
            for at in 0..words.len() {
                if pending == 0 {
                    break;
                }
                let w = words.word(at);
                let exact = self.first_word.get(w).into_iter().flatten().copied();
                let open = self
                    .first_prefix
                    .iter()
                    .filter(|(p, i)| !found[*i] && w.starts_with(p.as_str()))
                    .map(|(_, i)| *i);
                let candidates: Vec<usize> = exact.chain(open).collect();
                for i in candidates {
                    if found[i] {
                        continue;
                    }
                    let (library, written, p) = &self.patterns[i];
                    if let Some((start, end)) = p.find_at(&words, at) {
                        found[i] = true;
                        pending -= 1;
                        terms.push((*library, false, *written, start, end));
                    }
                }
            }
        }
        // Per library: the rank (plain before topic, longer, earlier) and the occurrence.
        type Rank = (bool, usize, std::cmp::Reverse<usize>);
        let mut best: Vec<Option<(Rank, usize, usize, usize)>> = vec![None; n];
        for (lib, topic, written, start, end) in terms {
            if !counts(written) {
                continue;
            }
            // Spans include the spaces around words, so sharing a word means overlapping by more
            // than the one space between neighbouring words.
            let innocent = phrases.iter().any(|&(owner, s, e)| {
                owner.is_none_or(|o| o == lib) && s.max(start) + 1 < e.min(end)
            });
            if innocent || (topic && (schoolwork_all || schoolwork[lib])) {
                continue;
            }
            let rank = (!topic, end - start, std::cmp::Reverse(start));
            if best[lib].is_none_or(|(r, ..)| rank > r) {
                best[lib] = Some((rank, written, start, end));
            }
        }
        best.into_iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let (_, written, start, end) = b?;
                let lib = &self.libraries[i];
                Some(KeywordHit {
                    library: lib.id.clone(),
                    concern: lib.concern.clone(),
                    severity: lib.severity,
                    response: lib.response.clone(),
                    term: self.written[written].text.clone(),
                    found: found(text, start, end),
                    language: self.written[written].language.clone(),
                    model_percent: None,
                    band: self.written[written]
                        .band
                        .map(|b| self.bands[b].name.clone()),
                })
            })
            .collect()
    }
}

/// The words of `text` from `start` to `end`, with a prefix term's last word completed.
fn found(text: &str, start: usize, end: usize) -> String {
    let end = if text[..end].ends_with(' ') {
        end
    } else {
        text[end..].find(' ').map_or(text.len(), |i| end + i)
    };
    text[start..end].trim().to_owned()
}
