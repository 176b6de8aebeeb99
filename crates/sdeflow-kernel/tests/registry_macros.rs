//! The `register_*!` macros used from outside the kernel, as a plugin crate uses them: the
//! registry collects, sorts and describes the registrations, builds plugins from RON, and
//! reports configuration errors with their line and column.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device};
use common::{EpsParam, ExpSde, GaussianEps, OdeEuler};
use sdeflow_kernel::{
    Error, ForwardSde, ModelContext, Registry, Result, TimeCoefs, Weighting, register_model,
    register_param, register_sde, register_solver, register_weighting,
};
use serde::{Deserialize, Serialize};

/// The test SDE's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SdeParams {
    t_max: f64,
    t_eps: f64,
}

impl Default for SdeParams {
    fn default() -> Self {
        Self {
            t_max: 1.0,
            t_eps: 1e-3,
        }
    }
}

fn build_sde(p: SdeParams) -> Result<ExpSde> {
    if !(p.t_eps > 0.0 && p.t_eps < p.t_max) {
        return Err(Error::invalid(
            "exp_test",
            "t_eps",
            format!("must lie in (0, t_max), got {}", p.t_eps),
        ));
    }
    Ok(ExpSde {
        t_max: p.t_max,
        t_eps: p.t_eps,
        closed_inverse: true,
    })
}

register_sde!("exp_test", "α = e^{−t} (test)", SdeParams, build_sde);
register_sde!(
    "another_sde",
    "a second SDE, to check sorting",
    Empty,
    |_: Empty| Ok(ExpSde::new())
);

/// No parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

register_param!("eps_test", "ε-prediction (test)", Empty, |_: Empty| Ok(
    EpsParam
));
register_solver!("euler_test", "PF-ODE Euler (test)", Empty, |_: Empty| Ok(
    OdeEuler
));

/// A weighting with one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScaleParams {
    scale: f64,
}

impl Default for ScaleParams {
    fn default() -> Self {
        Self { scale: 2.0 }
    }
}

#[derive(Debug)]
struct Scaled(f64);

impl Weighting for Scaled {
    fn eps_weight(&self, _c: &TimeCoefs) -> f64 {
        self.0
    }
}

register_weighting!(
    "scaled_test",
    "w = scale (test)",
    ScaleParams,
    |p: ScaleParams| Ok(Scaled(p.scale))
);

/// The model's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ModelParams {
    mean: Vec<f64>,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            mean: vec![0.0, 0.0],
        }
    }
}

fn build_model(p: ModelParams, ctx: &ModelContext) -> Result<GaussianEps> {
    if ctx.dtype != DType::F64 {
        return Err(Error::invalid("gauss_test", "dtype", "f64 only"));
    }
    Ok(GaussianEps {
        mean: p.mean,
        std: 1.0,
    })
}

register_model!(
    "gauss_test",
    "exact Gaussian ε (test)",
    ModelParams,
    build_model
);

#[test]
fn registrations_are_collected_sorted_and_described() -> Result<()> {
    let r = Registry::global()?;
    assert_eq!(r.sdes.names(), &["another_sde", "exp_test"]);
    assert_eq!(r.params.names(), &["eps_test"]);
    assert_eq!(r.models.names(), &["gauss_test"]);
    assert_eq!(r.solvers.names(), &["euler_test"]);
    assert_eq!(r.weightings.names(), &["scaled_test"]);
    let infos: Vec<(&str, &str)> = r.infos().iter().map(|(k, i)| (*k, i.name)).collect();
    assert_eq!(
        infos,
        [
            ("model", "gauss_test"),
            ("param", "eps_test"),
            ("sde", "another_sde"),
            ("sde", "exp_test"),
            ("solver", "euler_test"),
            ("weighting", "scaled_test"),
        ]
    );
    for (_, info) in r.infos() {
        assert_eq!(info.crate_name, "sdeflow-kernel");
        assert!(!info.summary.is_empty());
    }
    let sde = r.sdes.get("exp_test")?;
    assert_eq!(sde.info.summary, "α = e^{−t} (test)");
    // The default parameters print as RON that reads back to the defaults.
    let text = (sde.info.default_params)();
    let back: SdeParams = sdeflow_kernel::de::ron_options()
        .from_str(&text)
        .map_err(|e| Error::Msg(e.to_string()))?;
    assert_eq!(back, SdeParams::default());
    assert_eq!(
        (r.params.get("eps_test")?.info.default_params)().trim(),
        "()"
    );
    Ok(())
}

