"""Runs one e2e module for CTest: `python3 run.py MODULE`.

Exit status: 0 when its tests passed, 1 when one failed, 77 (CTest's SKIP_RETURN_CODE) when
every test was skipped, so a module that could not run is reported as skipped, never as
passed. A skip for a missing server, package or fixture says so (harness.needs: the reason
starts with "missing: "); with CI=true such a skip is a failure, since CI installs
everything.

With KILN_E2E_FULL_SPEED_ONLY=1 only the tests marked `harness.full_speed` run (the dev
preset's run beside the asan one in scripts/test.sh: the asan run covers the rest).
"""
import os
import sys
import time
import unittest


def tests_of(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from tests_of(t)
        else:
            yield t


def full_speed(test):
    method = getattr(type(test), test._testMethodName, None)
    return getattr(method, "kiln_full_speed", False) or getattr(type(test), "kiln_full_speed", False)


class TimedResult(unittest.TextTestResult):
    """Keeps each test's wall time: the module's slowest are printed at its end (what the
    suite's 40-minute budget is spent on)."""

    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.timings.append((time.monotonic() - self._started, test.id()))


def main(module):
    suite = unittest.defaultTestLoader.loadTestsFromName(module)
    if os.environ.get("KILN_E2E_FULL_SPEED_ONLY") == "1":
        suite = unittest.TestSuite(t for t in tests_of(suite) if full_speed(t))
        if suite.countTestCases() == 0:
            print(f"{module}: no test needs the unsanitized build (KILN_E2E_FULL_SPEED_ONLY=1)")
            return 77
    TimedResult.timings = []
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=TimedResult)
    result = runner.run(suite)
    print("slowest:\n" + "\n".join(f"  {t:7.1f} s  {name}" for t, name in
                                     sorted(result.timings, reverse=True)[:8]))
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
