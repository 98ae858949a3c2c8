//! Measuring the keyword libraries on a labelled corpus: recall per concern (the concern's own
//! library raised an alert) and the false-positive rate on innocent text (any library did).
//! `invigilator-collector policy eval` prints it; tests hold floors on the repository's corpus
//! (`collector/policy/corpus/`), which was written apart from the libraries and frozen first.

use super::Keywords;
use super::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One labelled search or page title (a line of the corpus, JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub text: String,
    /// "search" or "title".
    pub kind: String,
    /// A concern id, or "none" for innocent text.
    pub label: String,
    pub lang: String,
    #[serde(default)]
    pub band: String,
    #[serde(default)]
    pub note: String,
}

/// The label of innocent text.
pub const NONE: &str = "none";

/// The library that should fire for a corpus label: the same id, except where the corpus
/// and the libraries name a concern differently.
pub fn library_for(label: &str) -> &str {
    match label {
        "sexual_content" => "sexual",
        other => other,
    }
}

/// Reads a JSON-lines corpus; an error names the line.
pub fn load(path: &Path) -> Result<Vec<Item>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}

/// How one group of items fared.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Score {
    pub items: usize,
    /// Concerning items: the concern's own library fired. Innocent items: any library fired.
    pub flagged: usize,
}

impl Score {
    pub fn rate(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            self.flagged as f64 / self.items as f64
        }
    }
}

/// One item the libraries got wrong, for reading: what it was and what fired.
#[derive(Debug, Clone, Serialize)]
pub struct Mistake {
    pub text: String,
    pub label: String,
    pub lang: String,
    pub fired: Vec<String>,
    /// What matched, as an alert would say it: `keyword "kms" ("kms") in "self_harm"`.
    pub why: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Recall per concern, all languages.
    pub concerns: BTreeMap<String, Score>,
    /// Recall per concern and language, for the items not in English.
    pub by_language: BTreeMap<(String, String), Score>,
    /// Innocent items and how many raised anything.
    pub innocent: Score,
    pub misses: Vec<Mistake>,
    pub false_positives: Vec<Mistake>,
}

