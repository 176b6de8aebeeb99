//! Explicit Runge–Kutta methods as data: a [`ButcherTableau`] that validates itself, and one
//! engine, [`rk_step`], that runs any tableau on the probability-flow ODE (MATH.md §2, §5).
//!
//! A solver plugin owns its tableau as a `const`, validates it once when it is built, and
//! calls [`rk_step`] from its step; the PF-ODE drift is written once, in [`pf_ode_drift`].
//!
//! The engine integrates in t: stage i evaluates the drift at t + c_i h with the SDE's
//! coefficients at that time. k-diffusion and EDM step in σ̃ on x/α instead, which is a
//! different method for every SDE but `edm` (α = 1, σ = t); integration in σ̃ or λ can come
//! later as another engine over the same tableaux.
//!
//! ```
//! use sdeflow_kernel::rk::ButcherTableau;
//! /// Heun's method (the explicit trapezoid rule).
//! const HEUN: ButcherTableau = ButcherTableau {
//!     name: "heun",
//!     a: &[&[], &[1.0]],
//!     b: &[0.5, 0.5],
//!     c: &[0.0, 1.0],
//!     order: 2,
//! };
//! HEUN.validate()?;
//! assert_eq!(HEUN.stages(), 2);
//! // The same stages with the weights of the first-order corner fail the order-2 condition.
//! let wrong = ButcherTableau { b: &[0.25, 0.75], ..HEUN };
//! assert!(wrong.validate().unwrap_err().to_string().contains("Σ b_i c_i = 1/2"));
//! # Ok::<(), sdeflow_kernel::Error>(())
//! ```

use candle_core::Tensor;

use crate::{
    Error, Result, TimeCoefs,
    ops::{lin2, lin3},
    solver::StepContext,
};

/// The tolerance of `c_i = Σ_j a_ij` and of the order conditions, relative to the sum of the
/// absolute values of the terms (at least 1): a few roundings of O(1) coefficients.
const TOL: f64 = 1e-14;

/// The highest order whose conditions [`ButcherTableau::validate`] checks.
pub const MAX_ORDER: u32 = 4;

/// An explicit Runge–Kutta method: stage i evaluates k_i = F(x + h Σ_{j<i} a_ij k_j, t + c_i h)
/// and the step returns x + h Σ_i b_i k_i.
///
/// Usable as a `const`; [`validate`](Self::validate) checks the shapes, c_i = Σ_j a_ij and
/// the order conditions up to `order`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ButcherTableau {
    /// The method's name, used in error messages.
    pub name: &'static str,
    /// The strictly lower triangular matrix, by rows: row i has i entries (row 0 is empty).
    pub a: &'static [&'static [f64]],
    /// The weights, one per stage.
    pub b: &'static [f64],
    /// The nodes, one per stage: c_i = Σ_j a_ij.
    pub c: &'static [f64],
    /// The claimed order, 1 to [`MAX_ORDER`].
    pub order: u32,
}

/// One order condition Σ(terms) = target.
struct Condition {
    order: u32,
    formula: &'static str,
    terms: Vec<f64>,
    target: f64,
}

impl ButcherTableau {
    /// The number of stages, which is the NFE per step.
    pub const fn stages(&self) -> usize {
        self.b.len()
    }

