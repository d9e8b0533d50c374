"""docs/supported.md is generated from the registry by tools/gen_supported.py and
must be up to date: regenerate it with ``python tools/gen_supported.py``."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "supported.md"
GEN = ROOT / "tools" / "gen_supported.py"


def _load_gen():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_supported", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_supported_md_is_up_to_date():
    # a fresh interpreter: rules registered at run time by other tests must not count
    res = subprocess.run([sys.executable, str(GEN), "--stdout"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    fresh, committed = res.stdout, DOC.read_text()
    try:
        import scipy.special  # noqa: F401
    except ImportError:       # the SciPy section exists only where SciPy is installed
        gen = _load_gen()
        fresh, committed = gen.strip_scipy(fresh), gen.strip_scipy(committed)
    assert fresh == committed, ("docs/supported.md is stale: run "
                                "`python tools/gen_supported.py` and commit the result")


def test_every_registered_function_and_the_allow_list_are_listed():
    import tracegrad  # noqa: F401
    from tracegrad.core.primitive import FUNCTION_HANDLERS, PRIMITIVES, UFUNC_PRIMS
    from tracegrad.rules.fallback import FALLBACK
    gen = _load_gen()
    text = DOC.read_text()
    # only what the rule tables register at import (tests may install rules at run time)
    funcs = [f for f, h in FUNCTION_HANDLERS.items()
             if (getattr(h, "__module__", "") or "").startswith(("tracegrad.rules", "numpy"))]
    funcs += [u for u, p in UFUNC_PRIMS.items() if PRIMITIVES.get(p.name) is p]
    for f in funcs:
        name = gen.public_name(f)
        if name.startswith("scipy.") and gen.SCIPY_HEADING not in text:
            continue
        assert f"`{name}`" in text, name
    for name in PRIMITIVES:
        if name.startswith("scipy.") and gen.SCIPY_HEADING not in text:
            continue
        assert f"`{name}`" in text, name
    allow = text.split("## `_implementation` allow-list")[1].split("\n## ")[0]
    for f in FALLBACK:
        assert f"`{gen.public_name(f)}`" in allow


@pytest.mark.parametrize("name, how", [
    ("np.sort", "composed handler"), ("np.convolve", "rule: `convolve`"),
    ("np.average", "NumPy's `_implementation` (allow-listed)"),
    ("np.argsort", "zero derivative"), ("np.sin", "elementwise rule `sin`"),
])
def test_classification(name, how):
    assert f"| `{name}` | {how} |" in DOC.read_text()