impl Report {
    /// The lowest recall of any concern, with its name.
    pub fn worst(&self) -> Option<(&str, f64)> {
        self.concerns
            .iter()
            .map(|(c, s)| (c.as_str(), s.rate()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    pub fn render(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "| concern | items | caught | recall |")?;
        writeln!(out, "|---|---|---|---|")?;
        for (c, s) in &self.concerns {
            writeln!(
                out,
                "| {c} | {} | {} | {:.1}% |",
                s.items,
                s.flagged,
                100.0 * s.rate()
            )?;
        }
        writeln!(
            out,
            "| innocent (false positives) | {} | {} | {:.1}% |",
            self.innocent.items,
            self.innocent.flagged,
            100.0 * self.innocent.rate()
        )?;
        if !self.by_language.is_empty() {
            writeln!(out)?;
            writeln!(out, "| concern | language | items | caught | recall |")?;
            writeln!(out, "|---|---|---|---|---|")?;
            for ((c, l), s) in &self.by_language {
                writeln!(
                    out,
                    "| {c} | {l} | {} | {} | {:.1}% |",
                    s.items,
                    s.flagged,
                    100.0 * s.rate()
                )?;
            }
        }
        Ok(())
    }
}

/// Runs every item through the libraries' terms and patterns alone (the classifier, trained on
/// this very corpus, is measured by [`cross_validate`]).
pub fn evaluate(keywords: &Keywords, items: &[Item]) -> Report {
    score(items, |text| {
        keywords
            .scan_terms(text)
            .into_iter()
            .map(|h| (h.matched(), h.library))
            .collect()
    })
}

/// Everything the collector runs, as it runs it (terms, patterns, and the policy's classifier
/// and misspellings where it turns them on): the fair measure on a corpus none of it was
/// trained or written on, such as the held-out set.
pub fn evaluate_as_shipped(keywords: &Keywords, items: &[Item]) -> Report {
    score(items, |text| {
        keywords
            .scan(text)
            .into_iter()
            .map(|h| (h.matched(), h.library))
            .collect()
    })
}

/// Terms and patterns with the classifier, measured fairly: the items are split into `folds`
/// (every `folds`-th item), and each fold is judged by a model trained on the others only. One
/// report per threshold, the models trained once for all of them.
pub fn cross_validate(
    keywords: &Keywords,
    items: &[Item],
    folds: usize,
    thresholds: &[f32],
) -> Vec<Report> {
    let folds = folds.max(2);
    let labels = model_labels(items);
    let models: Vec<Model> = (0..folds)
        .map(|k| {
            let train: Vec<(&str, &str)> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| i % folds != k)
                .map(|(_, it)| (it.text.as_str(), library_for(&it.label)))
                .collect();
            // Written and read back, so the figures are those of a model as shipped (small
            // weights left out).
            let model = Model::train(&train, &labels);
            Model::read(&model.write(super::model::WRITTEN_MIN_WEIGHT))
                .expect("a written model reads back")
        })
        .collect();
    thresholds
        .iter()
        .map(|&threshold| {
            // `score` asks in item order, so the n-th call is the n-th item.
            let mut n = 0;
            score(items, |text| {
                let k = n % folds;
                n += 1;
                let mut fired: Vec<(String, String)> = keywords
                    .scan_terms(text)
                    .into_iter()
                    .map(|h| (h.matched(), h.library))
                    .collect();
                // As `Keywords::scan` does: the classifier judges English text only.
                let norm = super::normalise(text);
                if super::english::reads_as_english(&norm) {
                    for v in models[k].classify_normalised(&norm, threshold, |_| false) {
                        if keywords.libraries().any(|l| l == v.label) {
                            let why = format!("keyword model on {:?}", v.because);
                            fired.push((why, v.label));
                        }
                    }
                }
                fired
            })
        })
        .collect()
}

/// The libraries a model is trained for: every concern of the corpus.
pub fn model_labels(items: &[Item]) -> Vec<String> {
    let mut labels: Vec<String> = items
        .iter()
        .filter(|it| it.label != NONE)
        .map(|it| library_for(&it.label).to_owned())
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Trains the classifier on the whole corpus (for shipping; never measured on it).
pub fn train(items: &[Item]) -> Model {
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .map(|it| (it.text.as_str(), library_for(&it.label)))
        .collect();
    Model::train(&pairs, &model_labels(items))
}

/// Scores every item, in order, by what `hits` says of its text: each match's explanation
/// and library.
fn score(items: &[Item], mut hits: impl FnMut(&str) -> Vec<(String, String)>) -> Report {
    let mut r = Report::default();
    for item in items {
        let (why, libraries): (Vec<String>, Vec<String>) = hits(&item.text).into_iter().unzip();
        let mut fired: Vec<String> = Vec::new();
        for library in libraries {
            if !fired.contains(&library) {
                fired.push(library);
            }
        }
        let mistake = || Mistake {
            text: item.text.clone(),
            label: item.label.clone(),
            lang: item.lang.clone(),
            fired: fired.clone(),
            why: why.clone(),
        };
        if item.label == NONE {
            r.innocent.items += 1;
            if !fired.is_empty() {
                r.innocent.flagged += 1;
                r.false_positives.push(mistake());
            }
            continue;
        }
        let caught = fired.iter().any(|l| l == library_for(&item.label));
        let score = r.concerns.entry(item.label.clone()).or_default();
        score.items += 1;
        score.flagged += usize::from(caught);
        if item.lang != "en" {
            let lang = item.lang.split('-').next().unwrap_or_default().to_owned();
            let s = r.by_language.entry((item.label.clone(), lang)).or_default();
            s.items += 1;
            s.flagged += usize::from(caught);
        }
        if !caught {
            r.misses.push(mistake());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_POLICY, Policy};

    fn corpus() -> Vec<Item> {
        load(&corpus_dir().join("keywords.jsonl")).unwrap()
    }

    #[test]
    fn a_bad_corpus_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "{\"text\": \"x\"}\nnot json\n").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("c.jsonl:1"), "{err}");
    }

    /// Floors on the repository's corpus, as measured when they were set (BENCHMARKS.md has the
    /// figures and the command): the libraries may only get better. Raise a floor when a
    /// change lifts it; never lower one to let a change in.
    #[test]
    fn the_default_libraries_hold_their_floors_on_the_corpus() {
        holds_floors(
            &evaluate(default_policy().keywords(), &corpus()),
            FLOORS,
            MAX_FALSE_POSITIVES,
        );
    }

    /// The first held-out set, as the collector runs the default policy. Its misses were read
    /// to write patterns on 2026-12-04, and the classifier is trained on it since: it is a
    /// development set now (corpus/holdout/README.md), and these floors only keep its gains.
    #[test]
    fn the_default_policy_holds_its_floors_on_the_first_held_out_set() {
        holds_floors(
            &default_policy_on_held_out("holdout.jsonl"),
            HELD_OUT_FLOORS,
            MAX_FALSE_POSITIVES,
        );
    }

