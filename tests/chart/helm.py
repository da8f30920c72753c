"""Real Helm (helm-sdkpy, which embeds Helm's Go library) for the chart tests.

Usage: helm.py lint CHART_DIR
       helm.py install KUBECONFIG NAMESPACE RELEASE CHART_DIR [VALUES_JSON]
       helm.py uninstall KUBECONFIG NAMESPACE RELEASE
Prints one JSON object (lint: Helm's messages; install: the release, its manifest included);
exits 2 when Helm reports an error, printing it on stderr.
"""

import asyncio
import json
import sys

try:
    import helm_sdkpy
except ImportError:
    print(
        "helm-sdkpy is not installed: pip install --ignore-requires-python helm-sdkpy (make deps)",
        file=sys.stderr,
    )
    sys.exit(3)


async def main(argv):
    action = argv[1]
    if action == "lint":
        config = helm_sdkpy.Configuration(namespace="default")
        result = await helm_sdkpy.Lint(config).run(argv[2])
    else:
        kubeconfig, namespace, release = argv[2:5]
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        if action == "install":
            values = json.loads(argv[6]) if len(argv) > 6 else None
            result = await helm_sdkpy.Install(config).run(
                release, argv[5], values=values, wait=True, timeout=60
            )
        elif action == "uninstall":
            result = await helm_sdkpy.Uninstall(config).run(release, wait=True, timeout=60)
        else:
            raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv))
    except helm_sdkpy.HelmError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
