//! The second signal: a small linear classifier over the words, word pairs and character
//! 4-grams of normalised text, one logistic regression per concern, for texts that say the
//! same as a library's terms in words no term lists. It only adds alerts (a library that
//! matched is reported as the library's hit), each names the features that weighed most, and
//! the policy can switch it off (`[keyword_model] enabled = false`).
//!
//! The default model is trained by `invigilator-collector policy train` on every labelled
//! development set in `corpus/` (the command is in `corpus/train/README.md`) and shipped as
//! `default_keyword_model.txt`; nothing is downloaded. Its figures
//! are measured by cross-validation (`policy eval`, `--threshold` to compare), never on the items it was
//! trained on.

use std::collections::HashMap;

use serde::Deserialize;

use super::normalise;

/// `[keyword_model]` in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// Default true.
    pub enabled: bool,
    /// The probability at and above which the model raises a concern (default 0.98: the model
    /// is there to catch what the terms miss, not to add doubtful alerts; cross-validated on
    /// the corpus, 0.98 kept false positives under 1%).
    pub threshold: f32,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

pub const DEFAULT_THRESHOLD: f32 = 0.98;

/// Weights this small are left out of a written model: they change no decision at the
/// threshold, and leaving them out keeps the shipped file small enough to read and review.
pub const WRITTEN_MIN_WEIGHT: f32 = 0.15;

/// The shipped model.
pub const DEFAULT_MODEL: &str = include_str!("../default_keyword_model.txt");

const MAGIC: &str = "# invigilator keyword model v1";

/// One weight vector per concern over hashed features.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Library ids, in weight order.
    pub labels: Vec<String>,
    bias: Vec<f32>,
    /// Feature hash → weight per label.
    weights: Table,
}

/// Feature hash → a row of one weight per label, the rows side by side in one array: a lookup
/// is one probe and one cache line, where a vector per feature cost a pointer chase each.
#[derive(Debug, Clone, Default)]
struct Table {
    labels: usize,
    rows: foldhash::HashMap<u32, u32>,
    values: Vec<f32>,
}

impl Table {
    fn new(labels: usize) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    fn get(&self, h: &u32) -> Option<&[f32]> {
        let at = *self.rows.get(h)? as usize * self.labels;
        Some(&self.values[at..at + self.labels])
    }

    fn row(&mut self, h: u32) -> &mut [f32] {
        let next = self.rows.len() as u32;
        let at = *self.rows.entry(h).or_insert(next) as usize * self.labels;
        if at == self.values.len() {
            self.values.resize(at + self.labels, 0.0);
        }
        &mut self.values[at..at + self.labels]
    }

    fn keys(&self) -> impl Iterator<Item = &u32> {
        self.rows.keys()
    }
}

/// Training: passes over the corpus, AdaGrad's base rate and the L2 penalty.
const EPOCHS: usize = 30;
const RATE: f32 = 0.5;
const L2: f32 = 1e-4;
/// Features found in fewer texts than this are left out: a feature of one text says little
/// beyond that text, and most features are such. It keeps the shipped file small enough to
/// review, and cross-validated it cost less recall than false positives it saved.
const MIN_TEXTS: u32 = 2;

/// A concern the model found likely, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub label: String,
    pub probability: f32,
    /// The features that weighed most for it, e.g. `"nobody would"`, `"*miss*"`.
    pub because: Vec<String>,
}

/// Where a feature is in the normalised text, to print it when it explains a verdict.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// A word or a pair of neighbouring words: bytes of the text.
    Words(usize, usize),
    /// A character 4-gram: bytes of the text.
    Gram(usize, usize),
}

