//! The RON layer: how plugins, configs and plugin references are read from text, and how
//! ron's errors are reworded to name the file, line and column, the field, and what is valid.
//!
//! Plugin names are known only at run time, so a plugin reference `name(params...)` is read
//! with a [`DeserializeSeed`] whose identifier visitor looks the name up in a registry's
//! [`Catalog`] and whose variant content is handed, type-erased, to the plugin's own `Params`
//! (ron's `UNWRAP_VARIANT_NEWTYPES` reads `ddim(eta: 0.0)` as the struct inside). Capturing the
//! content as `ron::Value` would lose the spans.
//!
//! serde's `Deserialize` has no argument for a registry, so the registry a read uses is *in
//! scope* for its duration: [`Registry::build`] and [`Config::parse`](crate::Config::parse)
//! put theirs (and, for models, the [`ModelContext`]) in a thread-local scope, and every
//! plugin entry read inside — a config's [`Entry`], a composite's [`SolverRef`] — reads that
//! registry, never another. This is what lets a config be a plain derived struct.

use std::{cell::RefCell, fmt, sync::Arc};

use serde::{
    Deserialize, Serialize,
    de::{self, DeserializeSeed, EnumAccess, VariantAccess, Visitor},
};

use crate::{
    Error, ForwardSde, ModelContext, Parameterization, Registry, Result, ScoreModel, Solver,
    Weighting,
    data::Data,
    registry::{
        Catalog, DataKind, ErasedDe, Kind, ModelKind, ParamKind, Registration, SdeKind, SolverKind,
        WeightingKind,
    },
};

/// The RON options sdeflow reads with: newtype variants unwrap, so `ddim(eta: 0.0)` reads the
/// struct inside the variant directly.
pub fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// The registry (and model context) plugin entries read during one read.
#[derive(Debug, Clone)]
struct Scope {
    registry: Registry,
    model: Option<ModelContext>,
}

thread_local! {
    static SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
}

/// Pops the scope it pushed, also when the read panics.
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPES.with(|s| s.borrow_mut().pop());
    }
}

/// Runs `read` with `registry` (and the model context `model`) in scope.
fn in_scope<T>(registry: &Registry, model: Option<ModelContext>, read: impl FnOnce() -> T) -> T {
    SCOPES.with(|s| {
        s.borrow_mut().push(Scope {
            registry: registry.clone(),
            model,
        })
    });
    let _guard = ScopeGuard;
    read()
}

/// The innermost scope, if a read is under way on this thread.
fn current_scope() -> Option<Scope> {
    SCOPES.with(|s| s.borrow().last().cloned())
}

fn scope_or_error<E: de::Error>(what: &str) -> std::result::Result<Scope, E> {
    current_scope().ok_or_else(|| {
        E::custom(format!(
            "{what} is read through a registry: use Config::parse or Registry::build"
        ))
    })
}

/// A kind's build context as the scope carries it: nothing, or the model context.
pub trait ScopeContext: Sized {
    /// The model context to put in scope for a build in `self`.
    fn model(&self) -> Option<ModelContext>;
    /// The context from the scope's model context, or `None` when the read did not provide
    /// one.
    fn from_scope(model: Option<&ModelContext>) -> Option<Self>;
}

impl ScopeContext for () {
    fn model(&self) -> Option<ModelContext> {
        None
    }
    fn from_scope(_: Option<&ModelContext>) -> Option<()> {
        Some(())
    }
}

impl ScopeContext for ModelContext {
    fn model(&self) -> Option<ModelContext> {
        Some(self.clone())
    }
    fn from_scope(model: Option<&ModelContext>) -> Option<ModelContext> {
        model.cloned()
    }
}

impl Registry {
    /// Builds the plugin `name` of kind `K` from RON parameter text (`"()"` for the defaults)
    /// in `ctx`. Errors keep their position in `params`, reported as `<name parameters>`.
    pub fn build<K: Kind>(&self, name: &str, params: &str, ctx: &K::Ctx) -> Result<K::Object>
    where
        K::Ctx: ScopeContext,
    {
        let plugin = K::catalog(self).get(name)?;
        in_scope(self, ctx.model(), || {
            from_ron(plugin.info().name, params, |de| K::build(plugin, de, ctx))
        })
    }

    /// [`build`](Self::build) as an [`Entry`]: the plugin with its registered name.
    pub fn entry<K: Kind>(&self, name: &str, params: &str, ctx: &K::Ctx) -> Result<Entry<K>>
    where
        K::Ctx: ScopeContext,
    {
        let name = K::catalog(self).get(name)?.info().name;
        Ok(Entry {
            name,
            plugin: self.build::<K>(name, params, ctx)?,
        })
    }

    /// The registry a plugin being built reads its parts through: the one in scope while a
    /// config or [`build`](Self::build) reads it, else [`Registry::global`].
    pub fn current() -> Result<Registry> {
        match current_scope() {
            Some(scope) => Ok(scope.registry),
            None => Ok(Registry::global()?.clone()),
        }
    }

