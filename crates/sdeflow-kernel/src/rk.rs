//! Explicit Runge–Kutta methods as data: a [`ButcherTableau`] that validates itself, one
//! engine, [`rk_integrate`], that runs any tableau on any ODE whose state is one or more
//! tensors, and one solver, [`RkSolver`], that runs a tableau on the probability-flow ODE
//! (MATH.md §2, §5).
//!
//! A Runge–Kutta solver plugin is its tableau as a `const`, an empty `Params` and one
//! registration line building an [`RkSolver`]; its order and NFE per step are read off the
//! tableau, and the PF-ODE drift is written once, in [`pf_ode_drift`].
//!
//! The tableau has room for what adaptive stepping and likelihoods need: embedded weights
//! b̂ for a local error estimate ([`Embedded`]), first-same-as-last stages
//! ([`ButcherTableau::is_fsal`], reused through `first_stage` in [`rk_integrate`]), order
//! conditions up to order 5 (Dormand–Prince), and a state of several tensors
//! ([`OdeField`]: x and the log-density change, say).
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
//!     embedded: None,
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
    Discretization, Equation, Error, ForwardSde, GridKind, Order, PerRow, Result, Rows, Solver,
    SolverClaims, State, Step, Time, TimeCoefs,
    adaptive::{Adaptive, AdaptiveParams},
    ops::{lin2, lin2_rows, lin3, scale},
    solver::StepContext,
};

/// The tolerance of `c_i = Σ_j a_ij` and of the order conditions, relative to the sum of the
/// absolute values of the terms (at least 1): a few roundings of O(1) coefficients.
const TOL: f64 = 1e-14;

/// The highest order whose conditions [`ButcherTableau::validate`] checks.
pub const MAX_ORDER: u32 = 5;

/// The classical fourth-order Runge–Kutta tableau: `a = [[], [½], [0, ½], [0, 0, 1]]`,
/// `b = [⅙, ⅓, ⅓, ⅙]`, `c = [0, ½, ½, 1]`. The `rk4` plugin runs it, and a
/// [tuned grid](crate::tune)'s reference solve uses it.
pub const RK4: ButcherTableau = ButcherTableau {
    name: "rk4",
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    c: &[0.0, 0.5, 0.5, 1.0],
    order: 4,
    embedded: None,
};

/// Embedded weights b̂: a second solution of lower (or higher) order from the same stages,
/// whose difference from the main one, h Σ_i (b_i − b̂_i) k_i, estimates the local error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Embedded {
    /// The weights b̂, one per stage.
    pub b: &'static [f64],
    /// The order of the embedded solution, 1 to [`MAX_ORDER`].
    pub order: u32,
}

