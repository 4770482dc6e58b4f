#!/usr/bin/env sh
# Regenerate the pictures of the documentation site (docs/images/) from the shipped weights.
#   usage: scripts/docs-pictures.sh   (after `make test`, which installs every plugin)
set -eu
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p docs/images

# picture METHOD FILE NAME: run METHOD with seed 0 and keep the FILE it writes as docs/images/NAME
picture() {
    .venv/bin/diffusekit run "$1" --out "$TMP/$3" --seed 0
    cp "$TMP/$3/$2" "docs/images/$3"
}

picture gaussian:digits grid.png gaussian-digits.png
