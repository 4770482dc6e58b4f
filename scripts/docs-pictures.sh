#!/usr/bin/env sh
# Regenerate the pictures of the documentation site (docs/images/) from the shipped weights.
#   usage: scripts/docs-pictures.sh   (after `make test`, which installs every plugin)
set -eu
cd "$(dirname "$0")/.."
DK=.venv/bin/diffusekit
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p docs/images
$DK run gaussian:digits --out "$TMP/digits" --seed 0
cp "$TMP/digits/grid.png" docs/images/gaussian-digits.png
$DK run masked:sudoku --out "$TMP/sudoku" --seed 0
cp "$TMP/sudoku/sudoku.png" docs/images/masked-sudoku.png
$DK run video:bouncing --out "$TMP/balls" --seed 0
cp "$TMP/balls/contact_sheet.png" docs/images/video-bouncing.png
cp "$TMP/balls/clip_0.gif" docs/images/video-bouncing.gif
$DK run molecules:qm9 --out "$TMP/mol" --seed 0
cp "$TMP/mol/molecules.png" docs/images/molecules-qm9.png
$DK run multiview:shapes --out "$TMP/shapes" --seed 0
cp "$TMP/shapes/views.png" docs/images/multiview-shapes.png
$DK run multiview:nvs --out "$TMP/nvs" --seed 0
cp "$TMP/nvs/views.png" docs/images/multiview-nvs.png
$DK run multiview:sds --out "$TMP/sds" --seed 0
cp "$TMP/sds/turntable_0.gif" docs/images/multiview-sds.gif
$DK run joint:digits --out "$TMP/joint" --seed 0
cp "$TMP/joint/"*.png docs/images/ 2>/dev/null || true
$DK run distill:digits --out "$TMP/distill" --seed 0
cp "$TMP/distill/grid.png" docs/images/distill-digits.png
ls -la docs/images