    /// The second English set, measured once before any change was made from it (the figures
    /// are in corpus/holdout/README.md), then used as the first was: these floors keep what
    /// it gives now.
    #[test]
    fn the_default_policy_holds_its_floors_on_the_second_held_out_set() {
        holds_floors(
            &default_policy_on_held_out("holdout2.jsonl"),
            HELD_OUT_FLOORS,
            MAX_FALSE_POSITIVES,
        );
    }

    /// The third and fourth English sets, held out since 2026-12-04 and never read, as
    /// measured at the end of session 16 (corpus/holdout/README.md): below the 95% the
    /// libraries aim at.
    #[test]
    fn the_default_policy_holds_its_floors_on_the_third_and_fourth_held_out_sets() {
        holds_floors(
            &default_policy_on_held_out("holdout3.jsonl"),
            &[
                ("bullying", 0.96),
                ("circumvention", 1.0),
                ("drugs", 0.96),
                ("extremism", 0.93),
                ("grooming", 0.96),
                ("help_seeking", 0.90),
                ("self_harm", 0.96),
                ("sextortion", 0.96),
                ("sexual_content", 0.96),
                ("weapons", 1.0),
            ],
            MAX_FALSE_POSITIVES,
        );
        holds_floors(
            &default_policy_on_held_out("holdout4.jsonl"),
            &[
                ("bullying", 1.0),
                ("circumvention", 0.96),
                ("drugs", 0.96),
                ("extremism", 1.0),
                ("grooming", 0.93),
                ("help_seeking", 1.0),
                ("self_harm", 0.96),
                ("sextortion", 0.96),
                ("sexual_content", 0.93),
                ("weapons", 0.93),
            ],
            MAX_FALSE_POSITIVES,
        );
    }

    /// The fifth to eighth English sets, written on 2026-12-04 by helpers who saw neither the
    /// libraries nor the other sets, and never read; measured before and after session 16's
    /// rounds (corpus/holdout/README.md).
    #[test]
    fn the_default_policy_holds_its_floors_on_the_fifth_to_eighth_held_out_sets() {
        holds_floors(
            &default_policy_on_held_out("holdout5.jsonl"),
            &[
                ("bullying", 0.96),
                ("circumvention", 1.0),
                ("drugs", 0.96),
                ("extremism", 1.0),
                ("grooming", 0.96),
                ("help_seeking", 0.93),
                ("self_harm", 0.96),
                ("sextortion", 0.96),
                ("sexual_content", 1.0),
                ("weapons", 1.0),
            ],
            0.031,
        );
        holds_floors(
            &default_policy_on_held_out("holdout6.jsonl"),
            &[
                ("bullying", 0.93),
                ("circumvention", 1.0),
                ("drugs", 0.86),
                ("extremism", 1.0),
                ("grooming", 0.90),
                ("help_seeking", 0.93),
                ("self_harm", 0.90),
                ("sextortion", 1.0),
                ("sexual_content", 1.0),
                ("weapons", 0.93),
            ],
            MAX_FALSE_POSITIVES,
        );
        holds_floors(
            &default_policy_on_held_out("holdout7.jsonl"),
            &[
                ("bullying", 0.86),
                ("circumvention", 1.0),
                ("drugs", 0.93),
                ("extremism", 0.96),
                ("grooming", 1.0),
                ("help_seeking", 0.93),
                ("self_harm", 0.96),
                ("sextortion", 0.90),
                ("sexual_content", 1.0),
                ("weapons", 0.90),
            ],
            MAX_FALSE_POSITIVES,
        );
        holds_floors(
            &default_policy_on_held_out("holdout8.jsonl"),
            &[
                ("bullying", 0.93),
                ("circumvention", 0.93),
                ("drugs", 0.96),
                ("extremism", 0.96),
                ("grooming", 0.90),
                ("help_seeking", 0.93),
                ("self_harm", 1.0),
                ("sextortion", 0.90),
                ("sexual_content", 1.0),
                ("weapons", 0.96),
            ],
            MAX_FALSE_POSITIVES,
        );
    }

    /// The home languages' held-out sets (self-harm, extremism, grooming, sextortion and, in
    /// the later two, help-seeking, in seven languages), as measured at the end of session 16:
    /// far below the English figures. Neither set's misses were read.
    #[test]
    fn the_default_policy_holds_its_floors_on_the_home_languages_held_out_sets() {
        holds_floors(
            &default_policy_on_held_out("holdout-ml.jsonl"),
            &[
                ("extremism", 0.71),
                ("grooming", 0.44),
                ("self_harm", 0.77),
                ("sextortion", 0.85),
            ],
            0.025,
        );
        holds_floors(
            &default_policy_on_held_out("holdout-ml2.jsonl"),
            &[
                ("extremism", 0.73),
                ("grooming", 0.64),
                ("help_seeking", 0.75),
                ("self_harm", 0.80),
                ("sextortion", 0.85),
            ],
            MAX_FALSE_POSITIVES,
        );
        holds_floors(
            &default_policy_on_held_out("holdout-ml3.jsonl"),
            &[
                ("extremism", 0.75),
                ("grooming", 0.57),
                ("help_seeking", 0.66),
                ("self_harm", 0.73),
                ("sextortion", 0.73),
            ],
            MAX_FALSE_POSITIVES,
        );
    }

