"""Parses a Dockerfile with Docker's own parser (the PyPI package `dockerfile`, which wraps
moby/buildkit's Go parser) and prints its instructions as JSON: [{cmd, flags, value, json}].

Usage: parse_dockerfile.py PATH
"""

import json
import sys

try:
    import dockerfile
except ImportError:
    print("the dockerfile package is not installed: pip install dockerfile (make deps)", file=sys.stderr)
    sys.exit(3)

commands = dockerfile.parse_file(sys.argv[1])
print(
    json.dumps(
        [
            {"cmd": c.cmd.upper(), "flags": list(c.flags), "value": list(c.value), "json": c.json}
            for c in commands
        ]
    )
)
