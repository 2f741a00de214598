"""Runs one e2e module for CTest: `python3 run.py MODULE`.

Exit status: 0 when its tests passed, 1 when one failed, 77 (CTest's SKIP_RETURN_CODE) when
every test was skipped, so a module that could not run is reported as skipped, never as
passed. A skip for a missing server, package or fixture says so (harness.needs: the reason
starts with "missing: "); with CI=true such a skip is a failure, since CI installs
everything.
"""
import os
import sys
import unittest


def main(module):
    suite = unittest.defaultTestLoader.loadTestsFromName(module)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    sys.stdout.flush()
    if not result.wasSuccessful():
        return 1
    missing = sorted({reason for _, reason in result.skipped if reason.startswith("missing: ")})
    if missing and os.environ.get("CI") == "true":
        print("CI=true: skipped for a missing dependency (CI installs everything):\n  " +
              "\n  ".join(missing))
        return 1
    if result.skipped:
        print(f"{len(result.skipped)} of {result.testsRun} skipped:")
        for test, reason in result.skipped:
            print(f"  {test.id()}: {reason}")
    if result.testsRun > 0 and len(result.skipped) == result.testsRun:
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