    /// The training sets (`corpus/train/`): development sets the patterns were written from and
    /// the classifier is trained on, so these floors only keep their gains.
    #[test]
    fn the_default_policy_holds_its_floors_on_the_training_sets() {
        for file in [
            "train-a.jsonl",
            "train-b.jsonl",
            "train-c.jsonl",
            "train-d.jsonl",
            "train-e.jsonl",
            "train-f.jsonl",
            "train-g.jsonl",
        ] {
            holds_floors(
                &default_policy_on(&corpus_dir().join("train").join(file)),
                HELD_OUT_FLOORS,
                MAX_FALSE_POSITIVES,
            );
        }
        for file in ["train-ml.jsonl", "train-ml2.jsonl", "train-ml3.jsonl"] {
            holds_floors(
                &default_policy_on(&corpus_dir().join("train").join(file)),
                HOME_LANGUAGE_TRAINING_FLOORS,
                0.04,
            );
        }
    }

    fn corpus_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
    }

    /// The default policy, parsed once for all the tests here (its libraries and model are
    /// built at parse time).
    fn default_policy() -> &'static Policy {
        static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        POLICY.get_or_init(|| Policy::parse(DEFAULT_POLICY).unwrap())
    }

    /// The default policy, as the collector runs it, on a labelled set.
    fn default_policy_on(path: &Path) -> Report {
        evaluate_as_shipped(default_policy().keywords(), &load(path).unwrap())
    }

    /// The default policy, as the collector runs it, on a held-out set of `corpus/holdout/`.
    fn default_policy_on_held_out(file: &str) -> Report {
        default_policy_on(&corpus_dir().join("holdout").join(file))
    }

    fn holds_floors(r: &Report, floors: &[(&str, f64)], max_false_positives: f64) {
        let mut shown = Vec::new();
        r.render(&mut shown).unwrap();
        let shown = String::from_utf8(shown).unwrap();
        // With --nocapture: the figures, as `policy eval` prints them, and the false positives.
        println!("{shown}");
        for m in &r.false_positives {
            println!("false positive: {m:?}");
        }
        for (concern, floor) in floors {
            let got = r.concerns.get(*concern).map_or(0.0, Score::rate);
            assert!(
                got >= *floor,
                "{concern}: recall {got:.3} below its floor {floor}\n{shown}"
            );
        }
        assert!(
            r.innocent.rate() <= max_false_positives,
            "false positives {:.3} above {max_false_positives}\n{shown}",
            r.innocent.rate()
        );
    }

    /// Both English sets that were held out and have since been written from (2026-12-04).
    const HELD_OUT_FLOORS: &[(&str, f64)] = &[
        ("bullying", 0.96),
        ("circumvention", 0.96),
        ("drugs", 0.96),
        ("extremism", 0.96),
        ("grooming", 0.96),
        ("help_seeking", 0.96),
        ("self_harm", 0.96),
        ("sextortion", 0.96),
        ("sexual_content", 0.96),
        ("weapons", 0.96),
    ];

    /// The home-language training sets: the concerns they cover.
    const HOME_LANGUAGE_TRAINING_FLOORS: &[(&str, f64)] = &[
        ("extremism", 0.95),
        ("grooming", 0.95),
        ("help_seeking", 0.95),
        ("self_harm", 0.95),
        ("sextortion", 0.95),
    ];

    const MAX_FALSE_POSITIVES: f64 = 0.02;
    /// Set from `policy eval` on 2026-12-04, after patterns written from this corpus's
    /// misses (text-speak read by the normaliser, intent against another person, the child's
    /// side of grooming and sextortion, slang, ways round the filter, and the home languages).
    /// Written from these very items, they say little of text nobody tuned to: the held-out
    /// sets (`corpus/holdout/`) measure that.
    const FLOORS: &[(&str, f64)] = &[
        ("bullying", 0.98),
        ("circumvention", 1.0),
        ("drugs", 0.98),
        ("extremism", 0.99),
        ("grooming", 0.98),
        ("help_seeking", 1.0),
        ("self_harm", 1.0),
        ("sextortion", 0.99),
        ("sexual_content", 0.98),
        ("weapons", 1.0),
    ];
}