/// An explicit Runge–Kutta method: stage i evaluates k_i = F(x + h Σ_{j<i} a_ij k_j, t + c_i h)
/// and the step returns x + h Σ_i b_i k_i.
///
/// Usable as a `const`; [`validate`](Self::validate) checks the shapes, c_i = Σ_j a_ij and
/// the order conditions up to `order` (and the embedded weights' up to theirs).
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
    /// Embedded weights for a local error estimate (`None`: a fixed-step method).
    pub embedded: Option<Embedded>,
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

    /// Whether the last stage is evaluated at the step's end point (first same as last):
    /// c_s = 1 and its row of `a` is `b`, with b_s = 0. Then k_s = F(x_end, t_end) is the
    /// next step's first stage, which [`rk_integrate`] takes as `first_stage`.
    pub fn is_fsal(&self) -> bool {
        let s = self.b.len();
        s >= 2
            && self.c.last() == Some(&1.0)
            && self.b[s - 1] == 0.0
            && self.a.last().is_some_and(|row| row[..] == self.b[..s - 1])
    }

    /// Checks the shapes, that every coefficient is finite, that c_i = Σ_j a_ij (to 1e-14),
    /// and the order conditions up to [`order`](Self::order) (Butcher trees up to order 5),
    /// then the embedded weights' shape and conditions up to their order; an order above 5
    /// is rejected as unsupported. The error names the tableau, the condition and its
    /// residual.
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
        let embedded_b = self.embedded.map_or(&[][..], |e| e.b);
        let all = self
            .a
            .iter()
            .flat_map(|r| r.iter())
            .chain(self.b)
            .chain(self.c)
            .chain(embedded_b);
        if let Some(v) = all.copied().find(|v| !v.is_finite()) {
            return Err(fail(format!("coefficient {v} is not finite")));
        }
        let supported = |order: u32, what: &str| {
            if (1..=MAX_ORDER).contains(&order) {
                Ok(())
            } else {
                Err(fail(format!(
                    "{what}order {order} is unsupported: the order conditions are checked for \
                     orders 1 to {MAX_ORDER}"
                )))
            }
        };
        supported(self.order, "")?;
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
        self.check_conditions(self.b, self.order, "")?;
        if let Some(e) = self.embedded {
            if e.b.len() != s {
                return Err(fail(format!(
                    "the embedded weights have {} entries but `b` has {s}: one per stage",
                    e.b.len()
                )));
            }
            supported(e.order, "embedded ")?;
            if e.b == self.b {
                return Err(fail(
                    "the embedded weights equal `b`: their error estimate would be zero".into(),
                ));
            }
            self.check_conditions(e.b, e.order, "embedded ")?;
        }
        Ok(())
    }

    fn check_conditions(&self, weights: &[f64], order: u32, what: &str) -> Result<()> {
        for cond in self.conditions_for(weights, order) {
            let (sum, scale) = sum_and_scale(&cond.terms);
            let residual = sum - cond.target;
            if residual.abs() > TOL * scale.max(1.0) {
                return Err(Error::invalid(
                    self.name,
                    "tableau",
                    format!(
                        "{what}order-{} condition {} fails (residual {residual:e}); claimed \
                         {what}order {order}",
                        cond.order, cond.formula
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The order conditions of the main weights up to `self.order` (shapes already checked).
    #[cfg(test)]
    fn conditions(&self) -> Vec<Condition> {
        self.conditions_for(self.b, self.order)
    }

    /// The order conditions of `weights` (b or b̂) up to `order`, one per rooted tree
    /// (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.2, Table 2.2); they take
    /// c_i = Σ_j a_ij as already checked.
    fn conditions_for(&self, b: &[f64], order: u32) -> Vec<Condition> {
        let (a, c) = (self.a, self.c);
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
        if order >= 2 {
            out.push(Condition {
                order: 2,
                formula: "Σ b_i c_i = 1/2",
                terms: b.iter().zip(c).map(|(bi, ci)| bi * ci).collect(),
                target: 0.5,
            });
        }
        if order >= 3 {
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
        if order >= 4 {
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
        if order >= 5 {
            out.extend(self.order_5_conditions(b));
        }
        out
    }

    /// The nine order-5 conditions, written with the stage vectors (A v)_i = Σ_j a_ij v_j:
    /// each term is b_i times one tree's elementary weight at stage i.
    fn order_5_conditions(&self, b: &[f64]) -> Vec<Condition> {
        let c = self.c;
        let times =
            |u: &[f64], v: &[f64]| -> Vec<f64> { u.iter().zip(v).map(|(x, y)| x * y).collect() };
        let apply = |v: &[f64]| -> Vec<f64> {
            self.a
                .iter()
                .map(|row| row.iter().zip(v).map(|(aij, vj)| aij * vj).sum())
                .collect()
        };
        let c2 = times(c, c);
        let c3 = times(&c2, c);
        let ac = apply(c);
        let ac2 = apply(&c2);
        let aac = apply(&ac);
        let trees: [(&'static str, Vec<f64>, f64); 9] = [
            ("Σ b_i c_i⁴ = 1/5", times(&c3, c), 5.0),
            ("Σ b_i c_i² a_ij c_j = 1/10", times(&c2, &ac), 10.0),
            ("Σ b_i c_i a_ij c_j² = 1/15", times(c, &ac2), 15.0),
            ("Σ b_i c_i a_ij a_jk c_k = 1/30", times(c, &aac), 30.0),
            ("Σ b_i (a_ij c_j)(a_ik c_k) = 1/20", times(&ac, &ac), 20.0),
            ("Σ b_i a_ij c_j³ = 1/20", apply(&c3), 20.0),
            (
                "Σ b_i a_ij c_j a_jk c_k = 1/40",
                apply(&times(c, &ac)),
                40.0,
            ),
            ("Σ b_i a_ij a_jk c_k² = 1/60", apply(&ac2), 60.0),
            ("Σ b_i a_ij a_jk a_kl c_l = 1/120", apply(&aac), 120.0),
        ];
        trees
            .into_iter()
            .map(|(formula, phi, gamma)| Condition {
                order: 5,
                formula,
                terms: times(b, &phi),
                target: 1.0 / gamma,
            })
            .collect()
    }
}

/// (Σ v, Σ |v|).
fn sum_and_scale(v: &[f64]) -> (f64, f64) {
    v.iter().fold((0.0, 0.0), |(s, a), x| (s + x, a + x.abs()))
}

/// The right-hand side F of an ODE dy/dt = F(y, t) whose state y is one or more tensors:
/// x alone when sampling, x and the log-density change when computing a likelihood. Every
/// component is rows-first (`[n, ...]`), so each row may be at its own time.
pub trait OdeField {
    /// F(y, t), one tensor per component of `y`, with the SDE's coefficients at t: one time
    /// for every row, or one per row (an adaptive solve, each sample on its own steps).
    fn eval(&self, y: &[Tensor], time: &Time) -> Result<Vec<Tensor>>;

    /// The SDE's coefficients at a stage's time between the step's end points.
    fn coefs(&self, t: f64) -> TimeCoefs;
}

/// The probability-flow ODE on x alone, F = f x − ½ g² ŝ, read through a step's counted model.
pub struct PfOde<'c, 'a>(pub &'c StepContext<'a>);

impl OdeField for PfOde<'_, '_> {
    fn eval(&self, y: &[Tensor], time: &Time) -> Result<Vec<Tensor>> {
        let x = &y[0];
        Ok(vec![match time {
            Time::Call(c) => pf_ode_drift(self.0, x, c)?,
            Time::Rows(_) => {
                let score = self.0.eval_at(x, time)?.score()?;
                lin2_rows(&time.map(|c| c.f), x, &time.map(|c| -0.5 * c.g2), &score)?
            }
        }])
    }

    fn coefs(&self, t: f64) -> TimeCoefs {
        self.0.coefs(t)
    }
}

/// The probability-flow ODE drift F = f x − ½ g² ŝ (MATH.md §2) at `(x, c)`, with ŝ read
/// through the parameterization: one NFE.
pub fn pf_ode_drift(ctx: &StepContext<'_>, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
    let (f, half_g2) = c.ode_coefs();
    let score = ctx.eval(x, c)?.score()?;
    lin2(f, x, -half_g2, &score)
}

/// What one step of [`rk_integrate`] returns.
#[derive(Debug, Clone)]
pub struct RkStep {
    /// The state at the step's end, one tensor per component.
    pub y: Vec<Tensor>,
    /// With embedded weights, the local error estimate h Σ_i (b_i − b̂_i) k_i per component.
    pub error: Option<Vec<Tensor>>,
    /// The last stage's derivative k_s; under an FSAL tableau it is F(y_end, t_end), the next
    /// step's first stage.
    pub last_stage: Vec<Tensor>,
}

/// The step sizes of a step: one for every row, or one per row.
enum Sizes {
    Call(f64),
    Rows(PerRow<f64>),
}

impl Sizes {
    /// h Σ_j w_j k_j[m] (`None` when every weight is zero): h folded into the weights per
    /// call, each row scaled by its own h per row.
    fn combination(&self, w: &[f64], k: &[Vec<Tensor>], m: usize) -> Result<Option<Tensor>> {
        match self {
            Self::Call(h) => combination(*h, w, k, m),
            Self::Rows(h) => combination(1.0, w, k, m)?
                .map(|sum| scale(h, &sum))
                .transpose(),
        }
    }

    /// y + h Σ_j w_j k_j[m].
    fn advance(&self, y: &Tensor, w: &[f64], k: &[Vec<Tensor>], m: usize) -> Result<Tensor> {
        match self.combination(w, k, m)? {
            None => Ok(y.clone()),
            Some(inc) => Ok((y + inc)?),
        }
    }
}

/// One explicit Runge–Kutta step of `tableau` on dy/dt = F(y, t) from `from` to `to`: with
/// h = t_to − t_from (negative toward the data), k_i = F(y + h Σ_{j<i} a_ij k_j,
/// t + c_i h) and y_end = y + h Σ_i b_i k_i, component by component.
///
/// `from` and `to` are both one time for every row or both one time per row (then each row
/// takes its own step h_i, the rows' steps independent of each other). Stage i takes its
/// coefficients from `from` when c_i = 0, from `to` when c_i = 1, and from
/// [`OdeField::coefs`] otherwise. `first_stage`, when given, is F(y, t_from) — the previous
/// step's last stage under an FSAL tableau — and saves that evaluation. `tableau` is
/// trusted: validate it once, when the solver is built, not here.
pub fn rk_integrate(
    tableau: &ButcherTableau,
    field: &dyn OdeField,
    y: &[Tensor],
    from: &Time,
    to: &Time,
    mut first_stage: Option<Vec<Tensor>>,
) -> Result<RkStep> {
    let sizes = match (from, to) {
        (Time::Call(a), Time::Call(b)) => Sizes::Call(b.t - a.t),
        (Time::Rows(a), Time::Rows(b)) if a.len() == b.len() => {
            Sizes::Rows(PerRow::Rows(Rows::new(
                a.values()
                    .iter()
                    .zip(b.values())
                    .map(|(a, b)| b.t - a.t)
                    .collect(),
            )))
        }
        _ => {
            return Err(Error::Shape(format!(
                "a Runge–Kutta step's ends must both be per call or both per row of one batch, not {:?} and {:?} rows",
                from.rows(),
                to.rows()
            )));
        }
    };
    // k[i][m]: stage i's derivative of component m.
    let mut k: Vec<Vec<Tensor>> = Vec::with_capacity(tableau.stages());
    for (i, (row, &ci)) in tableau.a.iter().zip(tableau.c).enumerate() {
        if i == 0
            && let Some(k0) = first_stage.take()
        {
            k.push(k0);
            continue;
        }
        let time = if ci == 0.0 {
            from.clone()
        } else if ci == 1.0 {
            to.clone()
        } else {
            match (from, &sizes) {
                (Time::Call(a), Sizes::Call(h)) => Time::Call(field.coefs(a.t + ci * h)),
                (Time::Rows(a), Sizes::Rows(PerRow::Rows(h))) => Time::Rows(Rows::new(
                    a.values()
                        .iter()
                        .zip(h.values())
                        .map(|(a, h)| field.coefs(a.t + ci * h))
                        .collect(),
                )),
                _ => unreachable!("the sizes follow the ends"),
            }
        };
        let y_stage = (0..y.len())
            .map(|m| sizes.advance(&y[m], row, &k, m))
            .collect::<Result<Vec<_>>>()?;
        k.push(field.eval(&y_stage, &time)?);
    }
    let y_end = (0..y.len())
        .map(|m| sizes.advance(&y[m], tableau.b, &k, m))
        .collect::<Result<Vec<_>>>()?;
    let error = match tableau.embedded {
        None => None,
        Some(e) => {
            let diff: Vec<f64> = tableau.b.iter().zip(e.b).map(|(b, bh)| b - bh).collect();
            Some(
                (0..y.len())
                    .map(|m| match sizes.combination(&diff, &k, m)? {
                        Some(d) => Ok(d),
                        None => Ok(y[m].zeros_like()?),
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        }
    };
    let last_stage = k.pop().unwrap_or_default();
    Ok(RkStep {
        y: y_end,
        error,
        last_stage,
    })
}

/// One explicit Runge–Kutta step of `tableau` on the PF-ODE dx/dt = F(x, t), from
/// `ctx.from.t` to `ctx.to.t` ([`rk_integrate`] on [`PfOde`]): one NFE per stage, no noise.
pub fn rk_step(tableau: &ButcherTableau, ctx: &StepContext<'_>, x: &Tensor) -> Result<Tensor> {
    let out = rk_integrate(
        tableau,
        &PfOde(ctx),
        std::slice::from_ref(x),
        &Time::Call(ctx.from),
        &Time::Call(ctx.to),
        None,
    )?;
    Ok(out.y.into_iter().next().unwrap_or_else(|| x.clone()))
}

/// h Σ_j w_j k_j[m], skipping zero weights, with the kernel's fused linear combinations
/// (`None` when every weight is zero).
fn combination(h: f64, w: &[f64], k: &[Vec<Tensor>], m: usize) -> Result<Option<Tensor>> {
    let terms: Vec<(f64, &Tensor)> = w
        .iter()
        .zip(k)
        .filter(|(wj, _)| **wj != 0.0)
        .map(|(wj, kj)| (h * wj, &kj[m]))
        .collect();
    let mut sum: Option<Tensor> = None;
    for chunk in terms.chunks(3) {
        let part = match *chunk {
            [(p, u)] => u.affine(p, 0.0)?,
            [(p, u), (q, v)] => lin2(p, u, q, v)?,
            [(p, u), (q, v), (r, w)] => lin3(p, u, q, v, r, w)?,
            _ => unreachable!("chunks(3) yields one to three terms"),
        };
        sum = Some(match sum {
            None => part,
            Some(s) => (s + part)?,
        });
    }
    Ok(sum)
}

/// An explicit Runge–Kutta solver of the probability-flow ODE, built from a tableau: its
/// claims are read off the tableau (order, one NFE per stage), and with embedded weights
/// each step returns the local error estimate. A plugin is its tableau, an empty `Params`
/// and `register_solver!(.., |_: Params| RkSolver::new(&TABLEAU, steps))`.
///
/// Claims: order `tableau.order` on a grid uniform in t; `stages` NFE per step (an FSAL
/// tableau's last stage is not reused between fixed steps, so the count stays per step);
/// deterministic; affine in x for an affine score; integrates the PF-ODE.
#[derive(Clone, Copy)]
pub struct RkSolver {
    tableau: &'static ButcherTableau,
    default_steps: usize,
    adaptive: Option<Adaptive>,
}

/// The tableau's name (and its tolerances when adaptive): what messages name the solver by.
impl std::fmt::Debug for RkSolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.adaptive {
            None => f.write_str(self.tableau.name),
            Some(a) => write!(
                f,
                "{}(rtol: {:e}, atol: {:e})",
                self.tableau.name, a.tolerances.rtol, a.tolerances.atol
            ),
        }
    }
}

impl RkSolver {
    /// The solver of `tableau`, which is validated here (never at run time), taking
    /// `default_steps` steps on the SDE's default grid unless a config says otherwise.
    pub fn new(tableau: &'static ButcherTableau, default_steps: usize) -> Result<Self> {
        tableau.validate()?;
        if default_steps == 0 {
            return Err(Error::invalid(
                tableau.name,
                "default_steps",
                "must be at least 1",
            ));
        }
        Ok(Self {
            tableau,
            default_steps,
            adaptive: None,
        })
    }

    /// The adaptive solver of `tableau`, which must have embedded weights: the loop chooses
    /// each row's steps from the embedded error estimate under `params`' tolerances and
    /// the PI controller of MATH.md §9 for the embedded order (validated here).
    pub fn adaptive(tableau: &'static ButcherTableau, params: &AdaptiveParams) -> Result<Self> {
        tableau.validate()?;
        let Some(embedded) = tableau.embedded else {
            return Err(Error::invalid(
                tableau.name,
                "tableau",
                "an adaptive solver needs embedded weights for its error estimate",
            ));
        };
        let adaptive = params.spec(tableau.order, embedded.order);
        adaptive.validate(tableau.name)?;
        Ok(Self {
            tableau,
            default_steps: 1,
            adaptive: Some(adaptive),
        })
    }

    /// The tableau.
    pub fn tableau(&self) -> &'static ButcherTableau {
        self.tableau
    }
}

impl Solver for RkSolver {
    fn claims(&self) -> SolverClaims {
        let adaptive = self.adaptive.is_some();
        SolverClaims {
            order: Order::Ode(f64::from(self.tableau.order)),
            // An adaptive attempt after the first reuses an FSAL tableau's last stage.
            nfe_per_step: self.tableau.stages() - usize::from(adaptive && self.tableau.is_fsal()),
            stochastic: false,
            // Adaptive steps depend on x, so an adaptive run is not affine in x.
            affine: !adaptive,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::Uniform,
        }
    }

    fn default_discretization(&self, sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: self.default_steps,
            grid: sde.default_grid(),
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (from, to) = ctx.span();
        let y = crate::likelihood::components(state);
        let first = state
            .first_stage
            .clone()
            .filter(|k| k.len() == y.len() && self.tableau.is_fsal());
        let out = match crate::likelihood::augmented(state) {
            Some((_, probes)) => {
                let field = crate::likelihood::AugmentedPfOde { ctx, probes };
                rk_integrate(self.tableau, &field, &y, &from, &to, first)?
            }
            None => rk_integrate(self.tableau, &PfOde(ctx), &y, &from, &to, first)?,
        };
        let mut next = crate::likelihood::with_components(state, out.y)?;
        // Between an adaptive run's attempts the last stage F(y_end, t_end) is the next
        // attempt's first (a fixed-step run keeps its NFE per step instead).
        if ctx.per_row() && self.tableau.is_fsal() {
            next.first_stage = Some(out.last_stage);
        }
        Ok(Step {
            state: next,
            error_estimate: out.error,
        })
    }

    fn adaptive(&self) -> Option<Adaptive> {
        self.adaptive
    }

    fn derivative(&self, ctx: &StepContext<'_>, state: &State) -> Result<Vec<Tensor>> {
        let (from, _) = ctx.span();
        let y = crate::likelihood::components(state);
        match crate::likelihood::augmented(state) {
            Some((_, probes)) => crate::likelihood::AugmentedPfOde { ctx, probes }.eval(&y, &from),
            None => PfOde(ctx).eval(&y, &from),
        }
    }

    fn integrates_likelihood(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use candle_core::{DType, Device};

    use super::*;
    use crate::{
        Denoiser, ForwardSde, RunContext, StepSpan,
        noise::{ConstantNoise, NoiseSource},
        testing::{Gaussian, Ou, flat},
    };

    // Test copies of the plugins' tableaux (Hairer, Nørsett & Wanner, "Solving ODEs I",
    // §II.1: Euler; Heun's explicit trapezoid; Kutta's classical method, Table 1.2 left).
    const EULER: ButcherTableau = ButcherTableau {
        name: "euler",
        a: &[&[]],
        b: &[1.0],
        c: &[0.0],
        order: 1,
        embedded: None,
    };
    const HEUN: ButcherTableau = ButcherTableau {
        name: "heun",
        a: &[&[], &[1.0]],
        b: &[0.5, 0.5],
        c: &[0.0, 1.0],
        order: 2,
        embedded: None,
    };
    const RK4: ButcherTableau = ButcherTableau {
        name: "rk4",
        a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
        b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
        c: &[0.0, 0.5, 0.5, 1.0],
        order: 4,
        embedded: None,
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
            embedded: None,
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
            embedded: None,
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
            (ButcherTableau { order: 6, ..RK4 }, "order 6 is unsupported"),
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
                let ctx = single_step(&sde, &den, &noise, t, s);
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

    /// The context of a run's only step, from t to s on `sde`, seed 0.
    fn single_step<'a>(
        sde: &'a Ou,
        den: &'a Denoiser,
        noise: &'a dyn NoiseSource,
        t: f64,
        s: f64,
    ) -> StepContext<'a> {
        RunContext::new(sde, den, noise, 0).step(StepSpan {
            from: sde.coefs(t),
            to: sde.coefs(s),
            step: 0,
            steps: 1,
        })
    }

    /// An f32 state stays f32 through every stage.
    #[test]
    fn f32_state_stays_f32() -> Result<()> {
        let sde = Ou;
        let den = centered_gaussian().denoiser();
        let noise = ConstantNoise(0.0);
        let ctx = single_step(&sde, &den, &noise, 0.5, 0.4);
        let x = Tensor::new(&[[1.0f32], [-2.0]], &Device::Cpu)?;
        assert_eq!(rk_step(&RK4, &ctx, &x)?.dtype(), DType::F32);
        Ok(())
    }

    /// Dormand & Prince's 5(4) pair (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.5,
    /// Table 5.2): seven stages, the last evaluated at the end point (FSAL), the main weights
    /// of order 5 and the embedded ones of order 4.
    const DOPRI5: ButcherTableau = ButcherTableau {
        name: "dopri5",
        a: &[
            &[],
            &[1.0 / 5.0],
            &[3.0 / 40.0, 9.0 / 40.0],
            &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
            &[
                19372.0 / 6561.0,
                -25360.0 / 2187.0,
                64448.0 / 6561.0,
                -212.0 / 729.0,
            ],
            &[
                9017.0 / 3168.0,
                -355.0 / 33.0,
                46732.0 / 5247.0,
                49.0 / 176.0,
                -5103.0 / 18656.0,
            ],
            &[
                35.0 / 384.0,
                0.0,
                500.0 / 1113.0,
                125.0 / 192.0,
                -2187.0 / 6784.0,
                11.0 / 84.0,
            ],
        ],
        b: &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
            0.0,
        ],
        c: &[0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
        order: 5,
        embedded: Some(Embedded {
            b: &[
                5179.0 / 57600.0,
                0.0,
                7571.0 / 16695.0,
                393.0 / 640.0,
                -92097.0 / 339200.0,
                187.0 / 2100.0,
                1.0 / 40.0,
            ],
            order: 4,
        }),
    };

    #[test]
    fn dormand_prince_validates_at_order_5_with_an_order_4_embedding() -> Result<()> {
        DOPRI5.validate()?;
        assert!(DOPRI5.is_fsal());
        assert!(!RK4.is_fsal() && !HEUN.is_fsal() && !EULER.is_fsal());
        // The embedded weights are only order 4: claimed at 5 they fail an order-5 tree.
        let msg = reason(&ButcherTableau {
            embedded: Some(Embedded {
                order: 5,
                ..DOPRI5.embedded.unwrap()
            }),
            ..DOPRI5
        });
        assert!(msg.contains("embedded order-5 condition"), "{msg}");
        // Classical RK4 claimed at order 5 fails the first order-5 condition: Σ b c⁴ =
        // ⅓·(1/16)·2 + ⅙ = 5/24, not 1/5 (residual 1/120).
        let msg = reason(&ButcherTableau { order: 5, ..RK4 });
        assert!(msg.contains("order-5 condition Σ b_i c_i⁴ = 1/5"), "{msg}");
        assert!(msg.contains("residual 8.33333333333"), "{msg}");
        Ok(())
    }

    /// For DOPRI5's main weights every one of the 17 conditions up to order 5 sums to its
    /// 1/γ(τ), the order-5 ones in Hairer et al.'s order; nudging one pair of weights (keeping
    /// Σ b = 1) breaks the order-2 condition first, which the message names.
    #[test]
    fn order_5_sums_hit_their_targets_and_a_nudge_is_caught() {
        let conds = DOPRI5.conditions();
        assert_eq!(conds.len(), 17, "1 + 1 + 2 + 4 + 9 trees up to order 5");
        for c in &conds {
            let (sum, _) = sum_and_scale(&c.terms);
            assert!((sum - c.target).abs() <= 1e-14, "{}: {sum}", c.formula);
        }
        let targets: Vec<f64> = conds[8..].iter().map(|c| 1.0 / c.target).collect();
        assert_eq!(
            targets,
            [5.0, 10.0, 15.0, 30.0, 20.0, 20.0, 40.0, 60.0, 120.0]
        );
        let msg = reason(&ButcherTableau {
            b: &[
                35.0 / 384.0 + 1e-3,
                0.0,
                500.0 / 1113.0 - 1e-3,
                125.0 / 192.0,
                -2187.0 / 6784.0,
                11.0 / 84.0,
                0.0,
            ],
            ..DOPRI5
        });
        assert!(msg.contains("order-2 condition"), "{msg}");
    }

    #[test]
    fn embedded_weights_are_checked() {
        let cases: [(Option<Embedded>, &str); 3] = [
            (
                Some(Embedded {
                    b: &[1.0],
                    order: 1,
                }),
                "the embedded weights have 1 entries but `b` has 2",
            ),
            (
                Some(Embedded {
                    b: &[0.5, 0.5],
                    order: 1,
                }),
                "the embedded weights equal `b`",
            ),
            (
                Some(Embedded {
                    b: &[1.0, 0.0],
                    order: 6,
                }),
                "embedded order 6 is unsupported",
            ),
        ];
        for (embedded, want) in cases {
            let msg = reason(&ButcherTableau { embedded, ..HEUN });
            assert!(msg.contains(want), "{msg} should contain {want:?}");
        }
        // Heun with Euler embedded (Heun–Euler 2(1)) is a valid pair.
        let pair = ButcherTableau {
            embedded: Some(Embedded {
                b: &[1.0, 0.0],
                order: 1,
            }),
            ..HEUN
        };
        assert!(pair.validate().is_ok());
        assert!(!pair.is_fsal(), "b_s = ½ ≠ 0");
    }

    /// dy/dt = L y on y = (x, z) with dz/dt = x: the augmented state a likelihood integrates
    /// (x and an accumulated quantity). Exact: x(t) = x₀ e^{L t}, z(t) = z₀ + x₀ (e^{L t} − 1)/L.
    struct Linear {
        l: f64,
        evals: Cell<usize>,
    }

    impl OdeField for Linear {
        fn eval(&self, y: &[Tensor], _c: &Time) -> Result<Vec<Tensor>> {
            self.evals.set(self.evals.get() + 1);
            Ok(vec![y[0].affine(self.l, 0.0)?, y[0].clone()])
        }
        fn coefs(&self, t: f64) -> TimeCoefs {
            at(t)
        }
    }

    fn at(t: f64) -> TimeCoefs {
        TimeCoefs {
            t,
            alpha: 1.0,
            sigma: 1.0,
            f: 0.0,
            g2: 0.0,
            lambda: 0.0,
        }
    }

    /// One DOPRI5 step of size h on the augmented linear system: the 5th-order solution's
    /// error falls like h⁶ and the embedded estimate like h⁵ (local errors of orders 5 and
    /// 4): halving h divides them by ≈ 64 and ≈ 32. The last stage is F(y_end): handing it to
    /// the next step as `first_stage` saves one evaluation and changes nothing.
    #[test]
    fn dopri5_error_estimate_and_fsal_on_an_augmented_state() -> Result<()> {
        let field = Linear {
            l: -1.3,
            evals: Cell::new(0),
        };
        let y0 = [
            Tensor::new(&[[0.7f64], [-1.1]], &Device::Cpu)?,
            Tensor::new(&[[0.0f64], [2.0]], &Device::Cpu)?,
        ];
        let errors = |h: f64| -> Result<(f64, f64)> {
            let out = rk_integrate(
                &DOPRI5,
                &field,
                &y0,
                &Time::Call(at(0.0)),
                &Time::Call(at(h)),
                None,
            )?;
            let (x0, z0) = (flat(&y0[0])?, flat(&y0[1])?);
            let (x, z) = (flat(&out.y[0])?, flat(&out.y[1])?);
            let e = (field.l * h).exp();
            let mut actual: f64 = 0.0;
            for i in 0..2 {
                actual = actual
                    .max((x[i] - x0[i] * e).abs())
                    .max((z[i] - z0[i] - x0[i] * (e - 1.0) / field.l).abs());
            }
            let est = out
                .error
                .expect("DOPRI5 has embedded weights")
                .iter()
                .map(|t| flat(t).map(|v| v.iter().fold(0.0f64, |m, e| m.max(e.abs()))))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .fold(0.0, f64::max);
            Ok((actual, est))
        };
        let (a1, e1) = errors(0.4)?;
        let (a2, e2) = errors(0.2)?;
        let (actual_order, est_order) = ((a1 / a2).log2() - 1.0, (e1 / e2).log2() - 1.0);
        assert!(
            (actual_order - 5.0).abs() <= 0.3,
            "{a1:e} {a2:e}: {actual_order}"
        );
        assert!((est_order - 4.0).abs() <= 0.3, "{e1:e} {e2:e}: {est_order}");
        assert!(
            e2 > 10.0 * a2,
            "the estimate is the 4th-order solution's error"
        );

        field.evals.set(0);
        let first = rk_integrate(
            &DOPRI5,
            &field,
            &y0,
            &Time::Call(at(0.0)),
            &Time::Call(at(0.2)),
            None,
        )?;
        assert_eq!(field.evals.get(), 7);
        let fresh = rk_integrate(
            &DOPRI5,
            &field,
            &first.y,
            &Time::Call(at(0.2)),
            &Time::Call(at(0.4)),
            None,
        )?;
        let direct = field.eval(&first.y, &Time::Call(at(0.2)))?;
        for (k, d) in first.last_stage.iter().zip(&direct) {
            assert_eq!(
                flat(k)?,
                flat(d)?,
                "FSAL: the last stage is F(y_end, t_end)"
            );
        }
        field.evals.set(0);
        let reused = rk_integrate(
            &DOPRI5,
            &field,
            &first.y,
            &Time::Call(at(0.2)),
            &Time::Call(at(0.4)),
            Some(first.last_stage.clone()),
        )?;
        assert_eq!(field.evals.get(), 6, "the first stage is reused");
        for (r, f) in reused.y.iter().zip(&fresh.y) {
            assert_eq!(flat(r)?, flat(f)?);
        }
        Ok(())
    }

    /// Per-row times: each row of one batched step, from its own t to its own s, is the
    /// per-call step of that row alone (to rounding: h scales the stage sum instead of each
    /// weight), for every stage time in between; the error estimate too.
    #[test]
    fn a_per_row_step_is_each_row_stepped_alone() -> Result<()> {
        let sde = Ou;
        let model = centered_gaussian();
        let noise = ConstantNoise(f64::NAN);
        let spans = [(1.0, 0.9), (0.3, 0.05), (0.01, 1e-3), (0.5, 0.5)];
        let x0 = [0.7, -1.3, 2.0, 0.4];
        let x = Tensor::new(&x0, &Device::Cpu)?.reshape((4, 1))?;
        let den = model.denoiser();
        let run = RunContext::new(&sde, &den, &noise, 0);
        let from = Rows::at(&sde, &spans.map(|s| s.0));
        let to = Rows::at(&sde, &spans.map(|s| s.1));
        let ctx = run.step_rows(from.clone(), to.clone(), 0);
        let rows = rk_integrate(
            &DOPRI5,
            &PfOde(&ctx),
            std::slice::from_ref(&x),
            &Time::Rows(from),
            &Time::Rows(to),
            None,
        )?;
        assert_eq!(den.nfe(), 7, "one batched call per stage");
        let (y, e) = (flat(&rows.y[0])?, flat(&rows.error.expect("embedded")[0])?);
        for (i, &(t, s)) in spans.iter().enumerate() {
            let one = Tensor::new(&[[x0[i]]], &Device::Cpu)?;
            let ctx = single_step(&sde, &den, &noise, t, s);
            let alone = rk_integrate(
                &DOPRI5,
                &PfOde(&ctx),
                std::slice::from_ref(&one),
                &Time::Call(ctx.from),
                &Time::Call(ctx.to),
                None,
            )?;
            let (ya, ea) = (
                flat(&alone.y[0])?[0],
                flat(&alone.error.expect("embedded")[0])?[0],
            );
            assert!(
                (y[i] - ya).abs() <= 1e-14 * ya.abs().max(1.0),
                "row {i}: {} vs {ya}",
                y[i]
            );
            assert!(
                (e[i] - ea).abs() <= 1e-14 * ea.abs().max(1e-3),
                "row {i}: {} vs {ea}",
                e[i]
            );
        }
        // A zero step leaves its row where it was.
        assert_eq!(y[3], x0[3]);
        // Ends of different kinds are refused.
        let mixed = rk_integrate(
            &DOPRI5,
            &PfOde(&ctx),
            std::slice::from_ref(&x),
            &Time::Call(sde.coefs(0.5)),
            &Time::Rows(Rows::at(&sde, &[0.1; 4])),
            None,
        );
        assert!(mixed.is_err());
        Ok(())
    }

    /// The solver reads its claims off the tableau; with embedded weights every step returns
    /// its error estimate, without them none.
    #[test]
    fn rk_solver_claims_come_from_the_tableau() -> Result<()> {
        static HEUN_EULER: ButcherTableau = ButcherTableau {
            name: "heun_euler",
            embedded: Some(Embedded {
                b: &[1.0, 0.0],
                order: 1,
            }),
            ..HEUN
        };
        static DOPRI: ButcherTableau = DOPRI5;
        static FOURTH: ButcherTableau = RK4;
        for (tableau, order, nfe) in [(&DOPRI, 5.0, 7), (&FOURTH, 4.0, 4), (&HEUN_EULER, 2.0, 2)] {
            let solver = RkSolver::new(tableau, 30)?;
            let claims = solver.claims();
            assert_eq!(claims.order, Order::Ode(order));
            assert_eq!(claims.nfe_per_step, nfe);
            assert!(!claims.stochastic && claims.affine);
            assert_eq!(claims.natural_grid, GridKind::Uniform);
            assert_eq!(solver.default_discretization(&Ou).steps, 30);
            let sde = Ou;
            let den = centered_gaussian().denoiser();
            let noise = ConstantNoise(f64::NAN);
            let ctx = single_step(&sde, &den, &noise, 0.5, 0.4);
            let x = Tensor::new(&[[1.0f64], [-2.0]], &Device::Cpu)?;
            let step = solver.step(&ctx, &State::new(x.clone(), 0.5, 0))?;
            assert_eq!(den.nfe(), nfe as u64);
            assert_eq!(
                step.error_estimate.is_some(),
                tableau.embedded.is_some(),
                "{}",
                tableau.name
            );
            assert_eq!(flat(&step.state.x)?, flat(&rk_step(tableau, &ctx, &x)?)?);
        }
        static BAD: ButcherTableau = ButcherTableau { order: 3, ..HEUN };
        assert!(RkSolver::new(&BAD, 10).is_err());
        assert!(RkSolver::new(&FOURTH, 0).is_err());
        Ok(())
    }
}
