#!/bin/sh
# Regenerate broker/api/shangzhuang/** from protos/. protoc writes `from shangzhuang.broker.v1
# import ...`; the sed rewrite makes those imports live under the `broker.api` package.
# Everything is generated in a scratch folder first, so a failed run leaves the tree as it was.
# An argument names another folder to write into (check-protos.sh compares that with broker/api).
set -e
cd "$(dirname "$0")/.."
OUT=${1:-broker/api}
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python -m grpc_tools.protoc -I protos \
  --python_out="$TMP" --grpc_python_out="$TMP" \
  --mypy_out="$TMP" --mypy_grpc_out="$TMP" \
  $(find protos -name '*.proto' | sort) >/dev/null
find "$TMP/shangzhuang" \( -name '*.py' -o -name '*.pyi' \) -exec \
  sed -i -E 's/^(from|import) shangzhuang([. ])/\1 broker.api.shangzhuang\2/' {} +
find "$TMP/shangzhuang" -type d -exec touch {}/__init__.py \;
rm -rf "$OUT/shangzhuang"
mv "$TMP/shangzhuang" "$OUT/shangzhuang"
