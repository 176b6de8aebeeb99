//! The plugin registry: one registration struct per kind, submitted through `register_*!`
//! macros over [`inventory`], collected once, sorted, with duplicates rejected.
//!
//! The registry holds registrations only; reading plugins from RON text (their `Params`,
//! deserialized with `deny_unknown_fields`, spans kept) is the [`de`](crate::de) module's.

use std::{
    fmt::Debug,
    sync::{Arc, OnceLock},
};

use crate::{
    Error, ForwardSde, ModelContext, Parameterization, Result, ScoreModel, Solver, Weighting,
    data::Data,
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
    /// The source of the registering crate's `src/lib.rs`, whose `//!` lines are the plugin's
    /// documentation (formula, parameters, claims, references).
    pub source: &'static str,
    /// Parameter sets (RON) that conformance checks besides the defaults, for plugins whose
    /// parameters change their claims (`ddim`'s η > 0 is a stochastic sampler).
    pub variants: &'static [&'static str],
    /// For a plugin whose defaults need files (a data plugin reading a user's array): writes a
    /// small valid instance into the given directory and returns parameters (RON) that read it.
    /// Conformance runs such a plugin on its fixture.
    pub fixture: Option<Fixture>,
    /// For a name users know from elsewhere that is another plugin with fixed parameters
    /// (`euler_ancestral` is `ddim(eta: 1.0)`): that plugin and parameter set, as a config
    /// writes it. Conformance checks the alias builds the same solver and runs the target's
    /// contracts once, under the target's name.
    pub alias_of: Option<&'static str>,
}

/// Writes a plugin's test files into a directory and returns the parameters that read them.
pub type Fixture = fn(&std::path::Path) -> Result<String>;

impl PluginInfo {
    /// The plugin's `//!` documentation.
    pub fn doc(&self) -> String {
        self.source
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A deserializer of plugin parameters, type-erased so that names known only at run time can
/// be looked up while the outer (RON) deserializer keeps its position.
pub type ErasedDe<'a, 'de> = &'a mut dyn erased_serde::Deserializer<'de>;

/// A plugin kind: what its registration builds, from what, and where the registry keeps it.
pub trait Kind: 'static {
    /// The kind's name as users write it (`sde`, `solver`, ...).
    const NAME: &'static str;
    /// The registration struct.
    type Plugin: Registration;
    /// What a registration builds (`Arc<dyn Solver>`, ...).
    type Object: Clone + Debug + Send + Sync;
    /// What building needs besides the parameters: `()` for every kind but models, which
    /// get a [`ModelContext`].
    type Ctx: Clone + Debug;
    /// This kind's catalog in `registry`.
    fn catalog(registry: &Registry) -> &Catalog<Self>
    where
        Self: Sized;
    /// Deserializes `plugin`'s parameters from `de` and builds it in `ctx`.
    fn build(
        plugin: &Self::Plugin,
        de: ErasedDe<'_, '_>,
        ctx: &Self::Ctx,
    ) -> std::result::Result<Self::Object, erased_serde::Error>;
}

/// A registration of some kind.
pub trait Registration: Debug + Sync + 'static {
    /// The plugin's description.
    fn info(&self) -> &PluginInfo;
}

