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
picture masked:sudoku sudoku.png masked-sudoku.png
picture video:bouncing contact_sheet.png video-bouncing.png
cp "$TMP/video-bouncing.png/clip_0.gif" docs/images/video-bouncing.gif
picture video:moving-digits contact_sheet.png video-moving-digits.png   # about 3.5 minutes
picture molecules:qm9 molecules.png molecules-qm9.png
picture multiview:shapes views.png multiview-shapes.png
picture multiview:nvs views.png multiview-nvs.png
picture joint:digits grid.png joint-digits.png
picture joint:world transitions.png joint-world.png
picture distill:digits grid.png distill-digits.png
