//! Function names: unique per owner, and safe to embed in image repository and container names.

use std::fmt;

/// A validated function name: 1–63 characters of `[a-z0-9_-]`, starting with a letter and ending
/// with a letter or digit, so it fits DNS labels, registry repositories and container names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionNameError {
    #[error("function name must not be empty")]
    Empty,
    #[error("function name must be at most 63 characters, got {0}")]
    TooLong(usize),
    #[error("function name must start with a lowercase letter")]
    BadStart,
    #[error("function name must end with a lowercase letter or a digit")]
    BadEnd,
    #[error("function name may only contain lowercase letters, digits, '-' and '_' (found {0:?})")]
    BadCharacter(char),
}

impl FunctionName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, FunctionNameError> {
        let len = raw.chars().count();
        if len == 0 {
            return Err(FunctionNameError::Empty);
        }
        if len > Self::MAX_LEN {
            return Err(FunctionNameError::TooLong(len));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(FunctionNameError::BadCharacter(bad));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(FunctionNameError::BadStart);
        }
        if !raw.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(FunctionNameError::BadEnd);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a registry repository component. Registries accept `_` only in restricted
    /// positions, so it becomes `-`, and runs of separators collapse to one.
    pub fn repository_component(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for c in self.0.chars() {
            let c = if c == '_' { '-' } else { c };
            if c == '-' && out.ends_with('-') {
                continue;
            }
            out.push(c);
        }
        out
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_examples() {
        assert_eq!(
            FunctionName::parse("my_function").unwrap().as_str(),
            "my_function"
        );
        assert_eq!(
            FunctionName::parse("my-function").unwrap().as_str(),
            "my-function"
        );
        assert_eq!(FunctionName::parse("a").unwrap().as_str(), "a");
        assert_eq!(FunctionName::parse("f2").unwrap().as_str(), "f2");
    }

    #[test]
    fn rejects_each_malformed_shape_with_its_reason() {
        assert_eq!(FunctionName::parse(""), Err(FunctionNameError::Empty));
        assert_eq!(
            FunctionName::parse(&"a".repeat(64)),
            Err(FunctionNameError::TooLong(64))
        );
        assert_eq!(
            FunctionName::parse("1abc"),
            Err(FunctionNameError::BadStart)
        );
        assert_eq!(
            FunctionName::parse("-abc"),
            Err(FunctionNameError::BadStart)
        );
        assert_eq!(FunctionName::parse("abc-"), Err(FunctionNameError::BadEnd));
        assert_eq!(
            FunctionName::parse("Abc"),
            Err(FunctionNameError::BadCharacter('A'))
        );
        assert_eq!(
            FunctionName::parse("a b"),
            Err(FunctionNameError::BadCharacter(' '))
        );
        assert_eq!(
            FunctionName::parse("a/../b"),
            Err(FunctionNameError::BadCharacter('/'))
        );
        assert_eq!(
            FunctionName::parse("é"),
            Err(FunctionNameError::BadCharacter('é'))
        );
    }

    #[test]
    fn repository_component_is_registry_safe() {
        let name = FunctionName::parse("my__great_fn-_x").unwrap();
        assert_eq!(name.repository_component(), "my-great-fn-x");
    }
}
