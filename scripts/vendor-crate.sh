#!/usr/bin/env bash
# vendor/NAME is the crates.io NAME source plus the patches in vendor/NAME-patches, in order,
# and nothing else (see vendor/NAME-patches/README.md). This script rebuilds it; it is
# called as scripts/vendor-hyper.sh and scripts/vendor-h2.sh (which give NAME and VERSION):
#
#   scripts/vendor-NAME.sh                # regenerate vendor/NAME from the source + patches
#   scripts/vendor-NAME.sh --check        # rebuild into a temp dir; exit 1 if vendor/NAME differs
#   scripts/vendor-NAME.sh --advisories   # cargo deny (deny.toml) on the crates.io release
#
# --advisories exists because cargo deny skips path dependencies: the workspace check never
# matches vendor/NAME against NAME's advisories, so this checks NAME =VERSION from
# crates.io (what vendor/NAME is made from) against the same database, offline. Run it after
# the workspace's `cargo deny` check, which lays that database out.
#
# The pristine source is the published .crate: fetched by cargo (a throwaway manifest that
# depends on NAME =VERSION, so it needs crates.io or a warm cargo cache), checked
# against the registry's checksum, and unpacked here; cargo's own unpacked copy under
# ~/.cargo/registry/src is not used, since anyone may have edited it. Each patch must apply
# exactly (`git apply`, no fuzz), and every hunk of NNNN-*.patch must add a line carrying
# the marker `torii patch NN:`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
NAME=$1
VERSION=$2
shift 2
PATCHES=vendor/$NAME-patches
DEST=vendor/$NAME

mode=${1:-regenerate}
case "$mode" in
    --check | --advisories | regenerate) ;;
    *) echo "usage: scripts/vendor-$NAME.sh [--check | --advisories]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# git apply must not mistake an enclosing repository for the tree it patches.
export GIT_CEILING_DIRECTORIES=$tmp

# 1. The published crate, checked against the checksum the registry index gives.
mkdir -p "$tmp/fetch/src"
cat > "$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "vendor-$NAME-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$NAME = "=$VERSION"
EOF
: > "$tmp/fetch/src/lib.rs"
cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml"
if [ "$mode" = --advisories ]; then
    cargo deny --offline --manifest-path "$tmp/fetch/Cargo.toml" --config deny.toml \
        check advisories
    echo "vendor-$NAME: no advisory for $NAME $VERSION (the source of $DEST)"
    exit 0
fi
sum=$(awk -v v="$VERSION" -v n="$NAME" '
    $0 == "name = \"" n "\"" { h = 1; next }
    h && $0 == "version = \"" v "\"" { found = 1; next }
    found && /^checksum = / { gsub(/"/, "", $3); print $3; exit }
    /^\[\[package\]\]/ { h = 0; found = 0 }' "$tmp/fetch/Cargo.lock")
[ -n "$sum" ] || { echo "no checksum for $NAME $VERSION in the lock file" >&2; exit 1; }
crate=
for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$NAME-$VERSION.crate"; do
    [ -f "$c" ] && [ "$(sha256sum "$c" | cut -d' ' -f1)" = "$sum" ] && crate=$c && break
done
[ -n "$crate" ] || { echo "$NAME-$VERSION.crate with sha256 $sum not in cargo's cache" >&2; exit 1; }

# 2. Unpacked (with fresh mtimes, so that cargo rebuilds the path dependency), without what
#    cargo packaging adds.
mkdir -p "$tmp/$NAME"
tar -xzf "$crate" -C "$tmp/$NAME" --strip-components=1 --no-same-owner --touch
rm -f "$tmp/$NAME/.cargo_vcs_info.json" "$tmp/$NAME/Cargo.toml.orig" "$tmp/$NAME/Cargo.lock"

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
    (cd "$tmp/$NAME" && git apply --whitespace=error-all "$root/$p") ||
        { echo "$p does not apply" >&2; exit 1; }
done

# 4. The one file of torii's own in the tree: a pointer to the patches.
sed "s/@NAME@/$NAME/g" > "$tmp/$NAME/TORII-PATCHES.md" <<'EOF'
# @NAME@, vendored with torii's patches

This folder is generated: the crates.io @NAME@ source plus the patches in
`../@NAME@-patches/` (what each is, why, and how it was measured: `../@NAME@-patches/README.md`).
Do not edit it by hand: change a patch, then run `scripts/vendor-@NAME@.sh`;
`scripts/vendor-@NAME@.sh --check` (in `.ci/run`) fails when this tree differs.
Every patched spot carries a `torii patch NN:` comment, NN being the patch's number.
EOF

if [ "$mode" = --check ]; then
    if diff -ru "$tmp/$NAME" "$DEST"; then
        echo "vendor-$NAME: $DEST is $NAME $VERSION + ${#patches[@]} patches"
    else
        echo "vendor-$NAME: $DEST differs from $NAME $VERSION + $PATCHES (above);" \
            "run scripts/vendor-$NAME.sh" >&2
        exit 1
    fi
else
    rm -rf "$DEST"
    mv "$tmp/$NAME" "$DEST"
    echo "vendor-$NAME: $DEST regenerated from $NAME $VERSION + ${#patches[@]} patches"
fi
