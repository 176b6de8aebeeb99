//! Every built-in plugin is registered under its name, by its crate, and nothing else is.

use sdeflow_kernel::Result;

#[test]
fn every_built_in_plugin_is_registered() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let mut registered: Vec<(String, String, String)> = registry
        .infos()
        .into_iter()
        .map(|(kind, info)| {
            (
                kind.to_string(),
                info.name.to_string(),
                info.crate_name.to_string(),
            )
        })
        .collect();
    registered.sort();
    let mut expected: Vec<(String, String, String)> = sdeflow_plugins::BUILT_IN
        .iter()
        .map(|(k, n, c)| (k.to_string(), n.to_string(), c.to_string()))
        .collect();
    expected.sort();
    assert_eq!(registered, expected);
    Ok(())
}

#[test]
fn registered_names_match_crate_suffixes() -> Result<()> {
    // An alias (`euler_ancestral` for `ddim(eta: 1.0)`) lives with the plugin it names.
    let infos = sdeflow_plugins::registry()?.infos();
    for (kind, info) in infos.into_iter().filter(|(_, i)| i.alias_of.is_none()) {
        let prefix = match kind {
            "model" => "sdeflow-score-",
            other => &format!("sdeflow-{other}-"),
        };
        let suffix = info.crate_name.strip_prefix(prefix).unwrap_or("");
        assert_eq!(
            suffix.replace('-', "_"),
            info.name,
            "{kind} plugin from {}",
            info.crate_name
        );
    }
    Ok(())
}
