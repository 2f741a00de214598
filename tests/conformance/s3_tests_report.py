"""pytest plugin for tests/conformance/s3-tests.sh: records each test's outcome and feature
markers, and classifies a failure as `refused` when the store answered it with a code Kiln
documents for what it does not implement (501 NotImplemented: in the error, or as the status
an assertion compared), so that docs/objects.md can say, per marker, what passes, what fails and what
is refused by design.

Writes JSON lines to the file named by KILN_S3_TESTS_REPORT:
{"test": nodeid, "markers": [...], "outcome": "passed|failed|refused|skipped", "code": str}
"""
import json
import os
import re

# Codes the store answers, by design, for a feature it does not implement. A test that fails
# with one of them is a refusal, not a bug (docs/objects.md, "Refused").
REFUSAL_CODES = ("NotImplemented",)

_CODE = re.compile(r"(?:Error|error)[^\n]*?\(([A-Za-z]+)\)|'Code': '([A-Za-z]+)'")
# An assertion on the status the store answered, where it answered 501 ("assert 501 == 400").
_STATUS_501 = re.compile(r"assert 501 ==|== 501\b|status(?:_code)?['\"]?\]? == 501")
_out = None
_markers = {}
_results = {}


def pytest_configure(config):
    global _out
    path = os.environ.get("KILN_S3_TESTS_REPORT")
    if path:
        _out = open(path, "w", encoding="utf-8")


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        _markers[item.nodeid] = sorted({m.name for m in item.iter_markers()
                                        if m.name not in ("parametrize", "skip", "skipif",
                                                          "usefixtures", "timeout",
                                                          "filterwarnings")})


def _code(text):
    for m in _CODE.finditer(text):
        return m.group(1) or m.group(2)
    return ""


def pytest_runtest_logreport(report):
    # One record per test, from its phases: set-up's when set-up did not pass, else the
    # call's; a failed teardown (the suite's clean-up) fails a test that had passed.
    if _out is None:
        return
    prev = _results.get(report.nodeid)
    if report.when == "teardown" and (report.passed or report.skipped):
        return
    if report.when == "teardown" and prev and prev["outcome"] != "passed":
        return
    text = str(report.longrepr) if report.longrepr else ""
    if report.passed:
        outcome, code = "passed", ""
    elif report.skipped:
        outcome, code = "skipped", ""
    else:
        code = _code(text)
        outcome = "failed"
        if code in REFUSAL_CODES or "NotImplemented" in text or _STATUS_501.search(text):
            outcome, code = "refused", code or "NotImplemented"
        if report.when != "call":
            code = f"{code or 'error'} in {report.when}"
    _results[report.nodeid] = {"test": report.nodeid, "markers": _markers.get(report.nodeid, []),
                               "outcome": outcome, "code": code}


def pytest_unconfigure(config):
    if _out is not None:
        for record in _results.values():
            _out.write(json.dumps(record) + "\n")
        _out.close()
