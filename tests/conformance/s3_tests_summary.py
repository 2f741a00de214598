"""Summarises a report written by s3_tests_report.py: a Markdown table of passed / failed /
refused / skipped per feature marker (a test counts under each of its markers; unmarked
tests under `(none)`), then the failed tests with the error code each got.

Usage: s3_tests_summary.py REPORT.jsonl
"""
import collections
import json
import sys


def main(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    per = collections.defaultdict(collections.Counter)
    total = collections.Counter()
    for r in rows:
        total[r["outcome"]] += 1
        for m in r["markers"] or ["(none)"]:
            per[m][r["outcome"]] += 1
    cols = ("passed", "failed", "refused", "skipped")
    print("| marker | tests | " + " | ".join(cols) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for m in sorted(per):
        c = per[m]
        print(f"| {m} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |")
    print(f"| **all** | {sum(total.values())} | " + " | ".join(f"**{total[k]}**" for k in cols) + " |")
    failed = [r for r in rows if r["outcome"] == "failed"]
    if failed:
        print(f"\nFailed ({len(failed)}):\n")
        for r in failed:
            print(f"- `{r['test'].split('::')[-1]}` {r['code'] or '(assertion)'} "
                  f"[{', '.join(r['markers'])}]")


if __name__ == "__main__":
    main(sys.argv[1])
