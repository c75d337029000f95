#!/usr/bin/env python3
"""Prints "N passed, M failed, K skipped" over the given meson build dirs.

Counts GoogleTest cases from meson's JUnit log; a test program that failed without a failed
case there (crash, timeout, missing log) counts as one failure of its own."""
import json
import os
import re
import sys
import xml.etree.ElementTree as ET


def junit_root(path):
    """meson copies a failing test's output into the JUnit log as it is, terminal escapes
    included, which XML 1.0 does not allow: those characters are dropped before parsing."""
    text = open(path, "rb").read().decode("utf-8", errors="replace")
    text = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text)
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        print(f"count-tests: cannot read {path}: {e}", file=sys.stderr)
        return None

passed = failed = skipped = 0
for build in sys.argv[1:]:
    logs = os.path.join(build, "meson-logs")
    failed_programs = set()
    json_path = os.path.join(logs, "testlog.json")
    if not os.path.exists(json_path):
        print(f"count-tests: no test log in {build}", file=sys.stderr)
        failed += 1
        continue
    for line in open(json_path):
        r = json.loads(line)
        if r.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
            failed_programs.add(r.get("name"))
    programs_with_failed_cases = set()
    junit = os.path.join(logs, "testlog.junit.xml")
    root = junit_root(junit) if os.path.exists(junit) else None
    if root is not None:
        for suite in root.iter("testsuite"):
            program = suite.get("name", "").split(" / ", 1)[-1].split(".", 1)[0]
            for case in suite.iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    failed += 1
                    # Programs without GoogleTest cases are one case each, named "suite / name".
                    name = case.get("name", "")
                    programs_with_failed_cases.add(
                        name.split(" / ", 1)[-1] if " / " in name else program)
                elif case.find("skipped") is not None:
                    skipped += 1
                else:
                    passed += 1
    for name in failed_programs:
        if name.split(" / ", 1)[-1] not in programs_with_failed_cases:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