    /// Checks the shapes, that every coefficient is finite, that c_i = Σ_j a_ij (to 1e-14),
    /// and the order conditions up to [`order`](Self::order) (Butcher trees up to order 4);
    /// an order above 4 is rejected as unsupported. The error names the tableau, the
    /// condition and its residual.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Error::invalid(self.name, "tableau", reason);
        let s = self.b.len();
        if s == 0 {
            return Err(fail("no stages: `b` is empty".into()));
        }
        if self.c.len() != s {
            return Err(fail(format!(
                "`c` has {} entries but `b` has {s}: one of each per stage",
                self.c.len()
            )));
        }
        if self.a.len() != s {
            return Err(fail(format!(
                "`a` has {} rows but `b` has {s} entries: one row per stage",
                self.a.len()
            )));
        }
        if let Some((i, row)) = self.a.iter().enumerate().find(|(i, row)| row.len() != *i) {
            return Err(fail(format!(
                "a[{i}] has {} entries, expected {i}: an explicit method's `a` is strictly \
                 lower triangular",
                row.len()
            )));
        }
        let all = self
            .a
            .iter()
            .flat_map(|r| r.iter())
            .chain(self.b)
            .chain(self.c);
        if let Some(v) = all.copied().find(|v| !v.is_finite()) {
            return Err(fail(format!("coefficient {v} is not finite")));
        }
        if !(1..=MAX_ORDER).contains(&self.order) {
            return Err(fail(format!(
                "order {} is unsupported: the order conditions are checked for orders 1 to \
                 {MAX_ORDER}",
                self.order
            )));
        }
        for (i, (row, &ci)) in self.a.iter().zip(self.c).enumerate() {
            let (sum, scale) = sum_and_scale(row);
            let residual = ci - sum;
            if residual.abs() > TOL * scale.max(ci.abs()).max(1.0) {
                return Err(fail(format!(
                    "c[{i}] = {ci} but Σ_j a[{i}][j] = {sum}: c must be the row sums of a \
                     (residual {residual:e})"
                )));
            }
        }
        for cond in self.conditions() {
            let (sum, scale) = sum_and_scale(&cond.terms);
            let residual = sum - cond.target;
            if residual.abs() > TOL * scale.max(1.0) {
                return Err(fail(format!(
                    "order-{} condition {} fails (residual {residual:e}); claimed order {}",
                    cond.order, cond.formula, self.order
                )));
            }
        }
        Ok(())
    }

    /// The order conditions up to `self.order` (shapes already checked).
    fn conditions(&self) -> Vec<Condition> {
        let (a, b, c) = (self.a, self.b, self.c);
        // Every (i, j) with j < i, with a_ij.
        let pairs = || {
            a.iter()
                .enumerate()
                .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &aij)| (i, j, aij)))
        };
        let mut out = vec![Condition {
            order: 1,
            formula: "Σ b_i = 1",
            terms: b.to_vec(),
            target: 1.0,
        }];
        if self.order >= 2 {
            out.push(Condition {
                order: 2,
                formula: "Σ b_i c_i = 1/2",
                terms: b.iter().zip(c).map(|(bi, ci)| bi * ci).collect(),
                target: 0.5,
            });
        }
        if self.order >= 3 {
            out.push(Condition {
                order: 3,
                formula: "Σ b_i c_i² = 1/3",
                terms: b.iter().zip(c).map(|(bi, ci)| bi * ci * ci).collect(),
                target: 1.0 / 3.0,
            });
            out.push(Condition {
                order: 3,
                formula: "Σ b_i a_ij c_j = 1/6",
                terms: pairs().map(|(i, j, aij)| b[i] * aij * c[j]).collect(),
                target: 1.0 / 6.0,
            });
        }
        if self.order >= 4 {
            out.push(Condition {
                order: 4,
                formula: "Σ b_i c_i³ = 1/4",
                terms: b.iter().zip(c).map(|(bi, ci)| bi * ci * ci * ci).collect(),
                target: 0.25,
            });
            out.push(Condition {
                order: 4,
                formula: "Σ b_i c_i a_ij c_j = 1/8",
                terms: pairs()
                    .map(|(i, j, aij)| b[i] * c[i] * aij * c[j])
                    .collect(),
                target: 0.125,
            });
            out.push(Condition {
                order: 4,
                formula: "Σ b_i a_ij c_j² = 1/12",
                terms: pairs()
                    .map(|(i, j, aij)| b[i] * aij * c[j] * c[j])
                    .collect(),
                target: 1.0 / 12.0,
            });
            out.push(Condition {
                order: 4,
                formula: "Σ b_i a_ij a_jk c_k = 1/24",
                terms: pairs()
                    .flat_map(|(i, j, aij)| {
                        a[j].iter().zip(c).map(move |(ajk, ck)| (i, aij, ajk * ck))
                    })
                    .map(|(i, aij, ajk_ck)| b[i] * aij * ajk_ck)
                    .collect(),
                target: 1.0 / 24.0,
            });
        }
        out
    }
}

/// (Σ v, Σ |v|).
fn sum_and_scale(v: &[f64]) -> (f64, f64) {
    v.iter().fold((0.0, 0.0), |(s, a), x| (s + x, a + x.abs()))
}

