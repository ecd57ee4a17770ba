#!/usr/bin/env bash
# vendor/hyper = the crates.io hyper 1.12.0 + vendor/hyper-patches (scripts/vendor-crate.sh):
#   scripts/vendor-hyper.sh [--check | --advisories]
exec "$(dirname "$0")/vendor-crate.sh" hyper 1.12.0 "$@"
