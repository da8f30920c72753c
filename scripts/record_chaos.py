#!/usr/bin/env python3
"""Writes the fault campaign's figures (the report make chaos leaves) into docs/reliability.md,
between its `chaos figures` markers, with the date of the run."""
import datetime
import sys

report, doc = sys.argv[1], sys.argv[2]
figures = open(report).read().strip()
text = open(doc).read()
start, end = "<!-- chaos figures -->", "<!-- end chaos figures -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
day = datetime.date.today().isoformat()
text = f"{head}{start}\nThe last `make chaos` run ({day}):\n\n{figures}\n{end}{tail}"
open(doc, "w").write(text)
print(f"{doc}: chaos figures of {day} recorded")
