"""The runnable examples run (shortened where they train)."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples",
                                                                     name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart_runs_as_a_script():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "all gradients match finite differences" in r.stdout


def test_mlp_classifier_trains():
    mod = load("mlp_classifier")
    first = mod.loss(mod.init(__import__("numpy").random.default_rng(0), [2, 32, 32, 2]),
                     *mod.spirals(400, __import__("numpy").random.default_rng(0)))
    assert mod.main(steps=60) < first


def test_robot_arm_ik_converges():
    assert load("robot_arm_ik").main() < 1e-8


@pytest.mark.slow
def test_all_example_scripts_run():
    for f in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if f.endswith(".py"):
            r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", f)],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, (f, r.stderr[-2000:])