/// The one list of plugin kinds: each line declares a kind's marker type, its registration
/// struct, its name in RON and on the command line, the [`Registry`] field holding its
/// catalog, what it builds and what building it needs. [`KINDS`], [`Registry`] and
/// [`Registry::infos`] are generated from it, so a new kind is one line here (plus its
/// `register_*!` macro and its builder in [`de`](crate::de)).
macro_rules! kinds {
    ($($(#[$doc:meta])* $field:ident: $kind:ident, $plugin:ident, $name:literal, $obj:ty, $ctx:ty;)*) => {
        $(
            #[doc = concat!("The `", $name, "` kind.")]
            #[derive(Debug)]
            pub struct $kind;

            $(#[$doc])*
            #[derive(Debug)]
            pub struct $plugin {
                /// Name, crate, summary, defaults.
                pub info: PluginInfo,
                /// Builds the plugin from its parameters.
                pub build: for<'a, 'de, 'c> fn(ErasedDe<'a, 'de>, &'c $ctx) -> std::result::Result<$obj, erased_serde::Error>,
            }

            impl Registration for $plugin {
                fn info(&self) -> &PluginInfo {
                    &self.info
                }
            }

            impl Kind for $kind {
                const NAME: &'static str = $name;
                type Plugin = $plugin;
                type Object = $obj;
                type Ctx = $ctx;
                fn catalog(registry: &Registry) -> &Catalog<Self> {
                    &registry.$field
                }
                fn build(
                    plugin: &$plugin,
                    de: ErasedDe<'_, '_>,
                    ctx: &$ctx,
                ) -> std::result::Result<$obj, erased_serde::Error> {
                    (plugin.build)(de, ctx)
                }
            }

            inventory::collect!($plugin);
        )*

        /// Every plugin kind's name, sorted: what `list`, `describe`, `conformance --kind` and
        /// `new-plugin` accept.
        pub const KINDS: &[&str] = &[$($name),*];

        /// Every registered plugin, by kind. Cloning it is cheap (the catalogs are shared).
        #[derive(Debug, Clone)]
        pub struct Registry {
            $(
                #[doc = concat!("The `", $name, "` plugins.")]
                pub $field: Catalog<$kind>,
            )*
        }

        impl Registry {
            fn collect() -> Result<Self> {
                Ok(Self {
                    $($field: Catalog::new(collect())?,)*
                })
            }

            /// Every registration of every kind as (kind, info), sorted by kind then name.
            pub fn infos(&self) -> Vec<(&'static str, PluginInfo)> {
                let mut all = Vec::new();
                $(all.extend(self.$field.all().iter().map(|p| ($name, *p.info())));)*
                all
            }
        }
    };
}

// Sorted by name: `infos`, `list` and `KINDS` read in this order.
kinds! {
    /// A registered data source.
    data: DataKind, DataPlugin, "data", Data, ();
    /// A registered score model.
    models: ModelKind, ModelPlugin, "model", Arc<dyn ScoreModel>, ModelContext;
    /// A registered parameterization.
    params: ParamKind, ParamPlugin, "param", Arc<dyn Parameterization>, ();
    /// A registered forward SDE.
    sdes: SdeKind, SdePlugin, "sde", Arc<dyn ForwardSde>, ();
    /// A registered solver.
    solvers: SolverKind, SolverPlugin, "solver", Arc<dyn Solver>, ();
    /// A registered weighting.
    weightings: WeightingKind, WeightingPlugin, "weighting", Arc<dyn Weighting>, ();
}

/// The registrations of one kind, sorted by name.
#[derive(Debug)]
pub struct Catalog<K: Kind> {
    plugins: Arc<[&'static K::Plugin]>,
    names: &'static [&'static str],
}

impl<K: Kind> Clone for Catalog<K> {
    fn clone(&self) -> Self {
        Self {
            plugins: self.plugins.clone(),
            names: self.names,
        }
    }
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
            plugins: plugins.into(),
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
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    // `$call` builds the object (`Result<$obj>`) from the parameters `$p` in the context `$c`.
    ($plugin:ident, $name:literal, $summary:literal, $params:ty, $obj:ty, $ctx_ty:ty, [$($variant:literal),*], $fixture:expr, $alias:expr, |$p:ident, $c:ident| $call:expr) => {
        const _: () = {
            fn __sdeflow_build<'de>(
                de: $crate::registry::ErasedDe<'_, 'de>,
                $c: &$ctx_ty,
            ) -> ::std::result::Result<$obj, $crate::erased_serde::Error> {
                let $p: $params = $crate::erased_serde::deserialize(de)?;
                let built: $crate::Result<$obj> = $call;
                built.map_err(<$crate::erased_serde::Error as $crate::serde::de::Error>::custom)
            }
            $crate::inventory::submit! {
                $crate::registry::$plugin {
                    info: $crate::registry::PluginInfo {
                        name: $name,
                        crate_name: env!("CARGO_PKG_NAME"),
                        summary: $summary,
                        default_params: $crate::de::default_params_ron::<$params>,
                        source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")),
                        variants: &[$($variant),*],
                        fixture: $fixture,
                        alias_of: $alias,
                    },
                    build: __sdeflow_build,
                }
            }
        };
    };
    // A kind built from its parameters alone, as an `Arc<dyn Trait>`.
    ($plugin:ident, $name:literal, $summary:literal, $params:ty, $obj:ty, $build:expr, [$($variant:literal),*] $(, $alias:expr)?) => {
        $crate::__register!($plugin, $name, $summary, $params, $obj, (), [$($variant),*], None, $crate::__optional!($($alias)?), |params, _ctx| {
            let build: fn($params) -> $crate::Result<_> = $build;
            build(params).map(|built| ::std::sync::Arc::new(built) as $obj)
        });
    };
}

/// Registers a data source (builder: `fn(Params) -> Result<T>`, `T: DataSource`). A plugin
/// whose defaults need files names a [`Fixture`]: `fixture: write_fixture` writes a small valid
/// instance and returns the parameters that read it, so conformance can run the plugin.
#[macro_export]
macro_rules! register_data {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(, fixture: $fixture:expr)? $(,)?) => {
        $crate::__register!(
            DataPlugin,
            $name,
            $summary,
            $params,
            $crate::data::Data,
            (),
            [],
            $crate::__optional!($($fixture)?),
            None,
            |params, _ctx| {
                let build: fn($params) -> $crate::Result<_> = $build;
                build(params).and_then(|built| $crate::data::Data::new(::std::sync::Arc::new(built)))
            }
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __optional {
    () => {
        None
    };
    ($fixture:expr) => {
        Some($fixture)
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
            $build,
            []
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
            $build,
            []
        );
    };
}

/// Registers a score model (builder: `fn(Params, &ModelContext) -> Result<T>`, `T: ScoreModel`).
#[macro_export]
macro_rules! register_model {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(,)?) => {
        $crate::__register!(
            ModelPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::ScoreModel>,
            $crate::ModelContext,
            [],
            None,
            None,
            |params, ctx| {
                let build: fn($params, &$crate::ModelContext) -> $crate::Result<_> = $build;
                build(params, ctx).map(|built| {
                    ::std::sync::Arc::new(built) as ::std::sync::Arc<dyn $crate::ScoreModel>
                })
            }
        );
    };
}

/// Registers a solver (builder: `fn(Params) -> Result<T>`, `T: Solver`). An optional
/// `variants: ["(eta: 1.0)"]` lists parameter sets that conformance checks besides `()`; an
/// optional `alias_of: "ddim(eta: 1.0)"` registers a second name for another solver with fixed
/// parameters ([`PluginInfo::alias_of`]).
#[macro_export]
macro_rules! register_solver {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(, variants: [$($variant:literal),* $(,)?])? $(, alias_of: $alias:literal)? $(,)?) => {
        $crate::__register!(
            SolverPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::Solver>,
            $build,
            [$($($variant),*)?]
            $(, $alias)?
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
            $build,
            []
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        _: ErasedDe<'_, '_>,
        _: &(),
    ) -> std::result::Result<Arc<dyn Solver>, erased_serde::Error> {
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
                source: "",
                variants: &[],
                fixture: None,
                alias_of: None,
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
}