/// The probability-flow ODE drift F = f x − ½ g² ŝ (MATH.md §2) at `(x, c)`, with ŝ read
/// through the parameterization: one NFE.
pub fn pf_ode_drift(ctx: &StepContext<'_>, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
    let (f, half_g2) = c.ode_coefs();
    let score = ctx.eval(x, c)?.score()?;
    lin2(f, x, -half_g2, &score)
}

/// One explicit Runge–Kutta step of `tableau` on the PF-ODE dx/dt = F(x, t), from
/// `ctx.from.t` to `ctx.to.t`: with h = t_to − t_from (negative toward the data),
/// k_i = F(x + h Σ_{j<i} a_ij k_j, t + c_i h) and x_s = x + h Σ_i b_i k_i.
///
/// Stage i takes its coefficients from `ctx.from` when c_i = 0, from `ctx.to` when c_i = 1,
/// and from [`StepContext::coefs`] otherwise. One NFE per stage; no noise. The engine
/// integrates in t (see the [module](self) docs). `tableau` is trusted: validate it once,
/// when the solver is built, not here.
pub fn rk_step(tableau: &ButcherTableau, ctx: &StepContext<'_>, x: &Tensor) -> Result<Tensor> {
    let h = ctx.to.t - ctx.from.t;
    let mut k: Vec<Tensor> = Vec::with_capacity(tableau.stages());
    for (row, &ci) in tableau.a.iter().zip(tableau.c) {
        let coefs = if ci == 0.0 {
            ctx.from
        } else if ci == 1.0 {
            ctx.to
        } else {
            ctx.coefs(ctx.from.t + ci * h)
        };
        let x_stage = advance(x, h, row, &k)?;
        k.push(pf_ode_drift(ctx, &x_stage, &coefs)?);
    }
    advance(x, h, tableau.b, &k)
}

