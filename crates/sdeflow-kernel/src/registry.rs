//! The plugin registry: one registration struct per kind, submitted through `register_*!`
//! macros over [`inventory`], collected once, sorted, with duplicates rejected.
//!
//! A plugin is built from RON text (its `Params`, deserialized with `deny_unknown_fields`) so
//! that configuration errors keep their line and column.

use std::{
    fmt::Debug,
    sync::{Arc, OnceLock},
};

use serde::{Serialize, de::DeserializeSeed};

use crate::{
    Error, ForwardSde, ModelContext, Parameterization, Result, ScoreModel, Solver, Weighting,
};

/// What every registration says about its plugin.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The registered name (snake_case, the crate's suffix).
    pub name: &'static str,
    /// The registering crate.
    pub crate_name: &'static str,
    /// A one-line summary.
    pub summary: &'static str,
    /// The RON of the default parameters.
    pub default_params: fn() -> String,
}

/// A deserializer of plugin parameters, type-erased so that names known only at run time can
/// be looked up while the outer (RON) deserializer keeps its position.
pub type ErasedDe<'a, 'de> = &'a mut dyn erased_serde::Deserializer<'de>;

/// A plugin kind: what its registration builds and from what.
pub trait Kind: 'static {
    /// The kind's name as users write it (`sde`, `solver`, ...).
    const NAME: &'static str;
    /// The registration struct.
    type Plugin: Registration;
}

/// A registration of some kind.
pub trait Registration: Debug + Sync + 'static {
    /// The plugin's description.
    fn info(&self) -> &PluginInfo;
}

macro_rules! kind {
    ($kind:ident, $plugin:ident, $name:literal, $obj:ty, $doc:literal, ($($ctx:ident: $ctx_ty:ty),*)) => {
        #[doc = concat!("The `", $name, "` kind.")]
        #[derive(Debug)]
        pub struct $kind;
        impl Kind for $kind {
            const NAME: &'static str = $name;
            type Plugin = $plugin;
        }
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $plugin {
            /// Name, crate, summary, defaults.
            pub info: PluginInfo,
            /// Builds the plugin from its parameters.
            pub build: for<'a, 'de> fn(ErasedDe<'a, 'de> $(, $ctx_ty)*) -> std::result::Result<$obj, erased_serde::Error>,
        }
        impl Registration for $plugin {
            fn info(&self) -> &PluginInfo {
                &self.info
            }
        }
        inventory::collect!($plugin);
    };
}

kind!(
    SdeKind,
    SdePlugin,
    "sde",
    Arc<dyn ForwardSde>,
    "A registered forward SDE.",
    ()
);
kind!(
    ParamKind,
    ParamPlugin,
    "param",
    Arc<dyn Parameterization>,
    "A registered parameterization.",
    ()
);
kind!(ModelKind, ModelPlugin, "model", Arc<dyn ScoreModel>, "A registered score model.", (ctx: &ModelContext));
kind!(
    SolverKind,
    SolverPlugin,
    "solver",
    Arc<dyn Solver>,
    "A registered solver.",
    ()
);
kind!(
    WeightingKind,
    WeightingPlugin,
    "weighting",
    Arc<dyn Weighting>,
    "A registered weighting.",
    ()
);

/// The registrations of one kind, sorted by name.
#[derive(Debug)]
pub struct Catalog<K: Kind> {
    plugins: Vec<&'static K::Plugin>,
    names: &'static [&'static str],
}

impl<K: Kind> Catalog<K> {
    fn new(mut plugins: Vec<&'static K::Plugin>) -> Result<Self> {
        plugins.sort_by_key(|p| p.info().name);
        for w in plugins.windows(2) {
            if w[0].info().name == w[1].info().name {
                return Err(Error::DuplicatePlugin {
                    kind: K::NAME,
                    name: w[0].info().name,
                    first: w[0].info().crate_name,
                    second: w[1].info().crate_name,
                });
            }
        }
        // Leaked once per process: serde's `unknown_variant` wants `&'static [&'static str]`.
        let names: Vec<&'static str> = plugins.iter().map(|p| p.info().name).collect();
        Ok(Self {
            plugins,
            names: Box::leak(names.into_boxed_slice()),
        })
    }

    /// Every registration, sorted by name.
    pub fn all(&self) -> &[&'static K::Plugin] {
        &self.plugins
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    /// The registration called `name`, or an error listing the registered names.
    pub fn get(&self, name: &str) -> Result<&'static K::Plugin> {
        self.plugins
            .iter()
            .copied()
            .find(|p| p.info().name == name)
            .ok_or_else(|| Error::UnknownPlugin {
                kind: K::NAME,
                name: name.to_string(),
                known: self.names.iter().map(|s| s.to_string()).collect(),
            })
    }
}

