"""Redaction benchmark: how long masking one hostile 64 KiB string takes, worst shape first.

    python bench/redaction.py --json [--bytes 65536]

Every log line and every stored refused spec goes through `broker.logs.redact` on the event
loop, so a string that makes a pattern backtrack quadratically stalls every caller. Times
`redact` on strings built to defeat each pattern (long letter runs, repeated key words, URL
and JWT prefixes without an end) and prints each shape's seconds and the worst.
"""

from __future__ import annotations

import argparse
import json
import time

from broker.logs import redact

SHAPES = {
    "letters": "a",
    "token words": "token",
    "secret words": "secret",
    "secret then letters": "secret" + "a" * 39 + " ",
    "key = value": "token=",
    "bearer words": "bearer ",
    "bearer token words": "bearer token ",
    "url prefixes": "://a:",
    "url without host": "://a:@",
    "jwt prefixes": "eyJ-",
    "jwt headers": "eyJaaaaaaaaa.",
    "cloud key prefixes": "AKIA-",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=65536, help="length of each string")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    seconds = {}
    for name, unit in SHAPES.items():
        text = (unit * (args.bytes // len(unit) + 1))[: args.bytes]
        started = time.perf_counter()
        redact(text)
        seconds[name] = round(time.perf_counter() - started, 4)
    worst = max(seconds, key=lambda k: seconds[k])
    result = {"bytes": args.bytes, "seconds": seconds, "worst": worst, "worst_s": seconds[worst]}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
