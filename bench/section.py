#!/usr/bin/env python3
"""Replace one `## Section` of a Markdown file with the text on stdin (append it if missing).

Usage: bench/section.py FILE "Section title" < new-body.md
Each benchmark script owns one section of docs/benchmarks.md and rewrites only that.
"""
import re
import sys

path, title = sys.argv[1], sys.argv[2]
body = sys.stdin.read().rstrip() + "\n"
try:
    text = open(path, encoding="utf-8").read()
except FileNotFoundError:
    text = "# Benchmarks\n"
heading = f"## {title}\n"
pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
block = heading + "\n" + body + "\n"
if pattern.search(text):
    text = pattern.sub(lambda _m: block, text, count=1)
else:
    text = text.rstrip() + "\n\n" + block
open(path, "w", encoding="utf-8").write(text)
