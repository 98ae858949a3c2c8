//! Text-speak read as the words it stands for, on both sides of the match: a library writes
//! "how to hurt yourself" once and still meets "how 2 hurt urself", "wat r u" or "p*rn".
//!
//! Only spellings with one everyday reading belong here: a word that is also a common word
//! or a name ("cos", "da", "yr", "mandy") would change innocent text, so it stays out and the
//! libraries spell it where they mean it.

use foldhash::HashMap;
use std::sync::OnceLock;

/// What a text-speak word stands for, or `None` for a word that is itself. Asked of every
/// word of every text, so the spellings are looked up in a hash map, built once.
pub(super) fn expand(word: &str) -> Option<&'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        SPELLINGS
            .iter()
            .flat_map(|(spellings, words)| spellings.iter().map(move |s| (*s, *words)))
            .collect()
    })
    .get(word)
    .copied()
}

/// The word an emoji stands for where pupils and sellers use it instead of one ("🔪 for sale",
/// "🍃❄️🔌" for weed, coke and a dealer, "🌽" for porn), or `None`: any other emoji
/// separates words as punctuation does. Only emoji with one reading in these searches belong
/// here; 🍆 and 🍑 are as often food.
pub(super) fn emoji(c: char) -> Option<&'static str> {
    Some(match c {
        '🔪' | '🗡' => "knife",
        '🔫' => "gun",
        '💣' => "bomb",
        '🍃' | '🌿' | '🍁' => "weed",
        '❄' => "snow",
        '🔌' => "plug",
        '💊' => "pills",
        '🍄' => "shrooms",
        '🌽' => "porn",
        _ => return None,
    })
}

/// The spellings, each with the words it stands for.
const SPELLINGS: &[(&[&str], &str)] = &[
    (&["yu", "ya"], "you"),
    (&["ur", "yur", "youre"], "your"),
    (
        &["urself", "urslf", "yaself", "yerself", "yourslf"],
        "yourself",
    ),
    (&["myslf", "meself", "maself"], "myself"),
    (&["wat", "wot", "wut", "wht"], "what"),
    (&["hw"], "how"),
    (&["wen"], "when"),
    (&["wud", "wld"], "would"),
    (&["cud", "cld"], "could"),
    (&["shud", "shld"], "should"),
    (&["pls", "plz", "plez"], "please"),
    (&["ppl"], "people"),
    (&["sum1", "some1", "sumone", "sumbody"], "someone"),
    (&["any1"], "anyone"),
    (&["every1", "evry1", "evryone"], "everyone"),
    (&["no1", "noone"], "no one"),
    (&["b4"], "before"),
    (&["2day"], "today"),
    (&["2nite", "2night", "tonite"], "tonight"),
    (&["2moro", "2morrow", "tmrw", "tomoz"], "tomorrow"),
    (&["cuz", "coz", "bcoz", "bcuz", "becuz", "becoz"], "because"),
    (&["gonna", "finna"], "going to"),
    (&["wanna"], "want to"),
    (&["gotta"], "got to"),
    (&["tryna"], "trying to"),
    (&["imma", "ima"], "im going to"),
    (&["dnt"], "dont"),
    (&["h8"], "hate"),
    (&["luv"], "love"),
    (&["bf"], "boyfriend"),
    (&["gf"], "girlfriend"),
    (&["txt"], "text"),
    (&["msg"], "message"),
    (&["msgs"], "messages"),
    (&["pik", "piccy"], "pic"),
    (&["pix", "piks", "piccies"], "pics"),
    (&["nudez", "noodz", "nudies"], "nudes"),
];

/// The one-letter words of text-speak ("r u ok") and words split in two ("my self", "sum
/// one"), read once letters spelled out one by one ("s u i c i d e") have been joined, so
/// that a lone `u` is not taken for a word of its own.
pub(super) fn expand_letters(text: String) -> String {
    let split_word = |t: &str| t.contains(" self ") || t.contains(" one ");
    if !text.contains(" u ") && !text.contains(" r ") && !split_word(&text) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let mut i = 0;
    while i < words.len() {
        let next = words.get(i + 1).copied();
        // "my self harm" is self-harm, not "myself harm": the libraries name it so.
        let harm = words
            .get(i + 2)
            .is_some_and(|w| w.starts_with("harm") || w.starts_with("injur"));
        let joined = match (words[i], next) {
            ("my ", Some("self ")) if !harm => Some("myself "),
            ("your " | "ur ", Some("self ")) if !harm => Some("yourself "),
            ("sum " | "some ", Some("one ")) => Some("someone "),
            ("every ", Some("one ")) => Some("everyone "),
            _ => None,
        };
        if let Some(joined) = joined {
            out.push_str(joined);
            i += 2;
            continue;
        }
        match words[i] {
            "u " => out.push_str("you "),
            "r " => out.push_str("are "),
            w => out.push_str(w),
        }
        i += 1;
    }
    out
}

/// A word censored with `*` to slip past a filter, read as the word it hides; `None` for any
/// other starred word, which is then read as the words either side of the stars.
pub(super) fn uncensor(word: &str) -> Option<&'static str> {
    Some(match word {
        "p*rn" | "p**n" | "po*n" | "p*rno" => "porn",
        "p*rnhub" | "p**nhub" | "porn*ub" => "pornhub",
        "s*x" | "se*" => "sex",
        "s*xy" => "sexy",
        "n*des" | "n**es" | "nud*s" => "nudes",
        "n*de" | "n*ked" | "na*ed" => "naked",
        "k*ll" | "ki*l" => "kill",
        "su*cide" | "s*icide" | "suic*de" => "suicide",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::normalise;

    #[test]
    fn text_speak_reads_as_its_words() {
        assert_eq!(normalise("how 2 hurt urself"), " how 2 hurt yourself ");
        assert_eq!(normalise("wat r u doing"), " what are you doing ");
        assert_eq!(normalise("im gonna kms"), " im going to kms ");
        assert_eq!(normalise("sum1 sent me pix"), " someone sent me pics ");
    }

    #[test]
    fn starred_words_are_uncensored_or_split() {
        assert_eq!(normalise("p*rn hub"), " porn hub ");
        assert_eq!(normalise("S*X videos"), " sex videos ");
        // Any other star separates words, as it did before.
        assert_eq!(normalise("5*3=15 st*ff"), " 5 3 15 st ff ");
        assert_eq!(normalise("* footnote"), " footnote ");
    }

    #[test]
    fn spelled_out_letters_still_join_around_text_speak() {
        assert_eq!(normalise("k i l l urself"), " kill yourself ");
        assert_eq!(normalise("r u ok"), " are you ok ");
        assert_eq!(
            normalise("make my self sad, ur self, sum one"),
            " make myself sad yourself someone "
        );
        // "self" after any other word, and "one" alone, are themselves.
        assert_eq!(normalise("the self no one"), " the self no one ");
        // Self-harm stays self-harm.
        assert_eq!(
            normalise("hide my self-harm, ur self harm, my self injury"),
            " hide my self harm your self harm my self injury "
        );
    }
}
