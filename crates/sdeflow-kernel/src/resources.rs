//! Memory bounds: what a run will allocate is estimated from its sizes (steps, samples, batch,
//! chunk rows) and checked before it allocates, so that a typo such as
//! `steps: 18446744073709551615` is an error that says the estimate, not an abort an hour in.
//!
//! The budget is the memory the machine (or its cgroup) has available, or
//! `SDEFLOW_MEMORY_LIMIT` (`512MiB`, `8GB`, `2e9`) where set. Estimates count the tensors a
//! run holds at once, rounded up; they are a guard against the impossible, not a measurement.

use std::fmt;

use crate::{Error, Result};

/// The environment variable that caps the memory a run may plan to use.
pub const LIMIT_VAR: &str = "SDEFLOW_MEMORY_LIMIT";

/// Estimates up to this many bytes are not checked ([`Estimate::ensure`]): any machine a run
/// starts on has them.
pub const ALWAYS_AVAILABLE: u128 = 64 << 20;

/// A sum of named parts, in bytes (saturating: an absurd size stays absurd, never wraps).
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    parts: Vec<(String, u128)>,
}

impl Estimate {
    /// No parts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `count` elements of `bytes` each, named `what`.
    pub fn add(&mut self, what: impl Into<String>, count: u128, bytes: u128) -> &mut Self {
        self.parts.push((what.into(), count.saturating_mul(bytes)));
        self
    }

    /// The total.
    pub fn total(&self) -> u128 {
        self.parts
            .iter()
            .fold(0u128, |a, (_, b)| a.saturating_add(*b))
    }

    /// The name of the largest part.
    pub fn largest(&self) -> Option<&str> {
        self.parts.iter().max_by_key(|p| p.1).map(|p| p.0.as_str())
    }

    /// Checks the total against the memory available now ([`Budget::current`]), unless it is
    /// below [`ALWAYS_AVAILABLE`]: reading the budget costs system calls, and a tuned grid's
    /// search runs the pipeline, and so this check, up to 10⁵ times. `error` makes the
    /// error of the message [`check`](Self::check) writes.
    pub fn ensure(&self, fix: &str, error: impl FnOnce(String) -> Error) -> Result<()> {
        if self.total() <= ALWAYS_AVAILABLE {
            return Ok(());
        }
        self.check(&Budget::current()?, fix).map_err(error)
    }

    /// Checks the total against `budget`; the error's text says the estimate, its largest
    /// parts, the budget and `fix`.
    pub fn check(&self, budget: &Budget, fix: &str) -> std::result::Result<(), String> {
        let total = self.total();
        if total <= u128::from(budget.bytes) {
            return Ok(());
        }
        Err(format!(
            "the run would allocate about {} ({self}), more than the {} {}; {fix}",
            human(total),
            human(u128::from(budget.bytes)),
            budget.source
        ))
    }
}

impl fmt::Display for Estimate {
    /// The parts, largest first: `trajectory 8.0 GiB, grid 800 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&(String, u128)> = self.parts.iter().filter(|p| p.1 > 0).collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (i, (what, bytes)) in parts.iter().take(4).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{what} {}", human(*bytes))?;
        }
        Ok(())
    }
}

/// The memory a run may plan to use, and where the figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Bytes.
    pub bytes: u64,
    /// "of memory available", or "that SDEFLOW_MEMORY_LIMIT allows".
    pub source: String,
}

impl Budget {
    /// `SDEFLOW_MEMORY_LIMIT` where set, else the memory available now (the smaller of the
    /// machine's and its cgroup's). A limit that does not parse is an error naming the variable.
    pub fn current() -> Result<Self> {
        if let Ok(text) = std::env::var(LIMIT_VAR) {
            let bytes = parse_size(&text).ok_or_else(|| {
                Error::invalid(
                    LIMIT_VAR,
                    LIMIT_VAR,
                    format!(
                        "`{text}` is not a size; write bytes or a number with a unit: 512MiB, 8GB, 2e9"
                    ),
                )
            })?;
            return Ok(Self {
                bytes,
                source: format!("that {LIMIT_VAR} allows"),
            });
        }
        Ok(Self {
            bytes: available(),
            source: "of memory available".into(),
        })
    }
}

/// The memory available now: the machine's, or its cgroup's free memory where smaller. Where
/// neither is known (an unsupported platform reads 0), no limit.
fn available() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let machine = match sys.available_memory() {
        0 => u64::MAX,
        m => m,
    };
    sys.cgroup_limits()
        .map_or(machine, |c| machine.min(c.free_memory.max(1)))
}

/// `512MiB`, `8 GB`, `2e9`, `1048576`: bytes (`k`/`M`/`G`/`T` powers of 1000, `Ki`/`Mi`/…
/// of 1024; a trailing `B` optional).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let scale = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = value * scale;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Bytes in words: `812 B`, `3.4 MiB`, `16.0 EiB`, `2.1e24 B` beyond.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    for unit in &UNITS[1..] {
        v /= 1024.0;
        if v < 1024.0 {
            return format!("{v:.1} {unit}");
        }
    }
    format!("{:.1e} B", bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("8 GB"), Some(8_000_000_000));
        assert_eq!(parse_size("2e9"), Some(2_000_000_000));
        assert_eq!(parse_size("1.5Ki"), Some(1536));
        for bad in ["", "lots", "-1GB", "0", "NaN", "1e30", "5 parsecs"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_absurd_estimate_saturates_and_names_its_largest_part() {
        let mut e = Estimate::new();
        e.add("grid", u128::from(u64::MAX) + 1, 64)
            .add("state", 10, 8);
        let budget = Budget {
            bytes: 1 << 30,
            source: "of memory available".into(),
        };
        let err = e.check(&budget, "use fewer steps").expect_err("too big");
        assert!(
            err.starts_with("the run would allocate about 1.2e21 B (grid 1.2e21 B, state 80 B), more than the 1.0 GiB of memory available; use fewer steps"),
            "{err}"
        );
        let mut small = Estimate::new();
        small.add("state", 1000, 8);
        assert!(small.check(&budget, "").is_ok());
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
