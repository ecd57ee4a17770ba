#!/usr/bin/env bash
# vendor/hyper is the crates.io hyper source plus the patches in vendor/hyper-patches, in
# order, and nothing else (see vendor/hyper-patches/README.md). This script rebuilds it.
#
#   scripts/vendor-hyper.sh                # regenerate vendor/hyper from the source + patches
#   scripts/vendor-hyper.sh --check        # rebuild into a temp dir; exit 1 if vendor/hyper differs
#   scripts/vendor-hyper.sh --advisories   # cargo deny (deny.toml) on the crates.io release
#
# --advisories exists because cargo deny skips path dependencies: the workspace check never
# matches vendor/hyper against hyper's advisories, so this checks hyper =$HYPER_VERSION from
# crates.io (what vendor/hyper is made from) against the same database, offline. Run it after
# the workspace's `cargo deny` check, which lays that database out.
#
# The pristine source is the published .crate: fetched by cargo (a throwaway manifest that
# depends on hyper =$HYPER_VERSION, so it needs crates.io or a warm cargo cache), checked
# against the registry's checksum, and unpacked here; cargo's own unpacked copy under
# ~/.cargo/registry/src is not used, since anyone may have edited it. Each patch must apply
# exactly (`git apply`, no fuzz), and every hunk of NNNN-*.patch must add a line carrying
# the marker `torii patch NN:`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
HYPER_VERSION=1.12.0
PATCHES=vendor/hyper-patches
DEST=vendor/hyper

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
name = "vendor-hyper-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
hyper = "=$HYPER_VERSION"
EOF
: > "$tmp/fetch/src/lib.rs"
cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml"
if [ "$mode" = --advisories ]; then
    cargo deny --offline --manifest-path "$tmp/fetch/Cargo.toml" --config deny.toml \
        check advisories
    echo "vendor-hyper: no advisory for hyper $HYPER_VERSION (the source of $DEST)"
    exit 0
fi
sum=$(awk -v v="$HYPER_VERSION" '
    $0 == "name = \"hyper\"" { h = 1; next }
    h && $0 == "version = \"" v "\"" { found = 1; next }
    found && /^checksum = / { gsub(/"/, "", $3); print $3; exit }
    /^\[\[package\]\]/ { h = 0; found = 0 }' "$tmp/fetch/Cargo.lock")
[ -n "$sum" ] || { echo "no checksum for hyper $HYPER_VERSION in the lock file" >&2; exit 1; }
crate=
for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"hyper-$HYPER_VERSION.crate"; do
    [ -f "$c" ] && [ "$(sha256sum "$c" | cut -d' ' -f1)" = "$sum" ] && crate=$c && break
done
[ -n "$crate" ] || { echo "hyper-$HYPER_VERSION.crate with sha256 $sum not in cargo's cache" >&2; exit 1; }

# 2. Unpacked (with fresh mtimes, so that cargo rebuilds the path dependency), without what
#    cargo packaging adds.
mkdir -p "$tmp/hyper"
tar -xzf "$crate" -C "$tmp/hyper" --strip-components=1 --no-same-owner --touch
rm -f "$tmp/hyper/.cargo_vcs_info.json" "$tmp/hyper/Cargo.toml.orig" "$tmp/hyper/Cargo.lock"

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
    (cd "$tmp/hyper" && git apply --whitespace=error-all "$root/$p") ||
        { echo "$p does not apply" >&2; exit 1; }
done

# 4. The one file of torii's own in the tree: a pointer to the patches.
cat > "$tmp/hyper/TORII-PATCHES.md" <<'EOF'
# hyper, vendored with torii's patches

This folder is generated: the crates.io hyper source plus the patches in
`../hyper-patches/` (what each is, why, and how it was measured: `../hyper-patches/README.md`).
Do not edit it by hand: change a patch, then run `scripts/vendor-hyper.sh`;
`scripts/vendor-hyper.sh --check` (in `.ci/run`) fails when this tree differs.
Every patched spot carries a `torii patch NN:` comment, NN being the patch's number.
EOF

if [ "$mode" = --check ]; then
    if diff -ru "$tmp/hyper" "$DEST"; then
        echo "vendor-hyper: $DEST is hyper $HYPER_VERSION + ${#patches[@]} patches"
    else
        echo "vendor-hyper: $DEST differs from hyper $HYPER_VERSION + $PATCHES (above);" \
            "run scripts/vendor-hyper.sh" >&2
        exit 1
    fi
else
    rm -rf "$DEST"
    mv "$tmp/hyper" "$DEST"
    echo "vendor-hyper: $DEST regenerated from hyper $HYPER_VERSION + ${#patches[@]} patches"
fi