/// Every registered plugin, by kind.
#[derive(Debug)]
pub struct Registry {
    /// Forward SDEs.
    pub sdes: Catalog<SdeKind>,
    /// Parameterizations.
    pub params: Catalog<ParamKind>,
    /// Score models.
    pub models: Catalog<ModelKind>,
    /// Solvers.
    pub solvers: Catalog<SolverKind>,
    /// Weightings.
    pub weightings: Catalog<WeightingKind>,
}

fn collect<P: inventory::Collect>() -> Vec<&'static P> {
    inventory::iter::<P>.into_iter().collect()
}

impl Registry {
    /// The process-wide registry, collected on first use. A duplicate name is an error here.
    ///
    /// Only plugins whose crates the binary names (`use sdeflow_plugins as _;`) are present:
    /// a crate that is merely a dependency registers nothing.
    pub fn global() -> Result<&'static Registry> {
        static REGISTRY: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
        REGISTRY
            .get_or_init(|| Self::collect().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Msg(e.clone()))
    }

    fn collect() -> Result<Self> {
        Ok(Self {
            sdes: Catalog::new(collect())?,
            params: Catalog::new(collect())?,
            models: Catalog::new(collect())?,
            solvers: Catalog::new(collect())?,
            weightings: Catalog::new(collect())?,
        })
    }

    /// Every registration of every kind as (kind, info), sorted by kind then name.
    pub fn infos(&self) -> Vec<(&'static str, PluginInfo)> {
        fn of<K: Kind>(c: &Catalog<K>) -> impl Iterator<Item = (&'static str, PluginInfo)> + '_ {
            c.all().iter().map(|p| (K::NAME, *p.info()))
        }
        of(&self.models)
            .chain(of(&self.params))
            .chain(of(&self.sdes))
            .chain(of(&self.solvers))
            .chain(of(&self.weightings))
            .collect()
    }

    /// Builds the SDE `name` from RON parameters (`"()"` for the defaults).
    pub fn sde(&self, name: &str, params: &str) -> Result<Arc<dyn ForwardSde>> {
        let p = self.sdes.get(name)?;
        from_ron(p.info.name, params, |de| (p.build)(de))
    }
    /// Builds the parameterization `name`.
    pub fn param(&self, name: &str, params: &str) -> Result<Arc<dyn Parameterization>> {
        let p = self.params.get(name)?;
        from_ron(p.info.name, params, |de| (p.build)(de))
    }
    /// Builds the score model `name` in `ctx`.
    pub fn model(
        &self,
        name: &str,
        params: &str,
        ctx: &ModelContext,
    ) -> Result<Arc<dyn ScoreModel>> {
        let p = self.models.get(name)?;
        from_ron(p.info.name, params, |de| (p.build)(de, ctx))
    }
    /// Builds the solver `name`.
    pub fn solver(&self, name: &str, params: &str) -> Result<Arc<dyn Solver>> {
        let p = self.solvers.get(name)?;
        from_ron(p.info.name, params, |de| (p.build)(de))
    }
    /// Builds the weighting `name`.
    pub fn weighting(&self, name: &str, params: &str) -> Result<Arc<dyn Weighting>> {
        let p = self.weightings.get(name)?;
        from_ron(p.info.name, params, |de| (p.build)(de))
    }
}

/// The RON options sdeflow reads with: newtype variants unwrap, so `ddim(eta: 0.0)` reads the
/// struct inside the variant directly.
pub fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
}

struct BuildSeed<F>(F);

impl<'de, T, F> DeserializeSeed<'de> for BuildSeed<F>
where
    F: FnOnce(ErasedDe<'_, 'de>) -> std::result::Result<T, erased_serde::Error>,
{
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> std::result::Result<T, D::Error> {
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(de);
        (self.0)(&mut erased).map_err(serde::de::Error::custom)
    }
}

fn from_ron<T>(
    plugin: &str,
    text: &str,
    build: impl FnOnce(ErasedDe<'_, '_>) -> std::result::Result<T, erased_serde::Error>,
) -> Result<T> {
    ron_options()
        .from_str_seed(text, BuildSeed(build))
        .map_err(|e| Error::Config {
            file: format!("<{plugin} parameters>"),
            line: e.span.start.line,
            col: e.span.start.col,
            msg: e.code.to_string(),
        })
}

/// The RON of `P::default()`, for `describe` and the registry's `default_params`.
pub fn default_params_ron<P: Default + Serialize>() -> String {
    ron::ser::to_string_pretty(
        &P::default(),
        ron::ser::PrettyConfig::default().struct_names(false),
    )
    .unwrap_or_else(|e| format!("<unprintable defaults: {e}>"))
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($plugin:ident, $name:literal, $summary:literal, $params:ty, $obj:ty, $build:expr $(, $ctx:ident: $ctx_ty:ty)?) => {
        const _: () = {
            fn __sdeflow_build<'de>(
                de: $crate::registry::ErasedDe<'_, 'de>
                $(, $ctx: $ctx_ty)?
            ) -> ::std::result::Result<$obj, $crate::erased_serde::Error> {
                let params: $params = $crate::erased_serde::deserialize(de)?;
                let build: fn($params $(, $ctx_ty)?) -> $crate::Result<_> = $build;
                let built = build(params $(, $ctx)?).map_err(<$crate::erased_serde::Error as $crate::serde::de::Error>::custom)?;
                Ok(::std::sync::Arc::new(built))
            }
            $crate::inventory::submit! {
                $crate::registry::$plugin {
                    info: $crate::registry::PluginInfo {
                        name: $name,
                        crate_name: env!("CARGO_PKG_NAME"),
                        summary: $summary,
                        default_params: $crate::registry::default_params_ron::<$params>,
                    },
                    build: __sdeflow_build,
                }
            }
        };
    };
}

