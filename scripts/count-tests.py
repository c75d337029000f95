#!/usr/bin/env python3
"""Prints "N passed, M failed, K skipped" over the given meson build dirs.

Counts GoogleTest cases from meson's JUnit log; a test program that failed without a failed
case there (crash, timeout, missing log) counts as one failure of its own."""
import json
import os
import sys
import xml.etree.ElementTree as ET

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
    if os.path.exists(junit):
        for suite in ET.parse(junit).getroot().iter("testsuite"):
            program = suite.get("name", "").split(" / ", 1)[-1].split(".", 1)[0]
            for case in suite.iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    failed += 1
                    programs_with_failed_cases.add(program)
                elif case.find("skipped") is not None:
                    skipped += 1
                else:
                    passed += 1
    for name in failed_programs:
        if name.split(" / ", 1)[-1] not in programs_with_failed_cases:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
