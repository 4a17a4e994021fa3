#!/bin/sh
# Fail when the committed generated code differs from what the protos generate now.
# Generated into a scratch folder and compared: broker/api is never rewritten, so a stale tree
# fails every run until `make protos` is run and committed.
set -e
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
sh scripts/gen-protos.sh "$TMP/api"
if ! diff -r -x __pycache__ broker/api/shangzhuang "$TMP/api/shangzhuang" >/dev/null; then
  diff -r -x __pycache__ broker/api/shangzhuang "$TMP/api/shangzhuang" | head -20
  echo "broker/api is stale: run 'make protos' and commit the result" >&2
  exit 1
fi
echo "generated code is current"
