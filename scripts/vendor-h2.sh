#!/usr/bin/env bash
# vendor/h2 = the crates.io h2 0.4.20 + vendor/h2-patches (scripts/vendor-crate.sh):
#   scripts/vendor-h2.sh [--check | --advisories]
exec "$(dirname "$0")/vendor-crate.sh" h2 0.4.20 "$@"
