//! Errors that point at the policy text: a byte span from `toml::Spanned`, turned into a line
//! number when the error is shown, so "policy.toml:57: ..." leads straight to the mistake.

use std::ops::Range;

/// A problem in the policy, with where in the text it is when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            span: None,
            message: message.into(),
        }
    }

    /// An error about the value at `span` (from `toml::Spanned::span()`).
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }

    /// "line N: message", with N counted in `text`, the policy the span points into.
    pub fn render(&self, text: &str) -> String {
        match &self.span {
            Some(span) => format!("line {}: {}", line_of(text, span.start), self.message),
            None => self.message.clone(),
        }
    }
}

impl From<String> for SpecError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_line_numbers() {
        let text = "a = 1\nb = [\n  \"x\",\n]\n";
        let x = text.find("\"x\"").unwrap();
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, x), 3);
        assert_eq!(
            SpecError::at(x..x + 3, "bad pattern").render(text),
            "line 3: bad pattern"
        );
        assert_eq!(SpecError::new("no span").render(text), "no span");
    }
}
