"""Who calls a function, and how often per request, in a callgrind output file.

    python3 calls.py callgrind.out FUNCTION [REQUESTS]

FUNCTION matches a called function by exact name (e.g. `malloc`) or by its last path
segment (`parse` matches `a::b::parse`).
Prints the total calls (and per request), then the 15 most frequent direct callers.
"""
import collections
import re
import sys


def main():
    path, target = sys.argv[1], sys.argv[2]
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    names = {}  # callgrind's name compression: "(id) name" once, then "(id)"

    def name(field):
        m = re.match(r"\((\d+)\)(?: (.*))?", field.strip())
        if not m:
            return field.strip()
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    caller = callee = None
    calls = collections.Counter()
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                caller = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
            elif line.startswith("calls=") and callee:
                if callee == target or callee.endswith("::" + target):
                    calls[caller] += int(line[6:].split()[0])
    total = sum(calls.values())
    print(f"{target}: {total} calls, {total / requests:.1f} per request")
    for who, n in calls.most_common(15):
        print(f"{n / requests:8.2f}  {who[:150]}")


if __name__ == "__main__":
    main()
