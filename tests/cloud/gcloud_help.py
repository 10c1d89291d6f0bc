"""Print `gcloud PATH --help` for many commands from one process: run by the Cloud SDK's own Python.

Usage: PYTHON gcloud_help.py SDK_ROOT < paths (one command per line, words separated by spaces). For each path,
stdout and stderr each get a `@@@BEGIN path` line, the help (or gcloud's error), and `@@@END exit-status`.
This is gcloud's own entry point (gcloud_main.CreateCLI + Execute), loaded once instead of once per command.
"""
from __future__ import annotations

import os
import sys

sdk = sys.argv[1]
sys.path[0:0] = [os.path.join(sdk, "lib"), os.path.join(sdk, "lib", "third_party")]

from googlecloudsdk import gcloud_main  # noqa: E402

cli = gcloud_main.CreateCLI([])
for line in sys.stdin:
    path = line.split()
    for stream in (sys.stdout, sys.stderr):
        stream.write("\n@@@BEGIN " + " ".join(path) + "\n")
        stream.flush()
    code = 0
    try:
        cli.Execute([*path, "--help"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # any failure of one command is reported, the others still run
        sys.stderr.write(f"ERROR: {exc!r}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        stream.write(f"\n@@@END {code}\n")
        stream.flush()
