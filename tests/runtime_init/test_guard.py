"""spawn() refuses a threaded caller instead of forking it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import threading, time
from runtime import init
from runtime.spec import default_spec
threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
try:
    init.spawn(default_spec("/nonexistent", ["true"]), "/nonexistent", stdio=(0, 1, 2))
except init.InitError as e:
    print(e)
"""


def test_threaded_caller_is_refused():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "spawn needs a single-threaded caller, this one has 2 threads"
