//! Text normalisation shared by keyword terms and the text they are matched against, so both
//! sides agree on what a "word" is: a search typed as `how+to+K1LL_myself` and a page titled
//! "How to kill myself?" both become ` how to kill myself `.

use percent_encoding::percent_decode_str;

/// Lower-case words separated by single spaces, with a space at each end so that a pattern
/// written as ` word ` only matches whole words.
///
/// - `%XX` escapes are decoded (search terms copied out of a URL);
/// - letters are lower-cased and common Latin accents dropped (`é` → `e`);
/// - apostrophes vanish (`I'm` → `im`, `don’t` → `dont`) so contractions stay one word;
/// - invisible characters (zero-width space, soft hyphen) vanish, as they are used to dodge filters;
/// - every other non-alphanumeric character (`+ _ - . / ?` ...) separates words;
/// - in a word that mixes letters with `0 1 3 4 5 7 @ $ !`, those stand for letters (`k1ll`,
///   `$ex`, `pr0n`); numbers on their own (`year 6`, `1488`) are left alone.
pub fn normalise(text: &str) -> String {
    let decoded;
    let text = if text.contains('%') {
        decoded = percent_decode_str(text).decode_utf8_lossy();
        decoded.as_ref()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut word = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '\u{2019}' | '\u{2018}' | '\u{02bc}' | '`' => {}
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{00ad}' => {}
            // Combining accents (decomposed "é", or the dot `İ` lower-cases to) are dropped.
            '\u{0300}'..='\u{036f}' => {}
            '@' | '$' | '!' => word.push(c),
            c if c.is_alphanumeric() => word.push(fold_accent(c)),
            _ => flush(&mut word, &mut out),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Ends the current word: appends it, de-leeted, followed by one space.
fn flush(word: &mut String, out: &mut String) {
    // Symbols at the edges are punctuation ("help!", "@user"), except a leading `$` ("$ex").
    let trimmed = word
        .trim_start_matches(['@', '!'])
        .trim_end_matches(['@', '!', '$']);
    let has_letter = trimmed.chars().any(char::is_alphabetic);
    let mut any = false;
    for c in trimmed.chars() {
        let c = match (has_letter, c) {
            (true, '0') => 'o',
            (true, '1' | '!') => 'i',
            (true, '3') => 'e',
            (true, '4' | '@') => 'a',
            (true, '5' | '$') => 's',
            (true, '7') => 't',
            // A symbol in a word without letters ("$5") is not a letter; drop it.
            (false, '@' | '$' | '!') => continue,
            (_, c) => c,
        };
        out.push(c);
        any = true;
    }
    if any {
        out.push(' ');
    }
    word.clear();
}

/// Common accented Latin letters to their base letter (no Unicode tables in the dependencies;
/// this covers the accents pupils in English schools type or paste).
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'ı' => 'i',
        'ñ' | 'ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn words_are_lower_case_and_space_separated() {
        assert_eq!(normalise("How to  Kill myself?"), " how to kill myself ");
        assert_eq!(normalise("how+to+kill_myself"), " how to kill myself ");
        assert_eq!(
            normalise("how%20to%20kill%20myself"),
            " how to kill myself "
        );
        assert_eq!(normalise("self-harm"), " self harm ");
        assert_eq!(normalise("  ...  "), " ");
        assert_eq!(normalise(""), " ");
    }

    #[test]
    fn contractions_accents_and_invisible_characters() {
        assert_eq!(normalise("I’m don't"), " im dont ");
        assert_eq!(normalise("Café NAÏVE"), " cafe naive ");
        assert_eq!(normalise("sui\u{200b}cide"), " suicide ");
        assert_eq!(normalise("Cafe\u{301} İstanbul"), " cafe istanbul ");
    }

    #[test]
    fn leetspeak_in_words_but_not_in_numbers() {
        assert_eq!(normalise("k1ll mys3lf"), " kill myself ");
        assert_eq!(normalise("$ex pr0n"), " sex pron ");
        assert_eq!(normalise("help! @bbc"), " help bbc ");
        assert_eq!(normalise("year 6, 1488, $5"), " year 6 1488 5 ");
    }

    #[test]
    fn bad_percent_escapes_do_not_panic() {
        assert_eq!(normalise("50% off %zz %e2%28"), " 50 off zz ");
    }
}