#[test]
fn plugins_build_from_ron() -> Result<()> {
    let r = Registry::global()?;
    let sde = r.sde("exp_test", "()")?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0, 1e-3));
    let sde = r.sde("exp_test", "(t_eps: 0.01, t_max: 2.0)")?;
    assert_eq!((sde.t_max(), sde.t_eps()), (2.0, 0.01));
    let c = sde.coefs(0.5);
    assert_eq!(r.weighting("scaled_test", "()")?.eps_weight(&c), 2.0);
    assert_eq!(
        r.weighting("scaled_test", "(scale: 0.5)")?.eps_weight(&c),
        0.5
    );
    assert_eq!(r.solver("euler_test", "()")?.claims().nfe_per_step, 1);
    assert!(r.param("eps_test", "()").is_ok());
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let model = r.model("gauss_test", "(mean: [1.0, 2.0, 3.0])", &ctx)?;
    assert_eq!(model.sample_shape(), vec![3]);
    // The model's own check surfaces as a configuration error with its reason.
    let ctx32 = ModelContext::new(Device::Cpu, DType::F32);
    match r.model("gauss_test", "()", &ctx32) {
        Err(Error::Config { msg, .. }) => assert!(msg.contains("f64 only"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let _: Arc<dyn ForwardSde> = r.sde("another_sde", "()")?;
    Ok(())
}

fn config_error<T: std::fmt::Debug>(r: Result<T>) -> (String, usize, usize, String) {
    match r {
        Err(Error::Config {
            file,
            line,
            col,
            msg,
        }) => (file, line, col, msg),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn configuration_errors_keep_line_and_column() -> Result<()> {
    let r = Registry::global()?;
    // `t_epz` starts at line 3, column 5 of this text.
    let text = "(\n    t_max: 1.0,\n    t_epz: 0.1,\n)";
    let (file, line, col, msg) = config_error(r.sde("exp_test", text));
    assert_eq!(file, "<exp_test parameters>");
    assert_eq!((line, col), (3, 5), "{msg}");
    assert!(msg.contains("t_epz") && msg.contains("t_eps"), "{msg}");
    // A wrong type.
    let (_, line, _, msg) = config_error(r.sde("exp_test", "(t_eps: \"small\")"));
    assert_eq!(line, 1, "{msg}");
    // The plugin's own validation, with its field and reason.
    let (_, _, _, msg) = config_error(r.sde("exp_test", "(t_eps: 5.0)"));
    assert!(
        msg.contains("t_eps") && msg.contains("must lie in"),
        "{msg}"
    );
    // Unknown fields on a parameterless plugin.
    let (_, _, _, msg) = config_error(r.solver("euler_test", "(steps: 3)"));
    assert!(msg.contains("steps"), "{msg}");
    // The rendered error reads file:line:col: message.
    let e = r
        .sde("exp_test", text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("<exp_test parameters>:3:5: "), "{e}");
    Ok(())
}

#[test]
fn unknown_names_list_the_registered_ones() -> Result<()> {
    let r = Registry::global()?;
    match r.sde("exp", "()") {
        Err(e @ Error::UnknownPlugin { .. }) => {
            assert_eq!(
                e.to_string(),
                "unknown sde plugin `exp`; registered sde plugins: another_sde, exp_test"
            );
        }
        other => panic!("expected UnknownPlugin, got {other:?}"),
    }
    Ok(())
}
