#!/usr/bin/env python3
"""Checks of the Helm chart in charts/herald, with Helm's own engine (helm-python-sdk, which
bundles Helm as a library) and the Kubernetes JSON schemas (kubernetes-validate).

    check_chart.py --list          the names of the checks
    check_chart.py [NAME ...]      runs the named checks (all without names)

Prints `PASS name`, `FAIL name` (with the reasons) or `SKIP name` (with the reason) per check,
then `N passed, N failed`; exits 1 when a check failed. crates/herald/tests/chart.rs runs each
check as its own Rust test, in the virtualenv it creates from requirements.txt.

The checks are in checks_*.py, by topic, registered in the order they are imported below;
common.py (paths, values, the registry, rendering), structure.py (Kubernetes schemas and
references) and crd_schema.py (policies against the CRDs) hold what they share.

HERALD_BIN, when set, is the herald binary: the rendered controller arguments are parsed by it.
"""

from __future__ import annotations

import sys
import traceback

# Each module registers its checks when imported, in this order: the order of --list.
import checks_rendering  # noqa: F401
import checks_receivers  # noqa: F401
import checks_pagerduty  # noqa: F401
import checks_schemas  # noqa: F401
import checks_cluster  # noqa: F401
import checks_gates  # noqa: F401
from common import CHECKS, Skip


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print("\n".join(CHECKS))
        return 0
    names = argv or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown checks: {unknown}; known: {list(CHECKS)}", file=sys.stderr)
        return 2
    passed = failed = skipped = 0
    for name in names:
        try:
            CHECKS[name]()
        except Skip as e:
            skipped += 1
            print(f"SKIP {name}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its check
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) and str(e) else traceback.format_exc()
            print(f"FAIL {name}\n" + "\n".join("    " + line for line in detail.splitlines()), flush=True)
        else:
            passed += 1
            print(f"PASS {name}", flush=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
