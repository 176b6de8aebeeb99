//! The data contracts catch what they claim to: each broken source registered here (and only
//! here: this binary links no built-in plugin) fails exactly the check its defect breaks, and a
//! sound one passes every check.

use std::sync::atomic::{AtomicU64, Ordering};

use sdeflow_conformance::{Options, run};
use sdeflow_kernel::{
    Result,
    data::{DataSource, Extent, Moments, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct NoParams {}

/// N(0, 1) in 1-D with a defect.
#[derive(Debug, Default)]
struct Source {
    /// Adds a call counter to every value (rows depend on how they are drawn).
    stateful: bool,
    /// Declares mean 0.1.
    wrong_mean: bool,
    /// Declares the range [−1, 1].
    narrow_range: bool,
    /// Row 3 is NaN.
    nan: bool,
    calls: AtomicU64,
}

impl DataSource for Source {
    fn sample_shape(&self) -> Vec<usize> {
        vec![1]
    }
    fn extent(&self) -> Extent {
        Extent::Unbounded
    }
    fn range(&self) -> Option<(f64, f64)> {
        self.narrow_range.then_some((-1.0, 1.0))
    }
    fn moments(&self) -> Option<Moments> {
        Some(Moments {
            mean: vec![if self.wrong_mean { 0.1 } else { 0.0 }],
            covariance: vec![vec![1.0]],
        })
    }
    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let RowRef::Draw(noise) = at else {
            return Err(sdeflow_kernel::Error::Msg("no stored rows".into()));
        };
        noise.normals(0, out);
        if self.stateful {
            out[0] += self.calls.fetch_add(1, Ordering::Relaxed) as f64 * 1e-9;
        }
        if self.nan && noise.row() == 3 {
            out[0] = f64::NAN;
        }
        Ok(None)
    }
}

register_data!("sound", "N(0, 1)", NoParams, |_: NoParams| Ok(
    Source::default()
));
register_data!(
    "stateful",
    "rows depend on the call",
    NoParams,
    |_: NoParams| {
        Ok(Source {
            stateful: true,
            ..Source::default()
        })
    }
);
register_data!(
    "wrong_mean",
    "declares a wrong mean",
    NoParams,
    |_: NoParams| {
        Ok(Source {
            wrong_mean: true,
            ..Source::default()
        })
    }
);
register_data!(
    "narrow_range",
    "declares too narrow a range",
    NoParams,
    |_: NoParams| {
        Ok(Source {
            narrow_range: true,
            ..Source::default()
        })
    }
);
register_data!("nan", "a NaN row", NoParams, |_: NoParams| {
    Ok(Source {
        nan: true,
        ..Source::default()
    })
});

#[test]
fn each_defect_fails_its_check_and_only_it() -> Result<()> {
    let report = run(
        sdeflow_kernel::Registry::global()?,
        &Options {
            kind: Some("data".into()),
            ..Options::default()
        },
    );
    println!("{report}");
    let failed = |plugin: &str| -> Vec<String> {
        report
            .rows
            .iter()
            .filter(|r| r.plugin == format!("data/{plugin}") && !r.pass)
            .map(|r| r.check.clone())
            .collect()
    };
    assert!(failed("sound").is_empty(), "{:?}", failed("sound"));
    // The defect's check, and what else it may break (a NaN row spoils the moments, and the
    // held-out row of the same index is NaN too, which reads as a shared draw).
    let want = [
        ("stateful", "row i identical", &[][..]),
        ("wrong_mean", "mean and covariance", &[]),
        ("narrow_range", "inside the declared range", &[]),
        ("nan", "finite", &["mean and covariance", "disjoint"]),
    ];
    for (plugin, check, also) in want {
        let f = failed(plugin);
        assert!(
            f.iter().any(|c| c.contains(check))
                && f.iter()
                    .all(|c| c.contains(check) || also.iter().any(|a| c.contains(a))),
            "{plugin}: expected `{check}` to fail (and at most {also:?}), failed {f:?}"
        );
    }
    Ok(())
}
