"""The %%grad cell magic, three ways: an in-process IPython shell, the example
notebook run by a real ipykernel through nbclient, and `ipython -c`."""
import collections
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.jupyter import HESSIAN_MAX_SIZE, GradResult, parse_grad_line

IPython = pytest.importorskip("IPython", reason="the %%grad magic needs IPython "
                                                "(pip install 'tracegrad[jupyter]')")
from IPython.core.error import UsageError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "grad_magic.ipynb"
SRC = pathlib.Path(tg.__file__).resolve().parents[1]


# --- the in-process shell ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def _shell(tmp_path_factory):
    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        c = Config()
        c.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=c)
    shell.run_line_magic("load_ext", "tracegrad")
    return shell


@pytest.fixture
def ip(_shell):
    """The shell, with numpy and tracegrad imported; names a test adds are removed after it."""
    ns = _shell.user_ns
    before = set(ns)
    ns.update(np=np, tg=tg)
    yield _shell
    for k in set(ns) - before:
        del ns[k]


def traced_leaks(ns):
    """Names (and one level inside containers) still holding a TracedArray."""
    bad = []
    for k, v in ns.items():
        if type(v) is tg.TracedArray:
            bad.append(k)
        elif isinstance(v, (list, tuple)):
            bad += [f"{k}[{i}]" for i, x in enumerate(v) if type(x) is tg.TracedArray]
        elif isinstance(v, dict):
            bad += [f"{k}[{kk!r}]" for kk, x in v.items() if type(x) is tg.TracedArray]
    return bad


def magic(ip, line, cell):
    return ip.run_cell_magic("grad", line, cell)


# --- registration ---------------------------------------------------------------------------
def test_load_and_unload_extension(ip):
    assert "grad" in ip.magics_manager.magics["cell"]
    ip.run_line_magic("unload_ext", "tracegrad")
    try:
        assert "grad" not in ip.magics_manager.magics["cell"]
        res = ip.run_cell("%%grad wrt w\nw")
        assert not res.success
    finally:
        ip.run_line_magic("load_ext", "tracegrad")
    assert "grad" in ip.magics_manager.magics["cell"]
    assert "wrt NAME" in ip.magics_manager.magics["cell"]["grad"].__doc__


# --- what it binds ----------------------------------------------------------------------------
@pytest.fixture
def regression(ip):
    rng = np.random.default_rng(0)
    ns = ip.user_ns
    ns["X"] = rng.standard_normal((20, 3))
    ns["y"] = rng.standard_normal(20)
    ns["w"] = np.array([0.5, -1.0, 2.0])
    ns["b"] = 0.25
    return ns


CELL = "pred = X @ w + b\nloss = np.mean((pred - y) ** 2)\n"


def test_named_target(ip, regression):
    ns = regression
    w0, b0 = ns["w"], ns["b"]
    res = magic(ip, "loss wrt w, b", CELL)
    assert isinstance(res, GradResult)
    r = ns["X"] @ w0 + b0 - ns["y"]
    np.testing.assert_allclose(ns["dloss_dw"], 2 * ns["X"].T @ r / 20, rtol=1e-12)
    np.testing.assert_allclose(ns["dloss_db"], 2 * np.mean(r), rtol=1e-12)
    assert set(ns["grads"]) == {"w", "b"} and ns["grads"]["w"] is ns["dloss_dw"]
    np.testing.assert_allclose(res.value, np.mean(r ** 2))
    assert res.runs == 1
    assert type(ns["pred"]) is np.ndarray and type(ns["loss"]) is np.ndarray
    assert ns["w"] is w0 and ns["b"] is b0 and type(ns["b"]) is float
    assert traced_leaks(ns) == []


def test_last_expression_is_out_or_its_name(ip, regression):
    ns = regression
    res = magic(ip, "wrt w", "r = X @ w - y\nnp.sum(r ** 2)")
    assert res.label == "out" and "dout_dw" in ns and res.from_expr
    np.testing.assert_allclose(ns["dout_dw"], 2 * ns["X"].T @ (ns["X"] @ ns["w"] - ns["y"]))
    magic(ip, "wrt w", "total = np.sum(w ** 3)\ntotal")
    np.testing.assert_allclose(ns["dtotal_dw"], 3 * ns["w"] ** 2)


