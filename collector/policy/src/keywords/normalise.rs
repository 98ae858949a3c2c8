//! Text normalisation shared by keyword terms and the text they are matched against, so both
//! sides agree on what a "word" is: a search typed as `how+to+K1LL_myself` and a page titled
//! "How to kill myself?" both become ` how to kill myself `.

use super::textspeak;
use percent_encoding::percent_decode_str;
use unicode_normalization::char::decompose_canonical;

/// Lower-case words separated by single spaces, with a space at each end so that a pattern
/// written as ` word ` only matches whole words.
///
/// - `%XX` escapes are decoded (search terms copied out of a URL);
/// - letters are lower-cased and Latin diacritics dropped (`é` → `e`, `ą` → `a`, `ș` → `s`,
///   `ŵ` → `w`), so Polish, Romanian or Welsh typed without them still matches;
/// - Arabic-script text (Arabic, Urdu, Shahmukhi Punjabi) loses its optional vowel marks and
///   the stretching tatweel, and letters typed in either language's form are folded to one
///   (`ي ى` → `ی`, `ك` → `ک`, `ة ہ ۃ ھ` → `ه`, `أ إ آ ٱ` → `ا`); Gurmukhi loses nukta, tippi,
///   bindi and addak, which writers use inconsistently;
/// - a run of three or more single letters is one word (`k i l l`, `s.u.i.c.i.d.e` →
///   `kill`, `suicide`): letters spaced or dotted out to dodge a filter;
/// - apostrophes vanish (`I'm` → `im`, `don’t` → `dont`) so contractions stay one word, and
///   Welsh's `'r` and `'n` with them (`postio'r` → `postio`, `mae'n` → `mae`);
/// - invisible characters (zero-width space, soft hyphen) vanish, as they are used to dodge filters;
/// - every other non-alphanumeric character (`+ _ - . / ?` ...) separates words;
/// - text-speak is read as the words it stands for (`u` → `you`, `wanna` → `want to`, `p*rn`
///   → `porn`; see [`textspeak`]), and any other `*` separates words;
/// - in a word that mixes letters with `0 1 3 4 5 7 @ $ !`, those stand for letters (`k1ll`,
///   `$ex`, `pr0n`); numbers on their own (`year 6`, `1488`) are left alone;
/// - a few emoji are read as the word they stand for (`🔪` → `knife`, see [`textspeak`]).
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
        if c.is_ascii() {
            push(c, &mut word, &mut out);
        } else {
            decompose_canonical(c, |d| push(fold(d), &mut word, &mut out));
        }
    }
    flush(&mut word, &mut out);
    textspeak::expand_letters(join_spelled_out(out))
}

fn push(c: char, word: &mut String, out: &mut String) {
    match c {
        // Kept inside a word until it ends, for Welsh's 'r and 'n (see `flush`).
        '\'' | '\u{2019}' | '\u{2018}' | '\u{02bc}' | '`' if !word.is_empty() => word.push('\''),
        '\'' | '\u{2019}' | '\u{2018}' | '\u{02bc}' | '`' => {}
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{00ad}' => {}
        // Combining marks: Latin diacritics (what decomposing "é" leaves, or the dot `İ`
        // lower-cases to), Arabic vowel marks and tatweel, Gurmukhi nukta, tippi, bindi, addak.
        '\u{0300}'..='\u{036f}'
        | '\u{064b}'..='\u{065f}'
        | '\u{0670}'
        | '\u{0640}'
        | '\u{0a01}'
        | '\u{0a02}'
        | '\u{0a3c}'
        | '\u{0a70}'
        | '\u{0a71}' => {}
        '@' | '$' | '!' | '*' => word.push(c),
        c if c.is_alphanumeric() => word.push(c),
        c => {
            flush(word, out);
            if let Some(w) = textspeak::emoji(c) {
                out.push_str(w);
                out.push(' ');
            }
        }
    }
}

/// A run of three or more one-letter words becomes one word; anything else is kept.
/// Nearly every text has no such run: it is returned as it came, without a copy.
fn join_spelled_out(text: String) -> String {
    let single = |w: &str| {
        let mut cs = w.chars();
        cs.next().is_some_and(char::is_alphabetic) && cs.next().is_none()
    };
    let mut run = 0;
    let spelled_out = text.split(' ').filter(|w| !w.is_empty()).any(|w| {
        run = if single(w) { run + 1 } else { 0 };
        run >= 3
    });
    if !spelled_out {
        return text;
    }
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out = String::with_capacity(text.len());
    out.push(' ');
    let mut i = 0;
    while i < words.len() {
        let run = words[i..].iter().take_while(|w| single(w)).count();
        if run >= 3 {
            words[i..i + run].iter().for_each(|w| out.push_str(w));
            out.push(' ');
            i += run;
        } else {
            out.push_str(words[i]);
            out.push(' ');
            i += 1;
        }
    }
    out
}

