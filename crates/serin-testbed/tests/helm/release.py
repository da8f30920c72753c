"""Runs real Helm (through helm-sdkpy) against a kubeconfig: install or uninstall a chart.

Usage: release.py install KUBECONFIG NAMESPACE RELEASE CHART_DIR [VALUES_JSON]
       release.py uninstall KUBECONFIG NAMESPACE RELEASE
Prints one JSON object with the outcome; exits non-zero on failure.
"""

import asyncio
import json
import sys

try:
    import helm_sdkpy
except ImportError:
    print(
        "helm-sdkpy is not installed: pip install --ignore-requires-python helm-sdkpy",
        file=sys.stderr,
    )
    sys.exit(3)


async def main(argv):
    action, kubeconfig, namespace, release = argv[1:5]
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    if action == "install":
        chart = argv[5]
        values = json.loads(argv[6]) if len(argv) > 6 else None
        result = await helm_sdkpy.Install(config).run(
            release, chart, values=values, wait=True, timeout=60
        )
    elif action == "uninstall":
        result = await helm_sdkpy.Uninstall(config).run(release, wait=True, timeout=60)
    else:
        raise SystemExit(f"unknown action {action!r}")
    info = result.get("info", {}) if isinstance(result, dict) else {}
    print(json.dumps({"action": action, "release": release, "status": info.get("status"), "result_keys": sorted(result) if isinstance(result, dict) else []}, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
