#!/bin/sh
# Fail when the committed generated code differs from what the protos generate now.
set -e
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp -r broker/api "$TMP/before"
sh scripts/gen-protos.sh
if ! diff -r -x __pycache__ "$TMP/before" broker/api >/dev/null; then
  diff -r -x __pycache__ "$TMP/before" broker/api | head -20
  echo "broker/api is stale: run 'make protos' and commit the result" >&2
  exit 1
fi
echo "generated code is current"
