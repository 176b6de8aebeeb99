//! Arbitrary bytes as a config: parse, build the pipeline, plan (`sdeflow check`). Any
//! outcome but a panic, an abort or a runaway allocation is a pass.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(registry) = sdeflow_plugins::registry() else {
        return;
    };
    let _ = sdeflow_cli::check_text(registry, "fuzz.ron", text);
});
