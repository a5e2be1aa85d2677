//! What can go wrong while loading the configuration.

use std::fmt;
use std::path::PathBuf;

/// Loading or validating the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named configuration file does not exist.
    #[error("config file {} does not exist", path.display())]
    FileNotFound { path: PathBuf },

    /// The file exists but cannot be read (permissions, a directory, not UTF-8).
    #[error("cannot read config file {}: {source}", path.display())]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML; `message` carries the line and column.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },

    /// Values of the wrong type, out of range, unknown keys, missing required keys: all of
    /// them, one per line.
    #[error("{}", ProblemList(problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// The individual problems of an [`ConfigError::Invalid`]; empty for the file errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

/// One thing wrong with one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key concerned (the first one, for problems involving two keys).
    pub key: String,
    /// The full sentence shown to the user; it names the key itself.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}
