//! Phrase patterns: words with alternatives and bounded gaps, for what children type that a
//! fixed phrase cannot list ("how do i hurt my self", "no one would even care if i died").
//!
//! The syntax, in a library's `patterns`:
//! - words as in `terms` (normalised the same way; a trailing `*` leaves a word open);
//! - `{a|b c|d*}`: one of the alternatives, each a word or several;
//! - `..` a gap of up to 3 words, `..N` of up to N (at most 6).
//!
//! A pattern matches whole words of the normalised text, in order. It counts like a plain
//! term: innocent phrases silence an occurrence that shares a word with them, schoolwork words
//! do not.

use super::normalise::normalise;
use crate::SpecError;
use toml::Spanned;

const DEFAULT_GAP: usize = 3;
const MAX_GAP: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Exact(String),
    Prefix(String),
}

impl Word {
    fn matches(&self, w: &str) -> bool {
        match self {
            Word::Exact(e) => e == w,
            Word::Prefix(p) => w.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// One of these word sequences.
    OneOf(Vec<Vec<Word>>),
    /// Up to this many words of anything.
    Gap(usize),
}

/// Words so common in pupils' searches that a pattern anchored on one is tried on most texts:
/// a step without them anchors better even when its words are shorter.
const COMMON: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "dont", "for", "from", "get", "go", "got", "had",
    "has", "have", "he", "her", "him", "his", "how", "i", "if", "im", "in", "into", "is", "it",
    "its", "just", "like", "make", "me", "my", "no", "not", "now", "of", "off", "on", "one", "or",
    "our", "out", "say", "said", "she", "should", "so", "some", "that", "the", "their", "them",
    "then", "they", "this", "to", "too", "u", "up", "us", "want", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "your", "ur",
];

#[derive(Debug, Clone)]
pub struct Phrase {
    steps: Vec<Step>,
}

/// The words of a normalised text with their byte spans (each span includes the spaces around
/// the word, as the automaton's patterns do).
pub struct Words<'t> {
    words: Vec<(&'t str, usize, usize)>,
}

impl<'t> Words<'t> {
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn word(&self, i: usize) -> &'t str {
        self.words[i].0
    }

    pub fn of(text: &'t str) -> Self {
        let mut words = Vec::new();
        let mut pos: usize = 0;
        for w in text.split(' ') {
            if !w.is_empty() {
                // `pos` is where the word starts; the space before it is at pos - 1.
                words.push((w, pos.saturating_sub(1), pos + w.len() + 1));
            }
            pos += w.len() + 1;
        }
        Self { words }
    }
}

fn word(owner: &str, raw: &str, token: &str) -> Result<Vec<Word>, String> {
    let (body, prefix) = match token.strip_suffix('*') {
        Some(b) => (b, true),
        None => (token, false),
    };
    if body.contains('*') {
        return Err(format!(
            "{owner}: pattern {raw:?}: `*` only at the end of a word"
        ));
    }
    let norm = normalise(body);
    let parts: Vec<&str> = norm.split_whitespace().collect();
    if parts.is_empty() {
        return Err(format!(
            "{owner}: pattern {raw:?}: {token:?} has no letters or digits"
        ));
    }
    if prefix && parts.last().is_some_and(|w| w.chars().count() < 3) {
        return Err(format!(
            "{owner}: pattern {raw:?}: needs at least 3 letters before `*`"
        ));
    }
    let n = parts.len();
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            if prefix && i + 1 == n {
                Word::Prefix(p.to_owned())
            } else {
                Word::Exact(p.to_owned())
            }
        })
        .collect())
}

