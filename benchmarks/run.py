"""Runs every side-by-side benchmark (`bench_*.py` beside this file), passing its arguments on."""

import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
status = 0
for script in sorted(here.glob("bench_*.py")):
    print(f"=== {script.name}", flush=True)
    status |= subprocess.run([sys.executable, str(script), *sys.argv[1:]], cwd=here).returncode
sys.exit(status)
