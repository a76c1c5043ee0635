"""scripts/mutation_smoke.py stays usable: every mutant still finds the code it breaks.

A refactor that moves or rewrites that code makes the mutant STALE, and a stale mutant
proves nothing; this fails then, naming the mutant to update (the tests each mutant
runs are the slow part and run from the script, not here).
"""

import subprocess
import sys

from helpers import REPO


def test_every_mutant_still_applies():
    proc = subprocess.run([sys.executable, "scripts/mutation_smoke.py", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mutants apply" in proc.stdout
