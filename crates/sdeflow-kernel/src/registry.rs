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
    /// The source of the registering crate's `src/lib.rs`, whose `//!` lines are the plugin's
    /// documentation (formula, parameters, claims, references).
    pub source: &'static str,
    /// Parameter sets (RON) that conformance checks besides the defaults, for plugins whose
    /// parameters change their claims (`ddim`'s η > 0 is a stochastic sampler).
    pub variants: &'static [&'static str],
}

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

/// A registration that builds its plugin from RON parameters, given a context (`()` for every
/// kind but models, which get a [`ModelContext`]).
pub trait Buildable: Registration {
    /// What it builds.
    type Object;
    /// What building needs besides the parameters.
    type Ctx;
    /// Deserializes the parameters from `de` and builds the plugin.
    fn build_from(
        &self,
        de: ErasedDe<'_, '_>,
        ctx: &Self::Ctx,
    ) -> std::result::Result<Self::Object, erased_serde::Error>;
}

macro_rules! buildable_without_context {
    ($($plugin:ident => $obj:ty),*) => {$(
        impl Buildable for $plugin {
            type Object = $obj;
            type Ctx = ();
            fn build_from(&self, de: ErasedDe<'_, '_>, _: &()) -> std::result::Result<$obj, erased_serde::Error> {
                (self.build)(de)
            }
        }
    )*};
}

buildable_without_context!(
    SdePlugin => Arc<dyn ForwardSde>,
    ParamPlugin => Arc<dyn Parameterization>,
    SolverPlugin => Arc<dyn Solver>,
    WeightingPlugin => Arc<dyn Weighting>
);

impl Buildable for ModelPlugin {
    type Object = Arc<dyn ScoreModel>;
    type Ctx = ModelContext;
    fn build_from(
        &self,
        de: ErasedDe<'_, '_>,
        ctx: &ModelContext,
    ) -> std::result::Result<Arc<dyn ScoreModel>, erased_serde::Error> {
        (self.build)(de, ctx)
    }
}

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

impl<K: Kind> Catalog<K>
where
    K::Plugin: Buildable,
{
    /// Builds the plugin `name` from RON parameter text (`"()"` for the defaults).
    pub fn build(
        &self,
        name: &str,
        params: &str,
        ctx: &<K::Plugin as Buildable>::Ctx,
    ) -> Result<<K::Plugin as Buildable>::Object> {
        let p = self.get(name)?;
        from_ron(p.info().name, params, |de| p.build_from(de, ctx))
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
        self.sdes.build(name, params, &())
    }
    /// Builds the parameterization `name`.
    pub fn param(&self, name: &str, params: &str) -> Result<Arc<dyn Parameterization>> {
        self.params.build(name, params, &())
    }
    /// Builds the score model `name` in `ctx`.
    pub fn model(
        &self,
        name: &str,
        params: &str,
        ctx: &ModelContext,
    ) -> Result<Arc<dyn ScoreModel>> {
        self.models.build(name, params, ctx)
    }
    /// Builds the solver `name`.
    pub fn solver(&self, name: &str, params: &str) -> Result<Arc<dyn Solver>> {
        self.solvers.build(name, params, &())
    }
    /// Builds the weighting `name`.
    pub fn weighting(&self, name: &str, params: &str) -> Result<Arc<dyn Weighting>> {
        self.weightings.build(name, params, &())
    }
}

/// A reference to a registered solver inside another plugin's parameters, written like a
/// config's `solver:` field: `pc(predictor: reverse_diffusion(), ...)`. This is how a
/// composite plugin names its parts without depending on their crates (DESIGN.md).
///
/// Reading it builds the solver through [`Registry::global`], so an unknown name fails with
/// the registered names and ron's line and column. [`SolverRef::named`] is a reference with
/// the named solver's default parameters, built on first [`SolverRef::resolve`].
#[derive(Clone)]
pub struct SolverRef {
    name: &'static str,
    built: Option<Arc<dyn Solver>>,
}

impl SolverRef {
    /// The solver `name` with its default parameters (resolved through the registry).
    pub fn named(name: &'static str) -> Self {
        Self { name, built: None }
    }

    /// A reference to an already built solver, reported under `name`.
    pub fn built(name: &'static str, solver: Arc<dyn Solver>) -> Self {
        Self {
            name,
            built: Some(solver),
        }
    }

    /// The registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The solver: as read from RON, or built now from the registry with default parameters.
    pub fn resolve(&self) -> Result<Arc<dyn Solver>> {
        match &self.built {
            Some(s) => Ok(s.clone()),
            None => Registry::global()?.solver(self.name, "()"),
        }
    }
}

impl Debug for SolverRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.built {
            Some(s) => write!(f, "{}: {s:?}", self.name),
            None => write!(f, "{}()", self.name),
        }
    }
}

impl PartialEq for SolverRef {
    /// Equal names and the same built solver (or both unbuilt).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.built, &other.built) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Serialize for SolverRef {
    /// Writes `name()`: the reference's name (its parameters are not kept once built).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        s.serialize_struct_variant("solver", 0, self.name, 0)?.end()
    }
}