/// Ends the current word: appends it, uncensored or split at its stars, de-leeted and read
/// as text-speak, followed by one space.
fn flush(word: &mut String, out: &mut String) {
    if word.contains('\'') {
        // Welsh writes "the" and its particle onto the word before ("i'r ysgol", "mae'n",
        // "postio'r lluniau"): dropped, they leave the word a library names. Any other
        // apostrophe vanishes, keeping a contraction one word (`don't` → `dont`).
        if word.ends_with("'r") || word.ends_with("'n") {
            word.truncate(word.len() - 2);
        }
        word.retain(|c| c != '\'');
    }
    if word.contains('*') {
        let starred = std::mem::take(word);
        let starred = starred.trim_matches('*');
        if let Some(plain) = textspeak::uncensor(starred) {
            out.push_str(plain);
            out.push(' ');
            return;
        }
        for piece in starred.split('*') {
            word.push_str(piece);
            flush_word(word, out);
        }
        return;
    }
    flush_word(word, out);
}

fn flush_word(word: &mut String, out: &mut String) {
    let start = out.len();
    // Symbols at the edges are punctuation ("help!", "@user"), except a leading `$` ("$ex").
    let trimmed = word
        .trim_start_matches(['@', '!'])
        .trim_end_matches(['@', '!', '$']);
    // Text-speak with digits ("sum1", "b4") is looked up before they are read as letters.
    if let Some(words) = textspeak::expand(trimmed) {
        out.push_str(words);
        out.push(' ');
        word.clear();
        return;
    }
    let has_letter = trimmed.chars().any(char::is_alphabetic);
    let mut any = false;
    // Whether de-leeting changed the word: only then is it text-speak worth a second look.
    let mut changed = false;
    for typed in trimmed.chars() {
        let c = match (has_letter, typed) {
            (true, '0') => 'o',
            (true, '1' | '!') => 'i',
            (true, '3') => 'e',
            (true, '4' | '@') => 'a',
            (true, '5' | '$') => 's',
            (true, '7') => 't',
            // A symbol in a word without letters ("$5") is not a letter; drop it.
            (false, '@' | '$' | '!') => {
                changed = true;
                continue;
            }
            (_, c) => c,
        };
        changed |= c != typed;
        out.push(c);
        any = true;
    }
    if any {
        if let Some(words) = changed.then(|| textspeak::expand(&out[start..])).flatten() {
            out.truncate(start);
            out.push_str(words);
        }
        out.push(' ');
    }
    word.clear();
}

/// Letters with no canonical decomposition to fold by hand: Latin ones (ł, ø, đ ...) to their
/// base letter, and the Arabic and Urdu forms of the same letter to one.
fn fold(c: char) -> char {
    match c {
        'ł' => 'l',
        'ø' => 'o',
        'đ' => 'd',
        'ı' => 'i',
        'ß' => 's',
        // Arabic-script letters Urdu and Arabic write differently.
        '\u{064a}' | '\u{0649}' | '\u{06d2}' => '\u{06cc}', // ي ى ے → ی
        '\u{0643}' => '\u{06a9}',                           // ك → ک
        '\u{0629}' | '\u{06c1}' | '\u{06c3}' | '\u{06be}' => '\u{0647}', // ة ہ ۃ ھ → ه
        '\u{0623}' | '\u{0625}' | '\u{0622}' | '\u{0671}' => '\u{0627}', // أ إ آ ٱ → ا
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn emoji_used_for_words_are_read_as_them() {
        assert_eq!(normalise("🔪 for sale"), " knife for sale ");
        assert_eq!(normalise("plug🍃❄️🔌"), " plug weed snow plug ");
        assert_eq!(normalise("so funny 😂😂"), " so funny ");
    }

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
        assert_eq!(normalise("'quoted' O'Neill"), " quoted oneill ");
        assert_eq!(
            normalise("ymuno â'r wladwriaeth, mae'n iawn"),
            " ymuno a wladwriaeth mae iawn "
        );
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
    fn diacritics_of_home_languages_fold_away() {
        assert_eq!(normalise("Chcę się zabić"), " chce sie zabic ");
        assert_eq!(normalise("vreau să mă sinucid"), " vreau sa ma sinucid ");
        assert_eq!(
            normalise("școală şcoala țară ţara ŵyn tŷ łódź"),
            " scoala scoala tara tara wyn ty lodz "
        );
        assert_eq!(normalise("suicídio ação"), " suicidio acao ");
    }

    #[test]
    fn arabic_script_forms_fold_to_one() {
        // With and without vowel marks and tatweel; Arabic ي / ك and Urdu ی / ک.
        assert_eq!(normalise("انتـــحَار"), normalise("انتحار"));
        assert_eq!(normalise("خودكشي"), normalise("خودکشی"));
        assert_eq!(normalise("أريد"), normalise("اريد"));
        // Gurmukhi with and without nukta and tippi.
        assert_eq!(normalise("ਖ਼ੁਦਕੁਸ਼ੀ"), normalise("ਖੁਦਕੁਸੀ"));
    }

    #[test]
    fn letters_spelled_out_become_one_word() {
        assert_eq!(normalise("k i l l myself"), " kill myself ");
        assert_eq!(normalise("s.u.i.c.i.d.e"), " suicide ");
        assert_eq!(normalise("s-u-i-c-i-d-e notes"), " suicide notes ");
        // Two single letters are not a spelled-out word ("a b testing", "i a m" is three).
        assert_eq!(normalise("plan a b"), " plan a b ");
        assert_eq!(normalise("year 6 a"), " year 6 a ");
    }

    #[test]
    fn bad_percent_escapes_do_not_panic() {
        assert_eq!(normalise("50% off %zz %e2%28"), " 50 off zz ");
    }
}
