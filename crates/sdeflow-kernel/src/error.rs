//! The one error type of sdeflow: every variant names what went wrong and what would fix it.

use std::path::PathBuf;

/// Errors raised by the kernel and by every plugin.
///
/// Messages are lowercase with no final period, like candle's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin name that no crate registered; `known` lists the registered names of that kind.
    #[error("unknown {kind} plugin `{name}`{}; registered {kind} plugins: {}", suggestion(name, known), known.join(", "))]
    UnknownPlugin {
        /// The plugin kind (`sde`, `solver`, ...).
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// Every registered name of that kind, sorted.
        known: Vec<String>,
    },
    /// Two crates registered the same name for the same kind.
    #[error("{kind} plugin `{name}` is registered twice, by `{first}` and by `{second}`")]
    DuplicatePlugin {
        /// The plugin kind.
        kind: &'static str,
        /// The name registered twice.
        name: &'static str,
        /// The crate of the first registration.
        first: &'static str,
        /// The crate of the second registration.
        second: &'static str,
    },
    /// A parameter value that the plugin cannot use.
    #[error("{plugin}: invalid `{field}`: {reason}")]
    InvalidParam {
        /// The plugin (or pipeline part) the parameter belongs to.
        plugin: String,
        /// The parameter's field name.
        field: String,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
    /// NaN or infinity appeared; `step` and `t` say where, `rows` which samples.
    #[error(
        "non-finite values in {what} at step {step} (t = {t:e}){}",
        rows_text(rows)
    )]
    NonFinite {
        /// What held the non-finite values.
        what: String,
        /// The solver step after which they were found.
        step: usize,
        /// The time reached by that step.
        t: f64,
        /// The first offending samples (their indices in the run; at most
        /// [`NON_FINITE_ROWS`]); empty where unknown.
        rows: Vec<u64>,
    },
    /// A configuration text that does not parse or validate, with its position.
    #[error("{file}:{line}:{col}: {msg}")]
    Config {
        /// The file (or `<inline>` for text given through the API).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong and what would be valid.
        msg: String,
    },
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An input/output failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that exists but cannot be used (truncated, corrupted, or written for another
    /// model): `problem` says which and what would fix it.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Anything else, with a message that says what to do.
    #[error("{0}")]
    Msg(String),
}

/// How many offending rows a [`Error::NonFinite`] names.
pub const NON_FINITE_ROWS: usize = 8;

/// ", first in samples 3, 17 and 20" for [`Error::NonFinite`].
fn rows_text(rows: &[u64]) -> String {
    match rows {
        [] => String::new(),
        [r] => format!(", in sample {r}"),
        [init @ .., last] => format!(
            ", first in samples {} and {last}",
            init.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// " (did you mean `x`?)" for the registered name nearest to `name`, or nothing.
pub fn suggestion(name: &str, known: &[String]) -> String {
    nearest(name, known.iter().map(String::as_str))
        .map_or_else(String::new, |n| format!(" (did you mean `{n}`?)"))
}

/// The candidate nearest to `name` by edit distance, if any is reasonably close (at most half
/// of the longer name's characters edited).
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| 2 * d <= name.chars().count().max(c.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The result type of sdeflow.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// An [`Error::InvalidParam`] for `plugin`'s `field`.
    pub fn invalid(
        plugin: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidParam {
            plugin: plugin.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Returns early with an [`Error::Msg`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Msg(format!($($arg)*)))
    };
}
