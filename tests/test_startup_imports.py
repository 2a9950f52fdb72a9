"""What a Ray worker imports before its first call: every trainer actor, search driver and Serve
replica is a fresh process, and each heavy import there is paid once per actor start (issue 19).

Each case runs in a new interpreter and lists the heavy modules it found loaded; scikit-learn,
scipy.stats and torch._dynamo (torch's first optimizer imports it, ~1.5 s) are loaded only where
they are used: a curve fit, a rank transform, a REINFORCE update.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("sklearn", "scipy.stats", "torch._dynamo")

CASES = {
    "trainer actor": "import cluster.child, cluster.populate; cluster.child.ChildTrainer",
    "curve-predictor actor module": "import cluster.early_stop",
    "search driver with an RL agent": (
        "import search; from nasdb.space import default_space; "
        "search.create_agent('rl', default_space(), {'task': 't'}).describe()"),
    "Serve replica module": "import predictor.serve",
}


@pytest.mark.parametrize("code", CASES.values(), ids=list(CASES))
def test_a_worker_starts_without_the_heavy_imports_it_does_not_use(code):
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"loaded at start: {r.stdout.strip()}"


def test_the_stopper_loads_scikit_learn_when_it_fits():
    """The other side: a process that fits curve models has scikit-learn once it asked for it."""
    probe = ("from cluster.early_stop import CurvePredictorService; CurvePredictorService(); "
             "import sys; print('sklearn.svm' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