def test_as_and_quiet(ip, regression):
    ns = regression
    assert magic(ip, "loss wrt w --as g -q", CELL) is None
    assert set(ns["g"]) == {"w"} and "dloss_dw" in ns
    res = ip.run_cell("%%grad loss wrt w -q\n" + CELL)
    assert res.success and res.result is None


def test_pytree_input(ip):
    ns = ip.user_ns
    ns["params"] = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    ns["x"] = np.arange(2.0)
    res = magic(ip, "loss wrt params", "loss = np.sum(np.tanh(x @ params['W'] + params['b']))")
    g = ns["dloss_dparams"]
    assert set(g) == {"W", "b"} and g["W"].shape == (2, 3)
    np.testing.assert_allclose(g["b"], 1 - np.tanh(1.0) ** 2)
    assert "dloss_dparams['W']" in res._repr_html_()
    assert type(ns["params"]["W"]) is np.ndarray


def test_options_anywhere_and_bracketed_exprs():
    s = parse_grad_line("-q loss --check 1e-5 wrt a,b c --jvp a=np.full(3, 2.0) "
                        "--hvp 'c = 2 * v' --as G --hessian --compile")
    assert (s.target, s.names, s.check, s.quiet, s.dict_name) == ("loss", ["a", "b", "c"], 1e-5,
                                                                  True, "G")
    assert s.jvp == {"a": "np.full(3, 2.0)"} and s.hvp == {"c": "2 * v"}
    assert s.hessian and s.compile
    s = parse_grad_line("wrt x --check")
    assert s.target is None and s.check == 0.0
    assert parse_grad_line("wrt x --check=1e-3").check == 1e-3


# --- display ----------------------------------------------------------------------------------
def test_html_and_pretty(ip, regression):
    res = magic(ip, "loss wrt w, b", CELL)
    h = res._repr_html_()
    for col in ("name", "shape", "dtype", "‖g‖₂", "max |g|", "check"):
        assert f"<th>{col}" in h
    assert "<code>dloss_dw</code>" in h and "<code>dloss_db</code>" in h
    assert f"{np.linalg.norm(ip.user_ns['dloss_dw']):.4g}" in h
    assert "<td>(3,)</td><td>float64</td>" in h
    text = IPython.lib.pretty.pretty(res)
    assert text.splitlines()[1].split() == ["name", "shape", "dtype", "‖g‖₂", "max", "|g|",
                                            "check", "(rel.", "err)"]
    assert "dloss_dw" in text and "—" in text
    fmt = ip.display_formatter.format(res)[0]
    assert "text/html" in fmt and "text/plain" in fmt


# --- options ------------------------------------------------------------------------------------
def test_check(ip, regression):
    ns = regression
    ns["calls"] = []
    res = magic(ip, "loss wrt w, b --check", "calls.append(1)\n" + CELL)
    assert res.runs == len(ns["calls"]) == 1 + 2 * 2
    assert res.check_ok and all(err < 1e-6 for err, _ in res.check.values())
    assert "✓" in res._repr_html_()
    res = magic(ip, "loss wrt w --check 1e-4", CELL)
    assert res.check_ok


def test_check_flags_a_dropped_derivative(ip, regression):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # tracegrad may warn about the float() escape
        res = magic(ip, "loss wrt w --check",
                    "loss = np.sum(w ** 2) + float(np.sum(w)) ** 2")
    assert res.check_ok is False
    assert "✗" in res._repr_html_() and "disagree" in IPython.lib.pretty.pretty(res)


def test_hessian(ip, regression):
    ns = regression
    res = magic(ip, "loss wrt w, b --hessian", CELL)
    X = ns["X"]
    np.testing.assert_allclose(ns["d2loss_dw2"], 2 * X.T @ X / 20, rtol=1e-12)
    np.testing.assert_allclose(ns["d2loss_dw_db"], 2 * X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ns["d2loss_db2"], 2.0)
    assert "d2loss_db_dw" not in ns and res.runs == 2
    assert "d2loss_dw2" in res._repr_html_()