impl Phrase {
    pub fn compile(owner: &str, raw: &Spanned<String>) -> Result<Self, SpecError> {
        let text = raw.get_ref().trim();
        let fail = |m: String| SpecError::at(raw.span(), m);
        let mut steps = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| fail(format!("{owner}: pattern {text:?}: `{{` without `}}`")))?;
                let mut alts = Vec::new();
                for alt in inner[..end].split('|') {
                    let mut seq = Vec::new();
                    for token in alt.split_whitespace() {
                        seq.extend(word(owner, text, token).map_err(fail)?);
                    }
                    if seq.is_empty() {
                        return Err(fail(format!(
                            "{owner}: pattern {text:?}: an empty alternative"
                        )));
                    }
                    alts.push(seq);
                }
                steps.push(Step::OneOf(alts));
                rest = &inner[end + 1..];
                continue;
            }
            let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let token = &rest[..token_end];
            rest = &rest[token_end..];
            if let Some(n) = token.strip_prefix("..") {
                let gap = if n.is_empty() {
                    DEFAULT_GAP
                } else {
                    n.parse::<usize>()
                        .ok()
                        .filter(|g| (1..=MAX_GAP).contains(g))
                        .ok_or_else(|| {
                            fail(format!(
                                "{owner}: pattern {text:?}: gap {token:?} must be `..` or `..N` with N from 1 to {MAX_GAP}"
                            ))
                        })?
                };
                steps.push(Step::Gap(gap));
                continue;
            }
            if token.contains(['{', '}', '|']) {
                return Err(fail(format!(
                    "{owner}: pattern {text:?}: {token:?}: braces must enclose alternatives, with spaces around them"
                )));
            }
            for w in word(owner, text, token).map_err(fail)? {
                steps.push(Step::OneOf(vec![vec![w]]));
            }
        }
        match (steps.first(), steps.last()) {
            (Some(Step::OneOf(_)), Some(Step::OneOf(_))) => Ok(Self { steps }),
            (None, _) => Err(fail(format!("{owner}: pattern {text:?} is empty"))),
            _ => Err(fail(format!(
                "{owner}: pattern {text:?} must begin and end with words, not a gap"
            ))),
        }
    }

    /// The span (in the normalised text) of the first occurrence.
    #[cfg(test)]
    pub fn find(&self, words: &Words<'_>) -> Option<(usize, usize)> {
        (0..words.words.len()).find_map(|start| self.find_at(words, start))
    }

    /// The span of an occurrence starting at word `start`, if one does.
    pub fn find_at(&self, words: &Words<'_>, start: usize) -> Option<(usize, usize)> {
        let w = &words.words;
        let end = self.match_at(w, 0, start)?;
        Some((w[start].1, w[end - 1].2))
    }

    /// Every word the pattern names exactly, in any alternative.
    pub fn exact_words(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for step in &self.steps {
            if let Step::OneOf(alts) = step {
                for w in alts.iter().flatten() {
                    if let Word::Exact(e) = w {
                        out.push(e.as_str());
                    }
                }
            }
        }
        out
    }

    /// Words of which any occurrence contains one: one word from each alternative of the step
    /// whose words are rarest, or None when every step has an open word or an alternative of
    /// open words only. A text with none of them cannot match, which spares trying a pattern
    /// that begins with "how" or "a" at every such word. Rarest: a step none of whose words is
    /// one of the commonest words of English ([`COMMON`]) first, then the step whose shortest
    /// word is longest.
    pub fn anchor_words(&self) -> Option<Vec<&str>> {
        let mut best: Option<((bool, usize), Vec<&str>)> = None;
        for step in &self.steps {
            let Step::OneOf(alts) = step else { continue };
            let words: Option<Vec<&str>> = alts
                .iter()
                .map(|seq| {
                    seq.iter()
                        .filter_map(|w| match w {
                            Word::Exact(e) => Some(e.as_str()),
                            Word::Prefix(_) => None,
                        })
                        .max_by_key(|e| e.len())
                })
                .collect();
            let Some(words) = words else { continue };
            let shortest = words.iter().map(|w| w.len()).min().unwrap_or(0);
            let rare = !words.iter().any(|w| COMMON.contains(w));
            if best.as_ref().is_none_or(|(s, _)| (rare, shortest) > *s) {
                best = Some(((rare, shortest), words));
            }
        }
        best.map(|(_, words)| words)
    }

    /// The words an occurrence can begin with: exact ones, and open (prefix) ones.
    pub fn first_words(&self) -> (Vec<&str>, Vec<&str>) {
        let (mut exact, mut open) = (Vec::new(), Vec::new());
        if let Some(Step::OneOf(alts)) = self.steps.first() {
            for seq in alts {
                match &seq[0] {
                    Word::Exact(w) => exact.push(w.as_str()),
                    Word::Prefix(p) => open.push(p.as_str()),
                }
            }
        }
        (exact, open)
    }

    /// Matches steps[step..] from word `at`; returns the index after the last word used.
    fn match_at(&self, w: &[(&str, usize, usize)], step: usize, at: usize) -> Option<usize> {
        let Some(s) = self.steps.get(step) else {
            return Some(at);
        };
        match s {
            Step::OneOf(alts) => alts.iter().find_map(|seq| {
                let fits = seq.len() <= w.len().saturating_sub(at)
                    && seq
                        .iter()
                        .zip(&w[at..])
                        .all(|(p, (word, ..))| p.matches(word));
                fits.then(|| self.match_at(w, step + 1, at + seq.len()))
                    .flatten()
            }),
            Step::Gap(max) => (0..=*max).find_map(|skip| {
                (at + skip <= w.len())
                    .then(|| self.match_at(w, step + 1, at + skip))
                    .flatten()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_anchored_on_its_step_of_longest_words() {
        let compile = |p: &str| Phrase::compile("t", &Spanned::new(0..0, p.to_owned())).unwrap();
        let p = compile("how {to|do i} {hurt|kill} {myself|yourself}");
        assert_eq!(p.anchor_words(), Some(vec!["myself", "yourself"]));
        // Of an alternative of several words, its longest; of equal steps, the first.
        let p = compile("how {to|do i} {hurt|kill} {my own self|me}");
        assert_eq!(p.anchor_words(), Some(vec!["hurt", "kill"]));
        // A step with an open word only cannot anchor; the others still can.
        let p = compile("{suicid*|self harm*} .. {help|stop}");
        assert_eq!(p.anchor_words(), Some(vec!["help", "stop"]));
        assert_eq!(compile("suic*").anchor_words(), None);
    }

    fn phrase(p: &str) -> Phrase {
        Phrase::compile("t", &Spanned::new(0..0, p.to_owned())).unwrap()
    }

    fn finds(p: &str, text: &str) -> Option<String> {
        let norm = normalise(text);
        let words = Words::of(&norm);
        phrase(p)
            .find(&words)
            .map(|(s, e)| norm[s..e].trim().to_owned())
    }

    #[test]
    fn alternatives_gaps_and_open_words() {
        let p = "how {to|do i|can i} {hurt|kill|cut} {myself|my self}";
        assert_eq!(
            finds(p, "How do I hurt MY SELF??").as_deref(),
            Some("how do i hurt myself")
        );
        assert_eq!(finds(p, "how to hurt yourself"), None);
        let g = "{nobody|no one} would .. {miss|care}";
        assert_eq!(
            finds(g, "honestly no one would even care").as_deref(),
            Some("no one would even care")
        );
        assert_eq!(
            finds(g, "no one would ever ever ever ever care"),
            None,
            "gap of 3 at most"
        );
        assert_eq!(
            finds("suicid* ..2 tonight", "suicidal thoughts tonight").as_deref(),
            Some("suicidal thoughts tonight")
        );
    }

    #[test]
    fn a_span_includes_the_spaces_around_it_like_a_term() {
        let norm = normalise("i want to die now");
        let words = Words::of(&norm);
        let (s, e) = phrase("want to die").find(&words).unwrap();
        assert_eq!(&norm[s..e], " want to die ");
    }

    #[test]
    fn bad_patterns_are_named() {
        for (p, why) in [
            (".. die", "begin and end"),
            ("die ..", "begin and end"),
            ("{die|dead", "without"),
            ("go ..9 die", "gap"),
            ("{a|} b", "empty alternative"),
            ("x{a|b}", "braces"),
        ] {
            let err = Phrase::compile("lib", &Spanned::new(0..0, p.to_owned())).unwrap_err();
            assert!(err.message.contains(why), "{p}: {}", err.message);
        }
    }
}
