//! Whether a word, or a text, is English: for misspellings, which only English words have, and
//! for the classifier, which was trained on mostly English text and on the home languages'
//! innocent searches guesses (with it on, 13 of 84 innocent home-language searches of the
//! held-out set raised an alert, against 3 with terms alone).

use foldhash::{HashSet, HashSetExt};
use std::sync::OnceLock;

/// English words of five letters or more, one per line (SCOWL, via Debian's wbritish;
/// `english_words.LICENSE`).
const ENGLISH: &str = include_str!("english_words.txt");

/// Short English words a search is made of, and none that the home languages also write
/// ("a", "i", "no", "me", "se", "de", "nie" are words there too).
const COMMON: &[&str] = &[
    "the", "to", "and", "of", "in", "on", "at", "it", "is", "are", "was", "be", "do", "does",
    "did", "can", "will", "would", "should", "could", "not", "dont", "cant", "wont", "im", "ive",
    "if", "so", "but", "or", "for", "with", "from", "this", "that", "he", "she", "they", "them",
    "his", "her", "hes", "shes", "we", "us", "our", "you", "your", "my", "how", "what", "why",
    "who", "when", "where", "want", "get", "got", "make", "help", "send", "sent", "pic", "pics",
    "said", "says", "keep", "kill", "hurt", "cut", "die", "dead", "buy", "best", "way", "ways",
    "free", "game", "online", "school", "mum", "mom", "dad", "him", "just", "like", "all", "has",
    "have", "had", "am", "an", "by", "up", "out", "off", "too", "any", "some", "one", "man", "guy",
    "girl", "boy", "kid", "kids", "old", "year", "age", "app", "site", "gun", "knife", "weed",
    "hack", "nudes", "porn", "sex", "hate", "fat", "ugly", "kms", "kys",
];

fn is_common(word: &str) -> bool {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS
        .get_or_init(|| COMMON.iter().copied().collect())
        .contains(word)
}

pub(super) fn is_english(word: &str) -> bool {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS
        .get_or_init(|| {
            let mut words = HashSet::with_capacity(ENGLISH.len() / 9);
            words.extend(ENGLISH.lines());
            words
        })
        .contains(word)
}

/// Whether normalised text reads as English: a word of another script (Arabic, Gurmukhi: the
/// Latin languages lose their accents before this) says no; a common short English word or a
/// listed longer one says yes; a text of neither says no.
pub(super) fn reads_as_english(norm: &str) -> bool {
    let mut english = false;
    for w in norm.split(' ').filter(|w| !w.is_empty()) {
        if !w.is_ascii() && w.chars().any(|c| c.is_alphabetic() && !c.is_ascii()) {
            return false;
        }
        english = english || is_common(w) || (w.len() >= 5 && is_english(w));
    }
    english
}

#[cfg(test)]
mod tests {
    use super::super::normalise;
    use super::reads_as_english;

    #[test]
    fn english_searches_read_as_english_and_the_home_languages_do_not() {
        for text in [
            "wyd send a pic",
            "how to make someone cry",
            "roblox man wants my address",
            "kms",
        ] {
            assert!(reads_as_english(&normalise(text)), "{text}");
        }
        for text in [
            "jak się zabić",
            "cum sa ma sinucid",
            "mujhe mar jana chahiye",
            "sut i ddod yn mujahid",
            "كيف انتحر",
            "ਫਾਹਾ ਕਿਵੇਂ ਲਈਏ",
            "",
        ] {
            assert!(!reads_as_english(&normalise(text)), "{text}");
        }
    }
}
