"""Content-addressed kernel modules on disk, compiled with ``@njit(cache=True)``.

numba cannot cache functions built from ``exec``'d strings (numba#3501), so
each kernel's source is written to ``<cache dir>/tg_<key>.py`` and imported
from there; numba then keeps the compiled machine code in the
``__pycache__`` next to it, and a new process loads a kernel in
milliseconds instead of compiling it again.

``key`` hashes the source (which spells out the group's operations, dtypes,
rank, broadcast pattern and flags) together with the versions of numba,
llvmlite, Python, tracegrad and the runtime helpers (:mod:`.rt`), and the
host CPU. Files are created with a temporary name and ``os.link``-ed into
place (``os.replace`` where links are unsupported), so two processes
compiling the same kernel at once both succeed and the file's timestamp,
which numba's cache index checks, never changes after creation. numba writes
its own cache files the same way.

The directory is ``$TRACEGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/tracegrad``,
else ``~/.cache/tracegrad``; when it cannot be written a per-user temporary
directory is used.
"""
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading

_lock = threading.RLock()
_loaded = {}      # key -> kernel function
_dir = [None]
_stamp = [None]
#: counters for tests and benchmarks
STATS = {"loaded": 0, "written": 0, "memory_hits": 0}


def cache_dir():
    """The kernel directory (created on first use)."""
    env = os.environ.get("TRACEGRAD_CACHE_DIR")
    if _dir[0] is not None and _dir[0][0] == env:
        return _dir[0][1]
    if env:
        d = env
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tracegrad")
    d = os.path.join(d, "kernels")
    try:
        os.makedirs(d, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=d, prefix=".probe", delete=True)
        probe.close()
    except OSError:
        d = os.path.join(tempfile.gettempdir(), f"tracegrad-{os.getuid()}", "kernels")
        os.makedirs(d, exist_ok=True)
    _dir[0] = (env, d)
    return d


def version_stamp():
    """Everything besides the source that the compiled code depends on."""
    if _stamp[0] is None:
        import llvmlite
        import numba

        from .. import __version__
        from . import rt
        with open(rt.__file__, "rb") as f:
            rt_hash = hashlib.sha256(f.read()).hexdigest()[:16]
        try:
            import llvmlite.binding as ll
            cpu = ll.get_host_cpu_name()
        except Exception:  # pragma: no cover
            cpu = "?"
        _stamp[0] = (f"numba={numba.__version__} llvmlite={llvmlite.__version__} "
                     f"py={sys.version_info[:3]} tracegrad={__version__} rt={rt_hash} cpu={cpu}")
    return _stamp[0]


def key_of(source):
    h = hashlib.sha256()
    h.update(version_stamp().encode())
    h.update(b"\0")
    h.update(source.encode())
    return h.hexdigest()[:32]


def compiled_before(source, name="kernel"):
    """Whether ``source``'s kernel is loaded in this process or its machine
    code is in the disk cache (numba's index file next to the module), so
    that :func:`load` and the first call cost milliseconds, not a compile."""
    key = key_of(source)
    if key in _loaded:
        return True
    d = cache_dir()
    if not os.path.exists(os.path.join(d, f"tg_{key}.py")):
        return False
    try:
        names = os.listdir(os.path.join(d, "__pycache__"))
    except OSError:
        return False
    prefix = f"tg_{key}.{name}-"
    return any(f.startswith(prefix) and f.endswith(".nbi") for f in names)


def load(source, name="kernel"):
    """The function ``name`` defined by ``source``, through the disk cache."""
    key = key_of(source)
    fn = _loaded.get(key)
    if fn is not None:
        STATS["memory_hits"] += 1
        return fn
    with _lock:
        fn = _loaded.get(key)
        if fn is not None:
            return fn
        d = cache_dir()
        path = os.path.join(d, f"tg_{key}.py")
        if not os.path.exists(path):
            _write(path, source)
        modname = f"_tracegrad_kernels.tg_{key}"
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[modname] = mod
        fn = getattr(mod, name)
        _loaded[key] = fn
        STATS["loaded"] += 1
        return fn


def _write(path, source):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".py")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            pass
        except OSError:
            if not os.path.exists(path):
                os.replace(tmp, path)
                tmp = None
        STATS["written"] += 1
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def clear_memory():
    """Forget loaded kernels (the files stay): the next load reads the disk cache."""
    with _lock:
        _loaded.clear()