impl<'de> serde::Deserialize<'de> for SolverRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let registry = Registry::global().map_err(serde::de::Error::custom)?;
        let (name, solver) = serde::de::DeserializeSeed::deserialize(
            crate::config::PluginSeed::<SolverKind> {
                catalog: &registry.solvers,
                ctx: &(),
            },
            d,
        )?;
        let name = registry
            .solvers
            .names()
            .iter()
            .copied()
            .find(|n| *n == name)
            .ok_or_else(|| serde::de::Error::custom(format!("solver `{name}` vanished")))?;
        Ok(Self::built(name, solver))
    }
}

/// A RON error as an [`Error::Config`] at its start position, with sdeflow's wording for
/// unknown, missing and duplicate names: the nearest valid name and the list of valid ones.
///
/// A plugin's invalid value is found after its parameters are read, so ron places it at the
/// closing parenthesis; it is moved back to the field it names when `text` has that field
/// before the error.
pub fn spanned(file: &str, text: &str, e: &ron::error::SpannedError) -> Error {
    let msg = match &e.code {
        ron::Error::NoSuchStructField {
            expected,
            found,
            outer,
        } => unknown("field", found, outer.as_deref(), expected),
        ron::Error::NoSuchEnumVariant {
            expected,
            found,
            outer,
        } => unknown("variant", found, outer.as_deref(), expected),
        ron::Error::MissingStructField { field, outer } => {
            format!("missing field `{field}`{}", within(outer.as_deref()))
        }
        ron::Error::DuplicateStructField { field, outer } => {
            format!("field `{field}` given twice{}", within(outer.as_deref()))
        }
        // A plugin's own parameters come back through erased-serde as ron's text: reword it the same way.
        ron::Error::Message(text) => match reparse_unknown_field(text) {
            Some((found, expected)) => unknown("field", &found, None, &expected),
            None => text.clone(),
        },
        other => other.to_string(),
    };
    let (mut line, mut col) = (e.span.start.line, e.span.start.col);
    if let Some(field) = invalid_field(&msg)
        && let Some(at) = field_before(text, line, col, field)
    {
        (line, col) = at;
    }
    Error::Config {
        file: file.to_string(),
        line,
        col,
        msg,
    }
}

/// The field of an "<plugin>: invalid `<field>`: ..." message.
fn invalid_field(msg: &str) -> Option<&str> {
    let (_, rest) = msg.split_once(": invalid `")?;
    Some(rest.split_once('`')?.0)
}

/// The 1-based position of the last `field:` in `text` before (line, col).
fn field_before(text: &str, line: usize, col: usize, field: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            offset += l
                .char_indices()
                .nth(col.saturating_sub(1))
                .map_or(l.len(), |(b, _)| b);
            break;
        }
        offset += l.len();
    }
    let head = &text[..offset.min(text.len())];
    let found = head.match_indices(field).filter(|(i, _)| {
        let before_ok = head[..*i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after = head[i + field.len()..].trim_start();
        before_ok && after.starts_with(':')
    });
    let (at, _) = found.last()?;
    let line = head[..at].matches('\n').count() + 1;
    let col = head[..at]
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.chars().count())
        + 1;
    Some((line, col))
}

fn within(outer: Option<&str>) -> String {
    outer.map_or_else(String::new, |o| format!(" in `{o}`"))
}

fn unknown<S: AsRef<str>>(what: &str, found: &str, outer: Option<&str>, expected: &[S]) -> String {
    let names: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
    let hint = crate::error::nearest(found, names.iter().copied())
        .map_or_else(String::new, |n| format!(" (did you mean `{n}`?)"));
    let valid = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    format!(
        "unknown {what} `{found}`{}{hint}; valid {what}s: {valid}",
        within(outer)
    )
}

/// (found, expected) from ron's "Unexpected field named `x`[ in `o`], expected ... `a`, `b` ... instead".
fn reparse_unknown_field(text: &str) -> Option<(String, Vec<String>)> {
    let rest = text.strip_prefix("Unexpected field named `")?;
    let (found, rest) = rest.split_once('`')?;
    let rest = match rest.strip_prefix(" in `") {
        Some(r) => r.split_once('`')?.1,
        None => rest,
    };
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((found.to_string(), expected))
}

/// The RON options sdeflow reads with: newtype variants unwrap, so `ddim(eta: 0.0)` reads the
/// struct inside the variant directly.
pub fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Deserializes with a closure over the erased deserializer, keeping the outer position.
pub struct BuildSeed<F>(pub F);

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
        .map_err(|e| spanned(&format!("<{plugin} parameters>"), text, &e))
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
    ($plugin:ident, $name:literal, $summary:literal, $params:ty, $obj:ty, $build:expr, [$($variant:literal),*] $(, $ctx:ident: $ctx_ty:ty)?) => {
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
                        source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")),
                        variants: &[$($variant),*],
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
        $crate::__register!(ModelPlugin, $name, $summary, $params, ::std::sync::Arc<dyn $crate::ScoreModel>, $build, [], ctx: &$crate::ModelContext);
    };
}

/// Registers a solver (builder: `fn(Params) -> Result<T>`, `T: Solver`). An optional
/// `variants: ["(eta: 1.0)"]` lists parameter sets that conformance checks besides `()`.
#[macro_export]
macro_rules! register_solver {
    ($name:literal, $summary:literal, $params:ty, $build:expr $(, variants: [$($variant:literal),* $(,)?])? $(,)?) => {
        $crate::__register!(
            SolverPlugin,
            $name,
            $summary,
            $params,
            ::std::sync::Arc<dyn $crate::Solver>,
            $build,
            [$($($variant),*)?]
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
                source: "",
                variants: &[],
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