def test_hessian_refuses_large_inputs(ip):
    ns = ip.user_ns
    ns["big"] = np.ones(HESSIAN_MAX_SIZE + 1)
    ns["ran"] = False
    with pytest.raises(UsageError, match=r"--hvp NAME=EXPR"):
        magic(ip, "s wrt big --hessian", "ran = True\ns = np.sum(big ** 2)")
    assert ns["ran"] is False


def test_hvp(ip, regression):
    ns = regression
    ns["v"] = np.array([1.0, 2.0, -1.0])
    magic(ip, "loss wrt w, b -q --hvp w=v", CELL)
    X = ns["X"]
    np.testing.assert_allclose(ns["hvp_loss_w"], 2 * X.T @ X @ ns["v"] / 20, rtol=1e-12)
    np.testing.assert_allclose(ns["hvp_loss_b"], 2 * X.mean(axis=0) @ ns["v"], rtol=1e-12)


def test_jvp(ip, regression):
    ns = regression
    res = magic(ip, "loss wrt w, b --jvp w=np.ones(3) --jvp 'b = 0.5'", CELL)
    expected = ns["dloss_dw"].sum() + 0.5 * ns["dloss_db"]
    np.testing.assert_allclose(ns["jvp_loss"], expected, rtol=1e-12)
    assert res.jvp is ns["jvp_loss"] and "jvp_loss" in res._repr_html_()


def test_compile_without_jit_is_a_usage_error(ip, regression, monkeypatch):
    monkeypatch.delattr(tg, "jit", raising=False)
    with pytest.raises(UsageError, match=r"tracegrad\.jit"):
        magic(ip, "loss wrt w --compile", CELL)


def test_compile_uses_jit(ip, regression, monkeypatch):
    made = []

    def fake_jit(fun):
        def run(*args):
            return fun(*args)
        made.append(fun)
        return run
    monkeypatch.setattr(tg, "jit", fake_jit, raising=False)
    ns = regression
    res = magic(ip, "loss wrt w --compile", CELL)
    assert res.compiled and len(made) == 1
    plain = ns["dloss_dw"]
    magic(ip, "loss wrt w --compile", CELL)          # same cell: the jitted function is reused
    assert len(made) == 1
    np.testing.assert_allclose(ns["dloss_dw"], plain)
    r = ns["X"] @ ns["w"] + ns["b"] - ns["y"]
    np.testing.assert_allclose(plain, 2 * ns["X"].T @ r / 20, rtol=1e-12)
    assert type(ns["X"]) is np.ndarray and traced_leaks(ns) == []


def test_compile_with_tracegrad_jit(ip, regression):
    if not callable(getattr(tg, "jit", None)):
        pytest.skip("tracegrad.jit is not available in this version")
    ns = regression
    for scale in (1.0, 1.0, 2.0):                 # trace, replay, replay with a new X
        ns["X"] = ns["X"] * scale
        res = magic(ip, "loss wrt w --compile", CELL)
        r = ns["X"] @ ns["w"] + ns["b"] - ns["y"]
        np.testing.assert_allclose(ns["dloss_dw"], 2 * ns["X"].T @ r / 20, rtol=1e-10)
        np.testing.assert_allclose(ns["loss"], np.mean(r ** 2), rtol=1e-10)
        assert res.compiled and res.runs <= 1 and traced_leaks(ns) == []


# --- hygiene ------------------------------------------------------------------------------------
LEAKY = """
Point = collections.namedtuple("Point", "a b")
hist.append(w * 2)
L = [w * 2, 3]
D = {"k": w + 1, "n": 1}
T = (w - 1, "s")
P = Point(w, 1)
nested = [[w]]
"""


def test_no_leaks_after_success(ip, regression):
    ns = regression
    ns.update(collections=collections, hist=[])
    w0 = ns["w"]
    magic(ip, "loss wrt w -q", LEAKY + CELL)
    assert traced_leaks(ns) == []
    assert type(ns["P"]).__name__ == "Point" and type(ns["P"].a) is np.ndarray
    np.testing.assert_array_equal(ns["P"].a, w0)
    assert type(ns["T"]) is tuple and ns["T"][1] == "s"
    assert ns["w"] is w0


