//! The pass policy: what the quick pass (`cargo test`) runs and what only the full pass
//! (`cargo xtask conformance`) adds, decided in one place. The contracts ask [`Policy`]; none
//! looks at [`Mode`] itself. Every answer depends only on the mode, the selection and a
//! plugin's place in the registry (sorted by name), never on what ran before, so a pass split
//! into parts ([`crate::Part`]) covers the same matrix exactly once.
//!
//! DESIGN.md "Decisions": a check moves from quick to full only with a line in the issue's
//! closing note saying so.

use crate::{
    Mode,
    mixtures::{MixtureSpec, mix8, ring},
};

/// Which parameterizations read the oracle in a solver's SW2 run on `ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSet {
    /// Every registered parameterization (conversions go through the time coefficients, so
    /// every solver works with every parameterization: MATH.md §3).
    Every,
    /// The run parameterization only.
    RunOnly,
}

/// What each contract runs on, for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    mode: Mode,
    /// The solver that carries every parameterization on the first SDE in the quick pass.
    matrix_solver: Option<String>,
}

/// A solver's default parameters, as its parameter set is written.
pub const DEFAULTS: &str = "()";

impl Policy {
    /// The policy of a `mode` pass whose selected solvers are `selected` (registered names, in
    /// registry order): in the quick pass the first of them carries the parameterization
    /// matrix (conversions do not depend on the solver, so one solver suffices).
    pub fn new<'a>(mode: Mode, selected: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            mode,
            matrix_solver: selected.into_iter().next().map(String::from),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many of `sdes` SDEs (the first ones, in registry order) a solver runs on with the
    /// parameter set `params_ron`: every one; a registered variant on the first only in the
    /// quick pass (moved to the full pass to keep `cargo test` within 15 minutes on 2 cores).
    pub fn sde_count(&self, params_ron: &str, sdes: usize) -> usize {
        match self.mode {
            Mode::Quick if params_ron != DEFAULTS => sdes.min(1),
            _ => sdes,
        }
    }

    /// Whether a stochastic solver's strong order is measured on the SDE at `sde_index` (the
    /// quick pass: on the first SDE only).
    pub fn strong_order(&self, sde_index: usize) -> bool {
        self.mode == Mode::Full || sde_index == 0
    }

    /// The mixtures of a deterministic solver's paired error against RK4 on the SDE at
    /// `sde_index`: `ring` and `mix8` on every SDE; the quick pass, `ring` on the first SDE.
    pub fn paired_mixtures(&self, sde_index: usize) -> Vec<MixtureSpec> {
        match self.mode {
            Mode::Full => vec![ring(), mix8()],
            Mode::Quick if sde_index == 0 => vec![ring()],
            Mode::Quick => vec![],
        }
    }

    /// The parameterizations of SW2 on `ring` for `solver` (registered name) with
    /// `params_ron` on the SDE at `sde_index`: every one in the full pass; in the quick pass
    /// every one for the matrix solver with its defaults on the first SDE, else the run
    /// parameterization.
    pub fn ring_params(&self, solver: &str, params_ron: &str, sde_index: usize) -> ParamSet {
        let matrix = sde_index == 0
            && params_ron == DEFAULTS
            && self.matrix_solver.as_deref() == Some(solver);
        if self.mode == Mode::Full || matrix {
            ParamSet::Every
        } else {
            ParamSet::RunOnly
        }
    }

    /// Whether an adaptive solver's tolerance sweeps (error ∝ rtol, finite at every rtol) run
    /// on the SDE at `sde_index`: every SDE in the full pass, the first in the quick pass.
    pub fn adaptive_sweeps(&self, sde_index: usize) -> bool {
        self.mode == Mode::Full || sde_index == 0
    }

    /// The (mixture, registered SDE) pairs of the likelihood contract: `ring` on `vp` in the
    /// quick pass; `ring` and `mix8` on vp, sub_vp, ve, vp_cosine and edm in the full pass.
    pub fn likelihood_cases(&self) -> Vec<(MixtureSpec, &'static str)> {
        match self.mode {
            Mode::Quick => vec![(ring(), "vp")],
            Mode::Full => [ring(), mix8()]
                .into_iter()
                .flat_map(|m| {
                    ["vp", "sub_vp", "ve", "vp_cosine", "edm"]
                        .into_iter()
                        .map(move |s| (m.clone(), s))
                })
                .collect(),
        }
    }

    /// Mixtures besides `ring` with SW2 in the run parameterization: `mix8` in the full pass.
    pub fn sw2_other_mixtures(&self) -> Vec<MixtureSpec> {
        match self.mode {
            Mode::Full => vec![mix8()],
            Mode::Quick => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_pass_gives_the_matrix_to_one_solver_on_the_first_sde() {
        let quick = Policy::new(Mode::Quick, ["ddim", "ddpm"]);
        assert_eq!(quick.ring_params("ddim", "()", 0), ParamSet::Every);
        assert_eq!(quick.ring_params("ddim", "()", 1), ParamSet::RunOnly);
        assert_eq!(
            quick.ring_params("ddim", "(eta: 1.0)", 0),
            ParamSet::RunOnly
        );
        assert_eq!(quick.ring_params("ddpm", "()", 0), ParamSet::RunOnly);
        assert_eq!(quick.sde_count("(eta: 1.0)", 7), 1);
        assert_eq!(quick.sde_count("()", 7), 7);
        let full = Policy::new(Mode::Full, ["ddim"]);
        assert_eq!(full.ring_params("ddpm", "()", 3), ParamSet::Every);
        assert_eq!(full.sde_count("(eta: 1.0)", 7), 7);
        assert_eq!(full.paired_mixtures(3).len(), 2);
    }
}
