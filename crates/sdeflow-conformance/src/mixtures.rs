//! The fixed conformance mixtures (DESIGN.md "Decisions"). Narrow modes make the gates
//! meaningful; do not widen them.

use sdeflow_kernel::{
    Result,
    mixture::{Covariance, GaussianMixture},
    testing::Gaussian,
};
use serde::Serialize;

/// A named mixture, in the shape of the `gmm_oracle` plugin's parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixtureSpec {
    /// Its name in reports.
    #[serde(skip)]
    pub name: &'static str,
    /// Weights.
    pub weights: Vec<f64>,
    /// Means.
    pub means: Vec<Vec<f64>>,
    /// Covariances.
    pub covariances: Vec<Covariance>,
}

impl MixtureSpec {
    /// The kernel's mixture.
    pub fn mixture(&self) -> Result<GaussianMixture> {
        GaussianMixture::new(
            self.weights.clone(),
            self.means.clone(),
            self.covariances.clone(),
        )
    }

    /// The `gmm_oracle` parameters as RON.
    pub fn oracle_params(&self) -> String {
        ron::ser::to_string(self).expect("mixture specs serialize")
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// The smallest variance of any component along any axis (a full covariance's smallest
    /// diagonal entry: an upper bound on its smallest eigenvalue).
    pub fn min_axis_variance(&self) -> f64 {
        self.covariances
            .iter()
            .map(|c| match c {
                Covariance::Isotropic(s) => s * s,
                Covariance::Diagonal(v) => v.iter().copied().fold(f64::INFINITY, f64::min),
                Covariance::Full(m) => (0..m.len()).map(|i| m[i][i]).fold(f64::INFINITY, f64::min),
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// `ring`: 8 equal modes on a circle of radius 3, per-mode std 0.15.
pub fn ring() -> MixtureSpec {
    let means = (0..8)
        .map(|k| {
            let a = std::f64::consts::TAU * k as f64 / 8.0;
            vec![3.0 * a.cos(), 3.0 * a.sin()]
        })
        .collect();
    MixtureSpec {
        name: "ring",
        weights: vec![1.0 / 8.0; 8],
        means,
        covariances: vec![Covariance::Isotropic(0.15); 8],
    }
}

/// `mix8`: 6 components in 8-D, means 2·N(0, I), per-dimension std uniform(0.15, 0.6),
/// Dirichlet(2) weights.
pub fn mix8() -> MixtureSpec {
    MixtureSpec {
        name: "mix8",
        weights: MIX8_WEIGHTS.to_vec(),
        means: MIX8_MEANS.iter().map(|m| m.to_vec()).collect(),
        covariances: MIX8_STDS
            .iter()
            .map(|s| Covariance::Diagonal(s.iter().map(|v| v * v).collect()))
            .collect(),
    }
}

/// A single Gaussian N(m, s² I) with m = (1, −0.5), s = 0.3: every affine solver maps it to a
/// Gaussian, so weak errors propagate exactly (s = 1 under VP would make the flow a pure
/// translation).
pub fn single_gaussian() -> MixtureSpec {
    MixtureSpec {
        name: "gauss",
        weights: vec![1.0],
        means: vec![vec![1.0, -0.5]],
        covariances: vec![Covariance::Isotropic(SINGLE_STD)],
    }
}

/// [`single_gaussian`] in closed form — its marginal variance, PF-ODE flow map and W2 to the
/// marginal — as the kernel's exact model of N(m, s² I).
pub fn single_law() -> Gaussian {
    Gaussian {
        mean: single_gaussian().means[0].clone(),
        std: SINGLE_STD,
    }
}

/// The single Gaussian's per-dimension std.
pub const SINGLE_STD: f64 = 0.3;

// Drawn once with numpy 2.4 and written out: rng = numpy.random.default_rng(7);
// means = 2 * rng.standard_normal((6, 8)); stds = rng.uniform(0.15, 0.6, (6, 8));
// weights = rng.dirichlet([2.0] * 6).
const MIX8_WEIGHTS: [f64; 6] = [
    0.06261685051775255,
    0.16528616631962703,
    0.23931226331490138,
    0.10231463567749342,
    0.24674163401603444,
    0.18372845015419104,
];
const MIX8_MEANS: [[f64; 8]; 6] = [
    [
        0.0024603067149651485,
        0.5974910750169398,
        -0.5482757107244352,
        -1.7811836775145484,
        -0.9093415703434451,
        -1.9832931099929247,
        0.12028720519487697,
        2.680430491109067,
    ],
    [
        -0.9844130371026593,
        -1.2409497996398808,
        0.9796841003703964,
        0.7137740163201215,
        0.21082849799579712,
        -1.8609360894164093,
        -0.05850364492654698,
        1.3906063889165756,
    ],
    [
        -2.688429094570164,
        -0.9152315220804363,
        -3.802445479601688,
        -2.579075479569952,
        -3.6834700755834646,
        -0.47018226214936254,
        -2.5348929628874064,
        0.542528717643403,
    ],
    [
        0.3135021732484503,
        -0.37386188925990876,
        -5.033519421641026,
        -1.0773857916932732,
        -0.09700189080214397,
        0.22661797200661513,
        -3.060271531010787,
        -0.9555065520678613,
    ],
    [
        -1.957038156113279,
        -1.6176744788511985,
        2.1217972467721573,
        -1.615069350663793,
        -0.0650434098910412,
        1.7687797347663479,
        -1.167200865486604,
        -0.22340389916831926,
    ],
    [
        0.22092828649896118,
        0.12756354851012391,
        -2.450111652835387,
        0.1522804607540162,
        2.717646843483075,
        -3.0942893562569647,
        1.7187653760431965,
        0.23870805139316248,
    ],
];
const MIX8_STDS: [[f64; 8]; 6] = [
    [
        0.5421027195117962,
        0.31256882655637086,
        0.4191828302432459,
        0.17666323905547662,
        0.3244343104998279,
        0.29536635581619297,
        0.21758987808170333,
        0.517352146718584,
    ],
    [
        0.32075077719764056,
        0.5904365479850496,
        0.4154962618547746,
        0.422275314223433,
        0.4370984613547495,
        0.45440260971575475,
        0.2178546086257659,
        0.3481410602346844,
    ],
    [
        0.2578037828232855,
        0.3311242341467917,
        0.1935168422692855,
        0.5855226229719696,
        0.24675181681014602,
        0.45229432317507823,
        0.2851890366655816,
        0.543334661767277,
    ],
    [
        0.44799663225230413,
        0.20922711711373757,
        0.5302834443935488,
        0.5752266770152408,
        0.556762554688167,
        0.4063736165366747,
        0.2154569791924171,
        0.23660857273574953,
    ],
    [
        0.5675575581350359,
        0.39854691945026866,
        0.2312486243020102,
        0.5478256023884114,
        0.43870726735011634,
        0.4063624235132135,
        0.319329526258464,
        0.3349298769707084,
    ],
    [
        0.25777014570683016,
        0.16712577901105757,
        0.5442984636491719,
        0.3604785975663432,
        0.39643583964618084,
        0.29497348940110124,
        0.48809621393471747,
        0.16133859186079216,
    ],
];