/// Registers a forward SDE: `register_sde!("vp", "summary", Params, |p: Params| Vp::new(p));`
/// where the builder returns `Result<T>` with `T: ForwardSde`.
#[macro_export]
macro_rules! register_sde {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(
            SdePlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::ForwardSde>,
            $build
        );
    };
}

/// Registers a parameterization (builder: `fn(Params) -> Result<T>`, `T: Parameterization`).
#[macro_export]
macro_rules! register_param {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(
            ParamPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::Parameterization>,
            $build
        );
    };
}

/// Registers a score model (builder: `fn(Params, &ModelContext) -> Result<T>`, `T: ScoreModel`).
#[macro_export]
macro_rules! register_model {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(ModelPlugin, $name, $summary, $params, ::std::sync::Arc<dyn $crate::ScoreModel>, $build, ctx: &$crate::ModelContext);
    };
}

/// Registers a solver (builder: `fn(Params) -> Result<T>`, `T: Solver`).
#[macro_export]
macro_rules! register_solver {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(
            SolverPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::Solver>,
            $build
        );
    };
}

/// Registers a weighting (builder: `fn(Params) -> Result<T>`, `T: Weighting`).
#[macro_export]
macro_rules! register_weighting {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(
            WeightingPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::Weighting>,
            $build
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(_: ErasedDe<'_, '_>) -> std::result::Result<Arc<dyn Solver>, erased_serde::Error> {
        Err(<erased_serde::Error as serde::de::Error>::custom(
            "not buildable",
        ))
    }

    fn no_params() -> String {
        "()".into()
    }

    const fn plugin(name: &'static str, crate_name: &'static str) -> SolverPlugin {
        SolverPlugin {
            info: PluginInfo {
                name,
                crate_name,
                summary: "test",
                default_params: no_params,
            },
            build,
        }
    }

    static HEUN: SolverPlugin = plugin("heun", "crate-heun");
    static DDIM: SolverPlugin = plugin("ddim", "crate-ddim");
    static EULER: SolverPlugin = plugin("euler", "crate-euler");
    static DDIM_AGAIN: SolverPlugin = plugin("ddim", "crate-other");

    #[test]
    fn catalog_sorts_by_name_and_finds_each() -> Result<()> {
        let c = Catalog::<SolverKind>::new(vec![&HEUN, &DDIM, &EULER])?;
        assert_eq!(c.names(), &["ddim", "euler", "heun"]);
        let crates: Vec<&str> = c.all().iter().map(|p| p.info.crate_name).collect();
        assert_eq!(crates, ["crate-ddim", "crate-euler", "crate-heun"]);
        assert_eq!(c.get("euler")?.info.crate_name, "crate-euler");
        match c.get("eulr") {
            Err(Error::UnknownPlugin { kind, name, known }) => {
                assert_eq!((kind, name.as_str()), ("solver", "eulr"));
                assert_eq!(known, ["ddim", "euler", "heun"]);
            }
            other => panic!("expected UnknownPlugin, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn catalog_rejects_a_repeated_name_naming_both_crates() -> Result<()> {
        match Catalog::<SolverKind>::new(vec![&HEUN, &DDIM, &EULER, &DDIM_AGAIN]) {
            Err(Error::DuplicatePlugin {
                kind,
                name,
                first,
                second,
            }) => {
                assert_eq!((kind, name), ("solver", "ddim"));
                let mut crates = [first, second];
                crates.sort();
                assert_eq!(crates, ["crate-ddim", "crate-other"]);
            }
            other => panic!("expected DuplicatePlugin, got {other:?}"),
        }
        let empty = Catalog::<SolverKind>::new(Vec::new())?;
        assert!(empty.names().is_empty() && empty.all().is_empty());
        Ok(())
    }

    #[test]
    fn build_errors_become_config_errors() -> Result<()> {
        let c = Catalog::<SolverKind>::new(vec![&HEUN])?;
        let p = c.get("heun")?;
        match from_ron(p.info.name, "()", |de| (p.build)(de)) {
            Err(Error::Config { file, msg, .. }) => {
                assert_eq!(file, "<heun parameters>");
                assert!(msg.contains("not buildable"), "{msg}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        Ok(())
    }
}
