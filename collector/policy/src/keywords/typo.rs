//! One-letter misspellings of the libraries' longer words: a letter missed, added, changed, or
//! two swapped ("sucide", "overdoze", "kill myslef"), as children type in a hurry. A word of the
//! text one letter from a word of an English term or pattern (of at least [`MIN_LETTERS`]
//! letters) is read as that word, and the corrected text is scanned as well; the alert shows
//! what was typed. Shorter words are left alone: one letter from a short word is too often
//! another word.
//!
//! A word that is itself English is never a misspelling ("setting" is not "sexting", nor
//! "regards" "retards"): it is looked up in a list of 60,000 English words first (SCOWL, via
//! Debian's wbritish; `english_words.LICENSE`). So only the libraries' own language, English,
//! is corrected; terms of the home languages match as written.
//!
//! The symmetric-deletion method (as SymSpell): every word, and every word with one letter
//! deleted, is indexed by hash; a word of the text is looked up the same way, and each
//! candidate is confirmed by comparing letters, so a hash collision never corrects anything.

use super::english::is_english;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

/// The shortest library word that is matched misspelt.
pub const MIN_LETTERS: usize = 6;

/// `[keyword_misspellings]` in the policy.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MisspellingsSpec {
    /// The libraries' longer English words also match one letter off. Default false: on the
    /// corpus it finds little (2 more of 904 concerning texts) and slows keyword evaluation by
    /// about a third, below the 200,000 texts/s a core must keep (BENCHMARKS.md).
    pub enabled: bool,
}

/// The libraries' words a misspelling is read as.
#[derive(Debug)]
pub struct Vocabulary {
    /// Hash of a word, or of a word less one letter → indexes into `words`.
    index: HashMap<u64, Vec<u32>>,
    words: Vec<Vec<char>>,
    known: HashSet<String>,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            words: Vec::new(),
            known: HashSet::new(),
        }
    }
}

/// FNV-1a over letters, skipping the one at `skip`: a streaming hash, so the word with a
/// letter deleted needs no new string.
fn hash(letters: &[char], skip: Option<usize>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, c) in letters.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        for b in (*c as u32).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A changed letter is allowed only in words this long: in a six-letter word it too often
/// makes a word of another language ("herois", heroes in Portuguese, is not "heroin").
const MIN_LETTERS_CHANGED: usize = 7;

/// Whether `a` and `b` differ by exactly one letter missed, added, changed (in a long enough
/// word), or two neighbouring letters swapped.
fn one_apart(a: &[char], b: &[char]) -> bool {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let first = long.iter().zip(short).position(|(x, y)| x != y);
    match long.len() - short.len() {
        0 => {
            let Some(i) = first else {
                return false;
            };
            (long.len() >= MIN_LETTERS_CHANGED && long[i + 1..] == short[i + 1..])
                || (i + 1 < long.len()
                    && long[i] == short[i + 1]
                    && long[i + 1] == short[i]
                    && long[i + 2..] == short[i + 2..])
        }
        1 => {
            let i = first.unwrap_or(short.len());
            long[i + 1..] == short[i..]
        }
        _ => false,
    }
}

impl Vocabulary {
    /// Adds the long enough words of a normalised term (spaces around it; without the one
    /// after it, its last word is open and left out).
    pub fn add_term(&mut self, term: &str) {
        let mut words: Vec<&str> = term.split(' ').collect();
        if !term.ends_with(' ') {
            words.pop();
        }
        for w in words {
            self.add_word(w);
        }
    }

