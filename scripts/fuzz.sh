#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60; .ci/run uses 10).
# Installs cargo-fuzz if it is missing. The targets build on stable Rust without a
# sanitizer (-s none: torii forbids unsafe code, so what a fuzzer finds here is a panic,
# an assertion or a hang, which libFuzzer reports without ASan). A crash leaves its input
# in fuzz/artifacts/TARGET/; replay it with `cargo fuzz run -s none -O TARGET FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Seed the config target with the shipped configs so it starts from valid files.
mkdir -p fuzz/corpus/config
cp examples/*.toml fuzz/corpus/config/
# Lints are capped: vendor/h2 is a path dependency, so its `#![deny(missing_docs)]` is not
# capped as a registry crate's would be, and its `cfg(fuzzing)` bridge has no docs.
# clippy and rustdoc check torii's own code elsewhere in .ci/run.
export RUSTFLAGS="${RUSTFLAGS:-} --cap-lints=warn"
# Built first, on its own: the runs below filter their output, which would hide a build
# that fails (as one did when the patched h2 was missing from fuzz/Cargo.toml).
cargo fuzz build -s none -O
for target in $(cargo fuzz list); do
    echo "== fuzz $target (${secs}s)"
    cargo fuzz run -s none -O "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 2>&1 | grep -E "^(Done|==|SUMMARY)|panicked|ERROR|artifact" || true
    # cargo fuzz exits non-zero on a finding; grep above hides it, so check artifacts.
    if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
        echo "fuzz: $target found a failing input:" fuzz/artifacts/"$target"/* >&2
        exit 1
    fi
done
echo "== fuzz ok"
