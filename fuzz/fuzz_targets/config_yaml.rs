//! Arbitrary text as `outpost.yaml`: parsing never panics, whatever it holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_types::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_yaml(text) {
            let _ = config.agent.get("a.b");
        }
    }
});