/// Calls `f` with each hashed feature of normalised text (` w1 w2 `) and where it is: its
/// words, neighbouring word pairs and character 4-grams, spaces included, so a misspelt or
/// run-together word still shares most of its grams with the right one. A feature found twice
/// is passed twice. No allocation per feature: this runs on every text.
fn each_feature(norm: &str, mut f: impl FnMut(u32, Span)) {
    let bytes = norm.as_bytes();
    let mut previous: Option<(usize, usize)> = None;
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (b == b' ', start) {
            (true, Some(s)) => {
                f(hash(b'w', &[&bytes[s..i]]), Span::Words(s, i));
                if let Some((ps, pe)) = previous {
                    let h = hash(b'b', &[&bytes[ps..pe], b" ", &bytes[s..i]]);
                    f(h, Span::Words(ps, i));
                }
                previous = Some((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    let mut gram = |s: usize, e: usize| f(hash(b'c', &[&bytes[s..e]]), Span::Gram(s, e));
    if norm.is_ascii() {
        // Most text: every byte a character, no boundaries to collect.
        (0..norm.len().saturating_sub(3)).for_each(|s| gram(s, s + 4));
    } else {
        let bounds: Vec<usize> = norm
            .char_indices()
            .map(|(i, _)| i)
            .chain([norm.len()])
            .collect();
        bounds.windows(5).for_each(|w| gram(w[0], w[4]));
    }
}

/// Each feature of the text once, with where it is (for training and for explaining).
fn features(norm: &str) -> Vec<(u32, Span)> {
    let mut out = Vec::with_capacity(norm.len() + norm.len() / 2);
    each_feature(norm, |h, span| out.push((h, span)));
    out.sort_unstable_by_key(|(h, _)| *h);
    out.dedup_by_key(|(h, _)| *h);
    out
}

/// Each feature of the text once, without where it is: what scoring needs, and sorting bare
/// hashes is cheaper than sorting them with their spans.
fn feature_hashes(norm: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(norm.len() + norm.len() / 2);
    each_feature(norm, |h, _| out.push(h));
    out.sort_unstable();
    out.dedup();
    out
}

fn show(norm: &str, span: Span) -> String {
    match span {
        Span::Words(s, e) => norm[s..e].to_owned(),
        Span::Gram(s, e) => format!("*{}*", norm[s..e].trim()),
    }
}

/// FNV-1a, 32 bits, over a kind byte and the feature's bytes: stable across builds and
/// platforms, which a model file needs (the standard library's hasher is neither).
fn hash(kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in std::iter::once(kind).chain(parts.iter().flat_map(|p| p.iter().copied())) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A model file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("keyword model, line {line}: {why}")]
pub struct ModelError {
    pub line: usize,
    pub why: String,
}

impl Model {
    /// Trains one logistic regression per label on `(text, label)` pairs; `label` is a library
    /// id or anything else for innocent text. Deterministic: same items, same model.
    /// Classes are not weighed: weighing each concern's few positives up against the many
    /// others raised cross-validated recall a little and false positives far more.
    pub fn train(items: &[(&str, &str)], labels: &[String]) -> Self {
        let examples: Vec<(Vec<u32>, Option<usize>)> = items
            .iter()
            .map(|(text, label)| {
                let f = features(&normalise(text))
                    .into_iter()
                    .map(|(h, _)| h)
                    .collect();
                (f, labels.iter().position(|l| l == label))
            })
            .collect();
        let mut seen: HashMap<u32, u32> = HashMap::new();
        for (f, _) in &examples {
            for h in f {
                *seen.entry(*h).or_default() += 1;
            }
        }
        let examples: Vec<(Vec<u32>, Option<usize>)> = examples
            .into_iter()
            .map(|(f, y)| {
                let kept = f.into_iter().filter(|h| seen[h] >= MIN_TEXTS).collect();
                (kept, y)
            })
            .collect();
        let n = labels.len();
        let mut bias = vec![0.0f32; n];
        let mut weights = Table::new(n);
        // AdaGrad: features seen rarely still move.
        let mut g2: HashMap<u32, Vec<f32>> = HashMap::new();
        let mut g2_bias = vec![1e-6f32; n];
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut seed = 0x2545_f491_u32;
        for _ in 0..EPOCHS {
            // A fixed-seed shuffle (xorshift) per epoch.
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                order.swap(i, seed as usize % (i + 1));
            }
            for &i in &order {
                let (f, y) = &examples[i];
                let mut grads = bias.clone();
                for h in f {
                    if let Some(w) = weights.get(h) {
                        grads.iter_mut().zip(w).for_each(|(z, w)| *z += w);
                    }
                }
                for (k, z) in grads.iter_mut().enumerate() {
                    *z = sigmoid(*z) - if *y == Some(k) { 1.0 } else { 0.0 };
                    g2_bias[k] += *z * *z;
                    bias[k] -= RATE * *z / g2_bias[k].sqrt();
                }
                for h in f {
                    let w = weights.row(*h);
                    let g = g2.entry(*h).or_insert_with(|| vec![1e-6; n]);
                    for ((w, g), grad) in w.iter_mut().zip(g.iter_mut()).zip(&grads) {
                        let gk = grad + L2 * *w;
                        *g += gk * gk;
                        *w -= RATE * gk / g.sqrt();
                    }
                }
            }
        }
        Self {
            labels: labels.to_vec(),
            bias,
            weights,
        }
    }

    /// Every label at or above `threshold`, most likely first.
    pub fn classify(&self, text: &str, threshold: f32) -> Vec<Verdict> {
        self.classify_normalised(&normalise(text), threshold, |_| false)
    }

    /// [`Model::classify`] of text already normalised, leaving out the labels `skip` says are
    /// already known (a term matched them): no explanation is built for those.
    pub(super) fn classify_normalised(
        &self,
        norm: &str,
        threshold: f32,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<Verdict> {
        if self.labels.is_empty() {
            return Vec::new();
        }
        let mut z = self.bias.clone();
        for h in &feature_hashes(norm) {
            if let Some(w) = self.weights.get(h) {
                z.iter_mut().zip(w).for_each(|(z, w)| *z += w);
            }
        }
        // Most texts stop here: nothing likely enough.
        let mut out = Vec::new();
        let mut feats = None;
        for (k, label) in self.labels.iter().enumerate() {
            let p = sigmoid(z[k]);
            if p < threshold || skip(label) {
                continue;
            }
            let feats = feats.get_or_insert_with(|| features(norm));
            // The three features that weighed most for it, without sorting them all.
            let mut top: [Option<(Span, f32)>; 3] = [None; 3];
            for (h, span) in feats.iter() {
                let Some(w) = self.weights.get(h).map(|w| w[k]).filter(|w| *w > 0.0) else {
                    continue;
                };
                if let Some(i) = top.iter().position(|t| t.is_none_or(|(_, x)| w > x)) {
                    top[i..].rotate_right(1);
                    top[i] = Some((*span, w));
                }
            }
            out.push(Verdict {
                label: label.clone(),
                probability: p,
                because: top.iter().flatten().map(|(s, _)| show(norm, *s)).collect(),
            });
        }
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        out
    }

    /// The model as text: a header, the labels, the biases, then one line per feature with its
    /// non-negligible weights. Features whose every weight is below `min_weight` are left out.
    pub fn write(&self, min_weight: f32) -> String {
        let mut out = format!("{MAGIC}\nlabels {}\nbias", self.labels.join(" "));
        for b in &self.bias {
            out.push_str(&format!(" {b:.4}"));
        }
        out.push('\n');
        let mut keys: Vec<&u32> = self.weights.keys().collect();
        keys.sort_unstable();
        for h in keys {
            let w = self.weights.get(h).unwrap_or_default();
            let kept: Vec<String> = w
                .iter()
                .enumerate()
                .filter(|(_, x)| x.abs() >= min_weight)
                .map(|(k, x)| format!("{k}:{x:.3}"))
                .collect();
            if !kept.is_empty() {
                out.push_str(&format!("{h:08x} {}\n", kept.join(" ")));
            }
        }
        out
    }

    pub fn read(text: &str) -> Result<Self, ModelError> {
        let fail = |line: usize, why: &str| ModelError {
            line,
            why: why.to_owned(),
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.trim() == MAGIC => {}
            _ => return Err(fail(1, "not an Invigilator keyword model (first line)")),
        }
        let labels: Vec<String> = match lines.next() {
            Some((_, l)) if l.starts_with("labels ") => {
                l.split_whitespace().skip(1).map(str::to_owned).collect()
            }
            _ => return Err(fail(2, "expected `labels ...`")),
        };
        let n = labels.len();
        let bias: Vec<f32> = match lines.next() {
            Some((_, l)) if l.starts_with("bias") => l
                .split_whitespace()
                .skip(1)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| fail(3, "a bias is not a number"))?,
            _ => return Err(fail(3, "expected `bias ...`")),
        };
        if bias.len() != n {
            return Err(fail(3, "one bias per label expected"));
        }
        let mut weights = Table::new(n);
        for (i, line) in lines {
            let mut parts = line.split_whitespace();
            let Some(h) = parts.next() else { continue };
            let h = u32::from_str_radix(h, 16).map_err(|_| fail(i + 1, "bad feature hash"))?;
            let mut w = vec![0.0; n];
            for p in parts {
                let (k, x) = p
                    .split_once(':')
                    .ok_or_else(|| fail(i + 1, "expected label:weight"))?;
                let k: usize = k.parse().map_err(|_| fail(i + 1, "bad label index"))?;
                let x: f32 = x.parse().map_err(|_| fail(i + 1, "bad weight"))?;
                if k >= n || !x.is_finite() {
                    return Err(fail(i + 1, "label index or weight out of range"));
                }
                w[k] = x;
            }
            weights.row(h).copy_from_slice(&w);
        }
        Ok(Self {
            labels,
            bias,
            weights,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A one-concern model from eight texts, for tests here and in the matcher's.
    pub(crate) fn toy() -> Model {
        let items = [
            ("i want to disappear forever", "self_harm"),
            ("nobody would notice if i was gone", "self_harm"),
            ("i just want everything to stop forever", "self_harm"),
            ("how to make my pain stop forever", "self_harm"),
            ("best football boots", "none"),
            ("how to make pancakes", "none"),
            ("disappearing ink science experiment", "none"),
            ("the notice board at school", "none"),
        ];
        Model::train(&items, &["self_harm".to_owned()])
    }

    #[test]
    fn it_learns_a_concern_and_says_why() {
        let m = toy();
        let v = m.classify("i want it all to stop forever", 0.5);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].label, "self_harm");
        assert!(!v[0].because.is_empty());
        assert!(m.classify("pancakes for breakfast", 0.5).is_empty());
    }

    #[test]
    fn a_written_model_reads_back_the_same() {
        let m = toy();
        let again = Model::read(&m.write(0.0)).unwrap();
        for text in ["i want it all to stop forever", "how to make pancakes"] {
            let (a, b) = (m.classify(text, 0.0), again.classify(text, 0.0));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x.probability - y.probability).abs() < 0.01, "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn a_bad_model_file_is_named() {
        assert!(
            Model::read("hello")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let bad = format!("{MAGIC}\nlabels a b\nbias 0 0\nzz 0:1\n");
        assert!(
            Model::read(&bad)
                .unwrap_err()
                .to_string()
                .contains("line 4")
        );
        let bad = format!("{MAGIC}\nlabels a\nbias 0\n0000abcd 7:1\n");
        assert!(Model::read(&bad).is_err());
    }

    #[test]
    fn the_shipped_model_reads() {
        let m = Model::read(DEFAULT_MODEL).unwrap();
        assert!(m.labels.iter().any(|l| l == "self_harm"), "{:?}", m.labels);
    }
}
