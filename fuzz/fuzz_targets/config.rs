//! The config loader: any text is either a valid config or a list of problems whose spans
//! lie inside the text, rendered as `FILE:LINE:COL: …`; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = torii::config::load_str("fuzz.toml", text) {
        for problem in e.problems() {
            if let Some(span) = &problem.span {
                assert!(span.start <= span.end && span.end <= text.len(), "{problem:?}");
            }
        }
        let shown = e.to_string();
        assert!(shown.starts_with("fuzz.toml:"), "{shown}");
    }
});