    /// Builds the data source `name` from RON parameters (`"()"` for the defaults).
    pub fn data(&self, name: &str, params: &str) -> Result<Data> {
        self.build::<DataKind>(name, params, &())
    }
    /// Builds the SDE `name` from RON parameters (`"()"` for the defaults).
    pub fn sde(&self, name: &str, params: &str) -> Result<Arc<dyn ForwardSde>> {
        self.build::<SdeKind>(name, params, &())
    }
    /// Builds the parameterization `name`.
    pub fn param(&self, name: &str, params: &str) -> Result<Arc<dyn Parameterization>> {
        self.build::<ParamKind>(name, params, &())
    }
    /// Builds the score model `name` in `ctx`.
    pub fn model(
        &self,
        name: &str,
        params: &str,
        ctx: &ModelContext,
    ) -> Result<Arc<dyn ScoreModel>> {
        self.build::<ModelKind>(name, params, ctx)
    }
    /// Builds the solver `name`.
    pub fn solver(&self, name: &str, params: &str) -> Result<Arc<dyn Solver>> {
        self.build::<SolverKind>(name, params, &())
    }
    /// Builds the weighting `name`.
    pub fn weighting(&self, name: &str, params: &str) -> Result<Arc<dyn Weighting>> {
        self.build::<WeightingKind>(name, params, &())
    }

    /// Runs `read` with this registry (and the model context `model`) in scope, so that
    /// every plugin entry read inside it is read through this registry.
    pub fn reading<T>(&self, model: Option<ModelContext>, read: impl FnOnce() -> T) -> T {
        in_scope(self, model, read)
    }
}

/// A plugin as a config names it: the registered name and the built plugin of kind `K`
/// (`config.solver.name`, `config.solver.plugin`).
///
/// It deserializes from `name(params...)` through the registry in scope ([module
/// docs](self)), with ron's line and column kept.
pub struct Entry<K: Kind> {
    /// The registered name.
    pub name: &'static str,
    /// The built plugin.
    pub plugin: K::Object,
}

impl<K: Kind> Clone for Entry<K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            plugin: self.plugin.clone(),
        }
    }
}

impl<K: Kind> fmt::Debug for Entry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.name, self.plugin)
    }
}

impl<'de, K: Kind> Deserialize<'de> for Entry<K>
where
    K::Ctx: ScopeContext,
{
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let scope = scope_or_error::<D::Error>(&format!("a {} plugin", K::NAME))?;
        let ctx = K::Ctx::from_scope(scope.model.as_ref()).ok_or_else(|| {
            de::Error::custom(format!(
                "a {} plugin needs a model context in scope",
                K::NAME
            ))
        })?;
        PluginSeed::<K> {
            catalog: K::catalog(&scope.registry),
            ctx: &ctx,
        }
        .deserialize(d)
    }
}

/// Reads a plugin reference `name(params...)` of kind `K`.
struct PluginSeed<'a, K: Kind> {
    catalog: &'a Catalog<K>,
    ctx: &'a K::Ctx,
}

impl<'de, K: Kind> DeserializeSeed<'de> for PluginSeed<'_, K> {
    type Value = Entry<K>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_enum(K::NAME, self.catalog.names(), self)
    }
}

impl<'de, K: Kind> Visitor<'de> for PluginSeed<'_, K> {
    type Value = Entry<K>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} plugin written `name(...)`, one of {}",
            K::NAME,
            self.catalog.names().join(", ")
        )
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> std::result::Result<Self::Value, A::Error> {
        let (plugin, variant) = data.variant_seed(NameSeed::<K> {
            catalog: self.catalog,
        })?;
        let built = variant.newtype_variant_seed(BuildSeed(|de: ErasedDe<'_, 'de>| {
            K::build(plugin, de, self.ctx)
        }))?;
        Ok(Entry {
            name: plugin.info().name,
            plugin: built,
        })
    }
}

/// Reads a registered name of kind `K`, or fails listing the names and the nearest.
struct NameSeed<'a, K: Kind> {
    catalog: &'a Catalog<K>,
}

impl<'de, K: Kind> DeserializeSeed<'de> for NameSeed<'_, K> {
    type Value = &'static K::Plugin;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: Kind> Visitor<'de> for NameSeed<'_, K> {
    type Value = &'static K::Plugin;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a registered {} name", K::NAME)
    }
    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<Self::Value, E> {
        self.catalog.get(name).map_err(E::custom)
    }
}

