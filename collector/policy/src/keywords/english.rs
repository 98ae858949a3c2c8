//! Whether a word, or a text, is English: for misspellings, which only English words have, and
//! for the classifier, which was trained on mostly English text and on the home languages'
//! innocent searches guesses (with it on, 13 of 84 innocent home-language searches of the
//! held-out set raised an alert, against 3 with terms alone).

use foldhash::{HashSet, HashSetExt};
use std::sync::OnceLock;

/// English words of five letters or more, one per line (SCOWL, via Debian's wbritish;
/// `english_words.LICENSE`).
const ENGLISH: &str = include_str!("english_words.txt");

/// Short English words a search is made of, and none that the home languages also write once
/// accents are gone: not "to", "do", "on", "by", "my" (Polish), "in", "am", "are" (Romanian),
/// "at", "can", "man", "dad" (Welsh), "so" (Portuguese "só"), nor "you", which Polish "u"
/// becomes as text-speak, nor loanwords ("online", "sex").
const COMMON: &[&str] = &[
    "the", "and", "of", "it", "is", "was", "be", "does", "did", "will", "would", "should", "could",
    "not", "dont", "cant", "wont", "im", "ive", "if", "but", "or", "for", "with", "from", "this",
    "that", "he", "she", "they", "them", "his", "her", "hes", "shes", "we", "us", "our", "your",
    "how", "what", "why", "who", "when", "where", "want", "get", "got", "make", "help", "send",
    "sent", "pic", "pics", "said", "says", "keep", "kill", "hurt", "cut", "die", "dead", "buy",
    "best", "way", "ways", "free", "game", "school", "mum", "mom", "him", "just", "like", "all",
    "has", "have", "had", "up", "out", "off", "too", "any", "some", "one", "guy", "girl", "boy",
    "kid", "kids", "old", "year", "age", "app", "site", "gun", "knife", "weed", "hack", "nudes",
    "porn", "hate", "fat", "ugly", "kms", "kys",
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

/// Whether normalised text reads as English: at least one common short English word or
/// listed longer one, and no more words of another script (Arabic, Gurmukhi; the Latin
/// languages lose their accents before this) than English ones, so an English title with a
/// site's name in Cyrillic still reads as English and an Urdu search with "video" does not.
pub(super) fn reads_as_english(norm: &str) -> bool {
    let (mut english, mut other) = (0usize, 0usize);
    for w in norm.split(' ').filter(|w| !w.is_empty()) {
        if !w.is_ascii() && w.chars().any(|c| c.is_alphabetic() && !c.is_ascii()) {
            other += 1;
        } else if is_common(w) || (w.len() >= 5 && is_english(w)) {
            english += 1;
        }
    }
    english > 0 && english >= other
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
            "how to watch \u{41a}\u{438}\u{43d}\u{43e} online free",
        ] {
            assert!(reads_as_english(&normalise(text)), "{text}");
        }
        for text in [
            "jak się zabić",
            "cum sa ma sinucid",
            "mujhe mar jana chahiye",
            "sut i ddod yn mujahid",
            "jak to zrobic u mnie w domu",
            "cum sa am grija in parc",
            "mae dad yn gallu",
            "\u{62f}\u{627}\u{639}\u{634} video \u{62f}\u{6cc}\u{6a9}\u{6be}\u{648}",
            "كيف انتحر",
            "ਫਾਹਾ ਕਿਵੇਂ ਲਈਏ",
            "",
        ] {
            assert!(!reads_as_english(&normalise(text)), "{text}");
        }
    }
}
