"""examples/inverse_burgers.py runs and improves the initial condition (shortened)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inverse_burgers_example_recovers_initial_condition(capsys):
    spec = importlib.util.spec_from_file_location(
        "inverse_burgers", os.path.join(ROOT, "examples", "inverse_burgers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    err0, err = mod.main(maxiter=4, report_memory=False)
    assert err < 0.7 * err0
    out = capsys.readouterr().out
    assert "step evaluations" in out and "snapshots" in out
