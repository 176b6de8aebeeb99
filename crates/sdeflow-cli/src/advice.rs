//! Which solver and grid to use at which budget: the recommendation `sdeflow describe solver`
//! prints and the README carries, read off the side-by-side peer benchmark (docs/peers.md,
//! `bash xtask/peers/run.sh`).
//!
//! Each row is a measurement, not a guess: the paired error (RMS per coordinate to the exact
//! PF-ODE endpoint from the same start) of sdeflow's best deterministic solver at that budget
//! on the `ring` and `mix8` mixtures, beside the best of diffusers and k-diffusion on the same
//! starts, schedules and endpoint. A test checks that every row builds: the solver from the
//! registry, the grid from RON, and a step count whose NFE fits the budget.

use std::fmt::Write;

/// One budget's recommendation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Advice {
    /// The budget in model evaluations (NFE).
    pub nfe: usize,
    /// The solver, as a config writes it (`name(params)`).
    pub solver: &'static str,
    /// The grid, as a config writes it.
    pub grid: &'static str,
    /// The steps that spend the budget (the solver's NFE of these steps is at most `nfe`).
    pub steps: usize,
    /// Its paired error on `ring` and `mix8`.
    pub error: [f64; 2],
    /// The best peer at this budget on `ring` and `mix8` (library, sampler and schedule).
    pub peer: [&'static str; 2],
    /// The best peer's paired error on `ring` and `mix8`.
    pub peer_error: [f64; 2],
}

/// The heading `describe` prints above [`markdown`].
pub const HEADING: &str = "## Which solver at which budget (docs/peers.md)\n\n";

/// The recommendation per budget, from docs/peers.md's table.
pub const ADVICE: &[Advice] = &[
    Advice {
        nfe: 5,
        solver: "unipc()",
        grid: "tuned(rows: 256)",
        steps: 5,
        error: [3.147e-2, 2.393e-1],
        peer: [
            "diffusers DPM-Solver++ singlestep 3, karras",
            "diffusers UniPC bh1 order 2, linspace",
        ],
        peer_error: [1.268e-1, 2.579e-1],
    },
    Advice {
        nfe: 10,
        solver: "unipc(variant: bh1)",
        grid: "tuned(rows: 256)",
        steps: 10,
        error: [8.977e-3, 1.109e-1],
        peer: [
            "diffusers DEIS logρ order 3, exponential",
            "diffusers UniPC bh2 order 3, trailing",
        ],
        peer_error: [2.878e-2, 1.321e-1],
    },
    Advice {
        nfe: 20,
        solver: "unipc()",
        grid: "quadratic",
        steps: 20,
        error: [3.789e-3, 1.998e-2],
        peer: [
            "diffusers SA-Solver τ = 0, exponential",
            "diffusers UniPC bh1 order 3, trailing",
        ],
        peer_error: [9.383e-3, 2.676e-2],
    },
    Advice {
        nfe: 50,
        solver: "unipc(variant: bh1)",
        grid: "tuned(rows: 256)",
        steps: 50,
        error: [2.691e-4, 4.536e-4],
        peer: [
            "diffusers UniPC bh1 order 3, exponential",
            "diffusers LMS order 4, linspace",
        ],
        peer_error: [1.427e-3, 1.684e-3],
    },
];

/// A stochastic sampler for when samples, not paths, matter, and what it reaches.
pub const STOCHASTIC: &str = "";

/// The recommendation as the Markdown the README carries.
pub fn markdown() -> String {
    let mut s = String::from(
        "| NFE | solver | grid | steps | paired error ring / mix8 | best peer ring / mix8 |\n\
         |---|---|---|---|---|---|\n",
    );
    for a in ADVICE {
        let _ = writeln!(
            s,
            "| {} | `{}` | `{}` | {} | {:.2e} / {:.2e} | {:.2e} ({}) / {:.2e} ({}) |",
            a.nfe,
            a.solver,
            a.grid,
            a.steps,
            a.error[0],
            a.error[1],
            a.peer_error[0],
            a.peer[0],
            a.peer_error[1],
            a.peer[1],
        );
    }
    if !STOCHASTIC.is_empty() {
        let _ = writeln!(s, "\n{STOCHASTIC}");
    }
    s
}
