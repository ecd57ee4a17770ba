//! Sizes and durations from the config: parsed or refused, never a panic, and a parsed
//! value prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torii::config::units::{parse_duration, parse_size};

fuzz_target!(|text: &str| {
    if let Ok(bytes) = parse_size(text) {
        assert_eq!(parse_size(&bytes.to_string()), Ok(bytes), "{text:?}");
    }
    if let Ok(d) = parse_duration(text) {
        let ms = d.as_millis();
        if d.subsec_nanos() % 1_000_000 == 0 && ms < u128::from(u64::MAX) {
            assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d), "{text:?}");
        }
    }
});
