#!/bin/sh
# Regenerate broker/api/shangzhuang/** from protos/. protoc writes `from shangzhuang.broker.v1
# import ...`; the sed rewrite makes those imports live under the `broker.api` package.
set -e
cd "$(dirname "$0")/.."
OUT=broker/api
rm -rf "$OUT/shangzhuang"
python -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  $(find protos -name '*.proto' | sort)
find "$OUT/shangzhuang" \( -name '*.py' -o -name '*.pyi' \) -exec \
  sed -i -E 's/^(from|import) shangzhuang([. ])/\1 broker.api.shangzhuang\2/' {} +
find "$OUT/shangzhuang" -type d -exec touch {}/__init__.py \;