/// A reference to a registered solver inside another plugin's parameters, written like a
/// config's `solver:` field: `pc(predictor: reverse_diffusion(), ...)`. This is how a
/// composite plugin names its parts without depending on their crates (DESIGN.md).
///
/// Reading it builds the solver through the registry in scope ([module docs](self)), so an
/// unknown name fails with the registered names and ron's line and column.
/// [`SolverRef::named`] is a reference with the named solver's default parameters, built on
/// [`SolverRef::resolve`]: through the registry in scope when the composite is being read,
/// through [`Registry::global`] when it is built in code.
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

    /// The solver: as read from RON, or built now with its default parameters.
    pub fn resolve(&self) -> Result<Arc<dyn Solver>> {
        match &self.built {
            Some(s) => Ok(s.clone()),
            None => Registry::current()?.solver(self.name, "()"),
        }
    }
}

impl fmt::Debug for SolverRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

impl<'de> Deserialize<'de> for SolverRef {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let entry = Entry::<SolverKind>::deserialize(d)?;
        Ok(Self::built(entry.name, entry.plugin))
    }
}

/// A RON error as an [`Error::Config`] at its start position, with sdeflow's wording for
/// unknown, missing and duplicate names: the nearest valid name and the list of valid ones.
///
/// An invalid value is reported at the field it names when `text` has that field before the
/// error: a plugin's is found after its parameters are read, where ron places it at the
/// closing parenthesis, and a config's own at the value.
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
        // The end of the text has no field to name.
        ron::Error::Eof => ron::Error::Eof.to_string(),
        // A value of the wrong type ("Expected integer", "Integer is out of bounds"): name the
        // field it was read for, when its name is on the error's line.
        other => match field_on_line(text, e.span.start.line, e.span.start.col) {
            Some(field) => format!("{other} in the value of `{field}`"),
            None => other.to_string(),
        },
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

/// The last `name:` on line `line` before column `col` (1-based), if any.
fn field_on_line(text: &str, line: usize, col: usize) -> Option<&str> {
    let l = text.split('\n').nth(line.checked_sub(1)?)?;
    let end = l
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(l.len(), |(b, _)| b);
    let head = l[..end].rsplit_once(':')?.0.trim_end();
    let start = head
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &head[start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

/// The field of an "<plugin>: invalid `<field>`: ..." or "invalid `<field>`: ..." message.
fn invalid_field(msg: &str) -> Option<&str> {
    let rest = match msg.strip_prefix("invalid `") {
        Some(rest) => rest,
        None => msg.split_once(": invalid `")?.1,
    };
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
    field_positions(head, field).last().map(|(at, _)| *at)
}

/// The byte offset and 1-based (line, column) of every `field:` in `text` (the name at a
/// word boundary, followed by a colon).
fn field_positions(text: &str, field: &str) -> Vec<((usize, usize), usize)> {
    text.match_indices(field)
        .filter(|(i, _)| {
            let before_ok = text[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let after = text[i + field.len()..].trim_start();
            before_ok && after.starts_with(':')
        })
        .map(|(at, _)| {
            let line = text[..at].matches('\n').count() + 1;
            let col = text[..at]
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count())
                + 1;
            ((line, col), at)
        })
        .collect()
}

/// The 1-based line and column of the first `field:` in `text`, if present.
pub fn locate_field(text: &str, field: &str) -> Option<(usize, usize)> {
    field_positions(text, field).first().map(|(at, _)| *at)
}

/// The line and column of the first `field` after the section `outer` begins (`steps` in
/// `nll: (...)`, not the top-level one).
pub fn locate_field_in(text: &str, outer: &str, field: &str) -> Option<(usize, usize)> {
    let start = locate_field(text, outer)?;
    field_positions(text, field)
        .into_iter()
        .map(|(at, _)| at)
        .find(|at| *at > start)
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

/// Reads `text` with `build`, reporting errors as `<plugin parameters>:line:col`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn not_buildable(
        _: ErasedDe<'_, '_>,
        _: &(),
    ) -> std::result::Result<Arc<dyn Solver>, erased_serde::Error> {
        Err(<erased_serde::Error as serde::de::Error>::custom(
            "not buildable",
        ))
    }

    #[test]
    fn build_errors_become_config_errors() {
        match from_ron("heun", "()", |de| not_buildable(de, &())) {
            Err(Error::Config { file, msg, .. }) => {
                assert_eq!(file, "<heun parameters>");
                assert!(msg.contains("not buildable"), "{msg}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn an_entry_read_outside_a_registry_scope_is_an_error() {
        let got = ron_options().from_str::<Entry<SolverKind>>("euler()");
        let msg = got
            .map(|_| ())
            .expect_err("no registry in scope")
            .to_string();
        assert!(msg.contains("read through a registry"), "{msg}");
    }

    #[test]
    fn fields_are_found_at_word_boundaries() {
        let text = "(\n  my_steps: 1,\n  steps: 2,\n)";
        assert_eq!(locate_field(text, "steps"), Some((3, 3)));
        assert_eq!(field_before(text, 3, 12, "steps"), Some((3, 3)));
        assert_eq!(field_before(text, 2, 14, "steps"), None);
    }
}
