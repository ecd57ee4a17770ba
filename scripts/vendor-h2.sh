#!/usr/bin/env bash
# vendor/h2 is the crates.io h2 source plus the patches in vendor/h2-patches, in
# order, and nothing else (see vendor/h2-patches/README.md). This script rebuilds it.
#
#   scripts/vendor-h2.sh                # regenerate vendor/h2 from the source + patches
#   scripts/vendor-h2.sh --check        # rebuild into a temp dir; exit 1 if vendor/h2 differs
#   scripts/vendor-h2.sh --advisories   # cargo deny (deny.toml) on the crates.io release
#
# --advisories exists because cargo deny skips path dependencies: the workspace check never
# matches vendor/h2 against h2's advisories, so this checks h2 =$H2_VERSION from
# crates.io (what vendor/h2 is made from) against the same database, offline. Run it after
# the workspace's `cargo deny` check, which lays that database out.
#
# The pristine source is the published .crate: fetched by cargo (a throwaway manifest that
# depends on h2 =$H2_VERSION, so it needs crates.io or a warm cargo cache), checked
# against the registry's checksum, and unpacked here; cargo's own unpacked copy under
# ~/.cargo/registry/src is not used, since anyone may have edited it. Each patch must apply
# exactly (`git apply`, no fuzz), and every hunk of NNNN-*.patch must add a line carrying
# the marker `torii patch NN:`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
H2_VERSION=0.4.20
PATCHES=vendor/h2-patches
DEST=vendor/h2

mode=${1:-regenerate}
case "$mode" in
    --check | --advisories | regenerate) ;;
    *) echo "usage: $0 [--check | --advisories]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# git apply must not mistake an enclosing repository for the tree it patches.
export GIT_CEILING_DIRECTORIES=$tmp

# 1. The published crate, checked against the checksum the registry index gives.
mkdir -p "$tmp/fetch/src"
cat > "$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "vendor-h2-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
h2 = "=$H2_VERSION"
EOF
: > "$tmp/fetch/src/lib.rs"
cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml"
if [ "$mode" = --advisories ]; then
    cargo deny --offline --manifest-path "$tmp/fetch/Cargo.toml" --config deny.toml \
        check advisories
    echo "vendor-h2: no advisory for h2 $H2_VERSION (the source of $DEST)"
    exit 0
fi
sum=$(awk -v v="$H2_VERSION" '
    $0 == "name = \"h2\"" { h = 1; next }
    h && $0 == "version = \"" v "\"" { found = 1; next }
    found && /^checksum = / { gsub(/"/, "", $3); print $3; exit }
    /^\[\[package\]\]/ { h = 0; found = 0 }' "$tmp/fetch/Cargo.lock")
[ -n "$sum" ] || { echo "no checksum for h2 $H2_VERSION in the lock file" >&2; exit 1; }
crate=
for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"h2-$H2_VERSION.crate"; do
    [ -f "$c" ] && [ "$(sha256sum "$c" | cut -d' ' -f1)" = "$sum" ] && crate=$c && break
done
[ -n "$crate" ] || { echo "h2-$H2_VERSION.crate with sha256 $sum not in cargo's cache" >&2; exit 1; }

# 2. Unpacked (with fresh mtimes, so that cargo rebuilds the path dependency), without what
#    cargo packaging adds.
mkdir -p "$tmp/h2"
tar -xzf "$crate" -C "$tmp/h2" --strip-components=1 --no-same-owner --touch
rm -f "$tmp/h2/.cargo_vcs_info.json" "$tmp/h2/Cargo.toml.orig" "$tmp/h2/Cargo.lock"

# 3. The patches, in order; each hunk marked.
shopt -s nullglob
patches=("$PATCHES"/[0-9][0-9][0-9][0-9]-*.patch)
[ ${#patches[@]} -gt 0 ] || { echo "no patches in $PATCHES" >&2; exit 1; }
for p in "${patches[@]}"; do
    nn=$(basename "$p" | cut -c3-4)
    unmarked=$(awk -v m="torii patch $nn:" '
        /^@@/ { if (h && !ok) print h; h = $0; ok = 0; next }
        /^diff / { if (h && !ok) print h; h = ""; next }
        h && /^\+/ && index($0, m) { ok = 1 }
        END { if (h && !ok) print h }' "$p")
    if [ -n "$unmarked" ]; then
        echo "$p: hunks without a \"torii patch $nn:\" line:" >&2
        echo "$unmarked" >&2
        exit 1
    fi
    (cd "$tmp/h2" && git apply --whitespace=error-all "$root/$p") ||
        { echo "$p does not apply" >&2; exit 1; }
done

# 4. The one file of torii's own in the tree: a pointer to the patches.
cat > "$tmp/h2/TORII-PATCHES.md" <<'EOF'
# h2, vendored with torii's patches

This folder is generated: the crates.io h2 source plus the patches in
`../h2-patches/` (what each is, why, and how it was measured: `../h2-patches/README.md`).
Do not edit it by hand: change a patch, then run `scripts/vendor-h2.sh`;
`scripts/vendor-h2.sh --check` (in `.ci/run`) fails when this tree differs.
Every patched spot carries a `torii patch NN:` comment, NN being the patch's number.
EOF

if [ "$mode" = --check ]; then
    if diff -ru "$tmp/h2" "$DEST"; then
        echo "vendor-h2: $DEST is h2 $H2_VERSION + ${#patches[@]} patches"
    else
        echo "vendor-h2: $DEST differs from h2 $H2_VERSION + $PATCHES (above);" \
            "run scripts/vendor-h2.sh" >&2
        exit 1
    fi
else
    rm -rf "$DEST"
    mv "$tmp/h2" "$DEST"
    echo "vendor-h2: $DEST regenerated from h2 $H2_VERSION + ${#patches[@]} patches"
fi