/// x + h Σ_j w_j k_j, skipping zero weights, with the kernel's fused linear combinations.
fn advance(x: &Tensor, h: f64, w: &[f64], k: &[Tensor]) -> Result<Tensor> {
    let terms: Vec<(f64, &Tensor)> = w
        .iter()
        .zip(k)
        .filter(|(wj, _)| **wj != 0.0)
        .map(|(wj, kj)| (h * wj, kj))
        .collect();
    let mut increment: Option<Tensor> = None;
    for chunk in terms.chunks(3) {
        let part = match *chunk {
            [(p, u)] => u.affine(p, 0.0)?,
            [(p, u), (q, v)] => lin2(p, u, q, v)?,
            [(p, u), (q, v), (r, w)] => lin3(p, u, q, v, r, w)?,
            _ => unreachable!("chunks(3) yields one to three terms"),
        };
        increment = Some(match increment {
            None => part,
            Some(sum) => (sum + part)?,
        });
    }
    match increment {
        None => Ok(x.clone()),
        Some(inc) => Ok((x + inc)?),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::{
        ForwardSde,
        noise::ConstantNoise,
        testing::{Gaussian, Ou},
    };

    // Test copies of the plugins' tableaux (Hairer, Nørsett & Wanner, "Solving ODEs I",
    // §II.1: Euler; Heun's explicit trapezoid; Kutta's classical method, Table 1.2 left).
    const EULER: ButcherTableau = ButcherTableau {
        name: "euler",
        a: &[&[]],
        b: &[1.0],
        c: &[0.0],
        order: 1,
    };
    const HEUN: ButcherTableau = ButcherTableau {
        name: "heun",
        a: &[&[], &[1.0]],
        b: &[0.5, 0.5],
        c: &[0.0, 1.0],
        order: 2,
    };
    const RK4: ButcherTableau = ButcherTableau {
        name: "rk4",
        a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
        b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
        c: &[0.0, 0.5, 0.5, 1.0],
        order: 4,
    };

    fn reason(t: &ButcherTableau) -> String {
        match t.validate() {
            Err(e @ Error::InvalidParam { .. }) => e.to_string(),
            other => panic!("{}: expected InvalidParam, got {other:?}", t.name),
        }
    }

    #[test]
    fn the_three_tableaux_validate() -> Result<()> {
        for t in [EULER, HEUN, RK4] {
            t.validate()?;
        }
        // Kutta's 3/8 rule is another order-4 method (Hairer et al., Table 1.2 right).
        ButcherTableau {
            name: "rk38",
            a: &[&[], &[1.0 / 3.0], &[-1.0 / 3.0, 1.0], &[1.0, -1.0, 1.0]],
            b: &[1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0],
            c: &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0],
            order: 4,
        }
        .validate()
    }

    #[test]
    fn a_wrong_b_fails_naming_the_condition_and_its_residual() {
        // Σ b c = 0.75 − 0.5 = 0.25 off.
        let msg = reason(&ButcherTableau {
            b: &[0.25, 0.75],
            ..HEUN
        });
        assert!(msg.starts_with("heun: invalid `tableau`: "), "{msg}");
        assert!(msg.contains("order-2 condition Σ b_i c_i = 1/2"), "{msg}");
        assert!(msg.contains("residual 2.5e-1"), "{msg}");
        // Swapping RK4's weights keeps Σ b = 1 and Σ b c = 1/2, but Σ b c² = 5/12 ≠ 1/3.
        let msg = reason(&ButcherTableau {
            b: &[1.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 3.0],
            ..RK4
        });
        assert!(msg.contains("order-3 condition Σ b_i c_i² = 1/3"), "{msg}");
        // Weights that do not sum to 1.
        let msg = reason(&ButcherTableau {
            b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
            ..RK4
        });
        assert!(msg.contains("order-1 condition Σ b_i = 1"), "{msg}");
    }

    /// Kutta's third-order method (Hairer et al., Table 1.1 left): a = [[], [½], [−1, 2]],
    /// b = [⅙, ⅔, ⅙], c = [0, ½, 1]. Each condition's sum by hand: Σ b = 1; Σ b c = ⅓ + ⅙ = ½;
    /// Σ b c² = ⅙ + ⅙ = ⅓; Σ b a c = ⅔·½·0 + ⅙(−1·0 + 2·½) = ⅙; Σ b c³ = 1/12 + ⅙ = ¼;
    /// Σ b c a c = ⅙·1·2·½ = ⅙; Σ b a c² = ⅙·2·¼ = 1/12; Σ b a a c = ⅙·2·½·0 = 0.
    #[test]
    fn each_order_condition_sums_its_tree() {
        let rk3 = ButcherTableau {
            name: "rk3",
            a: &[&[], &[0.5], &[-1.0, 2.0]],
            b: &[1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0],
            c: &[0.0, 0.5, 1.0],
            order: 4,
        };
        let want = [
            1.0,
            0.5,
            1.0 / 3.0,
            1.0 / 6.0,
            0.25,
            1.0 / 6.0,
            1.0 / 12.0,
            0.0,
        ];
        let got: Vec<f64> = rk3
            .conditions()
            .iter()
            .map(|c| sum_and_scale(&c.terms).0)
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-15, "{got:?}");
        }
        // So it validates at order 3 and fails at order 4 on Σ b c a c, residual ⅙ − ⅛.
        assert!(ButcherTableau { order: 3, ..rk3 }.validate().is_ok());
        let msg = reason(&rk3);
        assert!(
            msg.contains("order-4 condition Σ b_i c_i a_ij c_j = 1/8"),
            "{msg}"
        );
        assert!(msg.contains("residual 4.16666666666666"), "{msg}");
        // Heun's tableau claimed at order 3 fails the first order-3 condition: Σ b c² = ½.
        let msg = reason(&ButcherTableau { order: 3, ..HEUN });
        assert!(msg.contains("order-3 condition Σ b_i c_i² = 1/3"), "{msg}");
    }

    #[test]
    fn shapes_nodes_and_orders_are_checked() {
        let cases: [(ButcherTableau, &str); 7] = [
            (ButcherTableau { b: &[], ..EULER }, "no stages"),
            (ButcherTableau { c: &[0.0], ..HEUN }, "`c` has 1 entries"),
            (ButcherTableau { a: &[&[]], ..HEUN }, "`a` has 1 rows"),
            (
                ButcherTableau {
                    a: &[&[], &[1.0, 0.0]],
                    ..HEUN
                },
                "a[1] has 2 entries, expected 1",
            ),
            (
                ButcherTableau {
                    c: &[0.0, 0.9],
                    ..HEUN
                },
                "c[1] = 0.9 but Σ_j a[1][j] = 1",
            ),
            (ButcherTableau { order: 5, ..RK4 }, "order 5 is unsupported"),
            (
                ButcherTableau { order: 0, ..EULER },
                "order 0 is unsupported",
            ),
        ];
        for (t, want) in cases {
            let msg = reason(&t);
            assert!(msg.contains(want), "{msg} should contain {want:?}");
        }
        let msg = reason(&ButcherTableau {
            b: &[f64::NAN],
            ..EULER
        });
        assert!(msg.contains("not finite"), "{msg}");
    }

    /// The exact model of N(0, s² I) in one dimension, s = 0.3: ŝ = −x/v with v = α² s² + σ²,
    /// reported as ε̂ = −σ ŝ.
    fn centered_gaussian() -> Gaussian {
        Gaussian {
            mean: vec![0.0],
            std: 0.3,
        }
    }

    /// The engine against hand-written Euler, Heun (EDM Alg. 1 without churn: d = F(x, t),
    /// x̃ = x − h d, d′ = F(x̃, s), x − h (d + d′)/2) and classical RK4, with h = t − s, on
    /// the scalar linear ODE dx/dt = L(t) x, L = f + ½ g²/v, on the OU SDE (α = e^{−t},
    /// σ = √(1 − e^{−2t}), f = −1, g² = 2). The step counts one NFE per stage and draws no
    /// noise (NaN noise would poison the result).
    #[test]
    fn rk_step_matches_the_hand_written_methods() -> Result<()> {
        let sde = Ou;
        let model = centered_gaussian();
        let l = |t: f64| {
            let c = sde.coefs(t);
            c.f + 0.5 * c.g2 / model.var(&c)
        };
        let x0 = [0.7, -1.3, 2.0];
        let x = Tensor::new(&x0, &Device::Cpu)?.reshape((3, 1))?;
        for (t, s) in [(1.0, 0.9), (0.3, 0.05), (0.01, 1e-3)] {
            let h = t - s;
            let m = 0.5 * (t + s);
            let euler = |x: f64| x - h * l(t) * x;
            let heun = |x: f64| {
                let d = l(t) * x;
                let xt = x - h * d;
                let d2 = l(s) * xt;
                x - h * (d + d2) / 2.0
            };
            let rk4 = |x: f64| {
                let k1 = l(t) * x;
                let k2 = l(m) * (x - h / 2.0 * k1);
                let k3 = l(m) * (x - h / 2.0 * k2);
                let k4 = l(s) * (x - h * k3);
                x - h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            };
            let methods: [(&ButcherTableau, &dyn Fn(f64) -> f64); 3] =
                [(&EULER, &euler), (&HEUN, &heun), (&RK4, &rk4)];
            for (tableau, hand) in methods {
                let den = model.denoiser();
                let noise = ConstantNoise(f64::NAN);
                let ctx = StepContext::new(&sde, &den, &noise, 0, sde.coefs(t), sde.coefs(s), 0, 1);
                let got = rk_step(tableau, &ctx, &x)?;
                assert_eq!(got.dtype(), DType::F64);
                assert_eq!(den.nfe(), tableau.stages() as u64);
                assert_eq!(ctx.draws_taken(), 0);
                for (xi, gi) in x0.iter().zip(got.flatten_all()?.to_vec1::<f64>()?) {
                    let want = hand(*xi);
                    // Both sides round a few O(|x| (1 + h |L|)) terms; |L| ≤ 10 here.
                    assert!(
                        (gi - want).abs() <= 1e-14 * xi.abs().max(1.0),
                        "{} t = {t}: {gi} vs {want}",
                        tableau.name
                    );
                }
            }
        }
        Ok(())
    }

    /// An f32 state stays f32 through every stage.
    #[test]
    fn f32_state_stays_f32() -> Result<()> {
        let sde = Ou;
        let den = centered_gaussian().denoiser();
        let noise = ConstantNoise(0.0);
        let ctx = StepContext::new(&sde, &den, &noise, 0, sde.coefs(0.5), sde.coefs(0.4), 0, 1);
        let x = Tensor::new(&[[1.0f32], [-2.0]], &Device::Cpu)?;
        assert_eq!(rk_step(&RK4, &ctx, &x)?.dtype(), DType::F32);
        Ok(())
    }
}
