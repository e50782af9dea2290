#!/usr/bin/env python3
"""Lists GoogleTest skips in a ctest output log whose reason matches no allowed reason.

Usage: check-skips.py CTEST_LOG ALLOWED_SKIPS. Prints one line per disallowed skip; prints
nothing when every skip is allowed. GoogleTest prints a skip as
    <file>:<line>: Skipped
    <reason>
    [  SKIPPED ] Suite.Test
"""
import sys


def main() -> int:
    log_path, allowed_path = sys.argv[1], sys.argv[2]
    allowed = [l.strip() for l in open(allowed_path) if l.strip() and not l.startswith("#")]
    lines = open(log_path, errors="replace").read().splitlines()
    reason = None
    for i, line in enumerate(lines):
        if line.endswith(": Skipped"):
            reason = lines[i + 1].strip() if i + 1 < len(lines) else ""
        elif line.startswith("[  SKIPPED ]") and "(" in line and reason is not None:
            test = line[len("[  SKIPPED ]"):].split("(")[0].strip()
            if not any(a in reason for a in allowed):
                print(f"disallowed skip: {test}: {reason}")
            reason = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