def test_no_leaks_after_user_exception(ip, regression):
    ns = regression
    ns.update(collections=collections, hist=[])
    w0, b0 = ns["w"], ns["b"]
    err = ZeroDivisionError("from the cell")
    ns["err"] = err
    with pytest.raises(ZeroDivisionError) as info:
        magic(ip, "loss wrt w, b", LEAKY + CELL + "raise err\n")
    assert info.value is err                       # unchanged, not wrapped
    assert traced_leaks(ns) == []
    assert type(ns["pred"]) is np.ndarray and ns["w"] is w0 and ns["b"] is b0
    assert "dloss_dw" not in ns


def test_user_exception_stops_a_cell_run(ip, regression):
    res = ip.run_cell("%%grad loss wrt w\n" + CELL + "1 / 0\n")
    assert isinstance(res.error_in_exec, ZeroDivisionError)
    assert traced_leaks(ip.user_ns) == []


def test_exception_in_an_extra_run_is_clean_too(ip, regression):
    ns = regression
    w0 = ns["w"]
    with pytest.raises(KeyError):
        magic(ip, "loss wrt w --hessian", "pred = X @ w\nloss = {}['missing']")
    assert ns["w"] is w0 and traced_leaks(ns) == []


def test_rebinding_a_wrt_variable_is_undone_with_a_warning(ip, regression):
    ns = regression
    w0 = ns["w"]
    with pytest.warns(UserWarning, match="rebinds w"):
        magic(ip, "loss wrt w -q", "w = w * 2\n" + CELL)
    assert ns["w"] is w0
    np.testing.assert_allclose(ns["dloss_dw"], 2 * 2 * ns["X"].T @ (
        ns["X"] @ (2 * w0) + ns["b"] - ns["y"]) / 20)


# --- usage errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("line, match", [
    ("", "wrt"),
    ("loss w", "wrt"),
    ("loss wrt", "at least one"),
    ("loss wrt 1w", "not a Python variable name"),
    ("loss wrt w, w", "repeats w"),
    ("w wrt w", "also a wrt name"),
    ("a b wrt w", "wrt"),
    ("loss wrt w --frobnicate", "unknown option"),
    ("loss wrt w --hvp", "needs an argument"),
    ("loss wrt w --hvp w", "NAME=EXPR"),
    ("loss wrt w --jvp w=1+", "not a Python expression"),
    ("loss wrt w --jvp b=1.0", "not one of the wrt names"),
    ("loss wrt w --jvp w=v --jvp w=v", "twice"),
    ("loss wrt w --check -1", "positive"),
    ("loss wrt w --check=x", "number"),
    ("loss wrt w --as 3g", "not a Python variable name"),
    ("loss wrt w --jvp 'w=1", "unbalanced"),
    ("loss wrt w --jvp w=f(1", "unbalanced"),
])
def test_bad_grammar(ip, regression, line, match):
    with pytest.raises(UsageError, match=match):
        magic(ip, line, CELL)


def test_bad_grammar_through_run_cell_is_a_usage_error(ip, regression):
    res = ip.run_cell("%%grad loss w\n" + CELL)
    assert isinstance(res.error_in_exec, UsageError)