    /// Adds one word of a pattern, if long enough.
    pub fn add_word(&mut self, word: &str) {
        let letters: Vec<char> = word.chars().collect();
        if letters.len() < MIN_LETTERS
            || !letters.iter().all(|c| c.is_alphabetic())
            || !self.known.insert(word.to_owned())
        {
            return;
        }
        let id = self.words.len() as u32;
        for skip in std::iter::once(None).chain((0..letters.len()).map(Some)) {
            let list = self.index.entry(hash(&letters, skip)).or_default();
            if !list.contains(&id) {
                list.push(id);
            }
        }
        self.words.push(letters);
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The library word `word` is a one-letter misspelling of, if exactly one.
    fn correction(&self, word: &str) -> Option<String> {
        // Cheap refusals first: most words of a text are short, known, or English.
        if word.len() < MIN_LETTERS - 1
            || !word.chars().all(char::is_alphabetic)
            || self.known.contains(word)
            || is_english(word)
        {
            return None;
        }
        let letters: Vec<char> = word.chars().collect();
        if letters.len() < MIN_LETTERS - 1 {
            return None;
        }
        let mut found: Option<u32> = None;
        for skip in std::iter::once(None).chain((0..letters.len()).map(Some)) {
            for &id in self.index.get(&hash(&letters, skip)).into_iter().flatten() {
                if found == Some(id) || !one_apart(&self.words[id as usize], &letters) {
                    continue;
                }
                if found.is_some() {
                    // One letter from two words: no telling which was meant.
                    return None;
                }
                found = Some(id);
            }
        }
        found.map(|id| self.words[id as usize].iter().collect())
    }

    /// The normalised text with its misspelt words corrected, and what was typed for each
    /// (typed, read as); None when nothing needed correcting.
    pub fn correct(&self, text: &str) -> Option<(String, Vec<(String, String)>)> {
        // Most texts need nothing: build a new one only for those that do.
        let mut fixed: Vec<(String, String)> = Vec::new();
        for w in text.split(' ') {
            if let Some(c) = self.correction(w) {
                fixed.push((w.to_owned(), c));
            }
        }
        if fixed.is_empty() {
            return None;
        }
        let out: Vec<&str> = text
            .split(' ')
            .map(|w| {
                fixed
                    .iter()
                    .find(|(was, _)| was == w)
                    .map_or(w, |(_, read)| read.as_str())
            })
            .collect();
        Some((out.join(" "), fixed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary(words: &[&str]) -> Vocabulary {
        let mut v = Vocabulary::default();
        for w in words {
            v.add_term(w);
        }
        v
    }

    #[test]
    fn one_letter_missed_added_changed_or_swapped_and_nothing_else() {
        let v = vocabulary(&[" suicide ", " kill myself ", " anorex"]);
        for typo in [
            "sucide", "suicidee", "suicode", "siucide", "usicide", "suicid",
        ] {
            assert_eq!(v.correction(typo).as_deref(), Some("suicide"), "{typo}");
        }
        assert_eq!(v.correction("myslef").as_deref(), Some("myself"));
        for other in ["suicide", "suiccdee", "scuicdie", "kil", "kiil", "anorexa"] {
            assert_eq!(v.correction(other), None, "{other}");
        }
        assert_eq!(
            v.correct(" i want to kill myslef "),
            Some((
                " i want to kill myself ".to_owned(),
                vec![("myslef".to_owned(), "myself".to_owned())]
            ))
        );
        assert_eq!(v.correct(" nothing to see here "), None);
    }

    #[test]
    fn an_english_word_or_a_choice_of_two_is_no_misspelling() {
        let v = vocabulary(&[" sexting ", " retards ", " abcdefg ", " abcdefh "]);
        assert_eq!(v.correction("setting"), None);
        assert_eq!(v.correction("texting"), None);
        assert_eq!(v.correction("regards"), None);
        assert_eq!(v.correction("sextin").as_deref(), Some("sexting"));
        assert_eq!(v.correction("abcdefx"), None, "one letter from two words");
    }

    #[test]
    fn distance_is_exact() {
        let w = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(one_apart(&w("overdose"), &w("overdoze")));
        assert!(one_apart(&w("overdose"), &w("ovedose")));
        assert!(!one_apart(&w("overdose"), &w("overdose")));
        assert!(!one_apart(&w("overdose"), &w("ovredoze")));
        assert!(!one_apart(&w("abcdef"), &w("xabcde")));
        assert!(
            !one_apart(&w("heroin"), &w("herois")),
            "a changed letter in six"
        );
        assert!(one_apart(&w("heroin"), &w("hereoin")));
    }
}