@pytest.mark.parametrize("setup, line, cell, match", [
    ({}, "loss wrt nope, w", CELL, "unknown name nope"),
    ({"n": np.arange(3)}, "s wrt n", "s = np.sum(n)", "n is an array of dtype int"),
    ({"k": 3}, "s wrt k", "s = k ** 2", "k is an int"),
    ({"flag": True}, "s wrt flag", "s = 1.0", "bool"),
    ({"p": {"a": np.ones(2), "s": "x"}}, "s wrt p", "s = 1.0", r"p\['s'\] is a str"),
    ({}, "wrt w", "", "empty"),
    ({}, "wrt w", "pred = X @ w", "does not end with an expression"),
    ({}, "wrt w", "print(w)", "None"),
    ({}, "loss wrt w", "pred = X @ w", "did not assign the target 'loss'"),
    ({"loss": 1.0}, "loss wrt w", "pred = X @ w", "still holds the value"),
    ({}, "loss wrt w", "loss = X @ w", r"shape \(20,\)"),
    ({}, "wrt w", "X @ w", r"shape \(20,\)"),
    ({}, "wrt w", "(np.sum(w), 1.0)", "is a tuple"),
    ({}, "wrt w", "'text'", "is a str"),
    ({}, "wrt w", "np.sum(w) * 1j", "complex"),
    ({}, "loss wrt w --jvp w=np.ones(2)", CELL, r"shape \(2,\) does not match"),
    ({}, "loss wrt w --jvp w=undefined_v", CELL, "NameError"),
    ({"b": {"c": 1.0}}, "loss wrt w, b --jvp b=1.0", "loss = np.sum(w) + b['c']", "structure"),
])
def test_usage_errors(ip, regression, setup, line, cell, match):
    ns = regression
    ns.update(setup)
    w0 = ns["w"]
    before = {k: ns[k] for k in setup}
    with pytest.raises(UsageError, match=match):
        magic(ip, line, cell)
    assert ns["w"] is w0 and all(ns[k] is v for k, v in before.items())
    assert traced_leaks(ns) == [] and not any(k.startswith(("dloss", "dout")) for k in ns)


def test_cell_with_ipython_syntax(ip, regression):
    ns = regression
    magic(ip, "loss wrt w -q", "scale = %time 2.0\nloss = scale * np.sum(w ** 2)")
    np.testing.assert_allclose(ns["dloss_dw"], 4 * ns["w"])


# --- a real notebook through a real kernel --------------------------------------------------------
def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert sum("%%grad" in "".join(c["source"]) for c in code) >= 5


def _kernel_env(tmp_path, monkeypatch):
    """A kernel spec running this interpreter, and private Jupyter/IPython dirs."""
    spec = tmp_path / "jupyter" / "kernels" / "tracegrad-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tracegrad test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return "tracegrad-test"


def test_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel")
    kernel = _kernel_env(tmp_path, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=120, kernel_name=kernel, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<code>dloss_dw</code>" in h for h in html)
    assert any("✓" in h for h in html) and any("✗" in h for h in html)   # --check both ways
    last = nb.cells[-1].outputs[0]["data"]["text/plain"]
    assert last == "[]", last                                        # no TracedArray left
    print(f"notebook executed in {elapsed:.1f}s")


# --- ipython on the command line -----------------------------------------------------------
def _ipython(tmp_path, *args):
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"), PYTHONPATH=os.pathsep.join(
        [str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor",
                           "--HistoryManager.enabled=False", *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_ipython_command_line_with_config_autoload(tmp_path):
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text("c.InteractiveShellApp.extensions = "
                                               "['tracegrad']\n")
    lines = ["import numpy as np", "w = np.array([1.0, 2.0])",
             "%%grad loss wrt w --check\nr = w * 3\nloss = np.sum(r ** 2)"]
    p = _ipython(tmp_path, f"--InteractiveShellApp.exec_lines={json.dumps(lines)}", "-c",
                 "print('GRAD', dloss_dw.tolist(), type(r).__name__, type(w).__name__)")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "GRAD [18.0, 36.0] ndarray ndarray" in p.stdout
    assert "dloss_dw" in p.stdout and "✓" in p.stdout          # the pretty table was shown


def test_ipython_command_line_error_exits_nonzero(tmp_path):
    p = _ipython(tmp_path, "--ext", "tracegrad", "--InteractiveShellApp.exec_lines="
                 '["import numpy as np", "w = np.ones(2)"]', "-c",
                 "%%grad loss wrt w\nloss = np.sum(w)\nraise RuntimeError('cell failed')")
    assert p.returncode != 0
    assert "RuntimeError: cell failed" in p.stdout + p.stderr
    p = _ipython(tmp_path, "--ext", "tracegrad", "-c", "%%grad loss w\nloss = 1.0")
    assert "UsageError" in p.stdout + p.stderr
