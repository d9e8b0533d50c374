"""Run the asv benchmark classes in this process and print a table of
min-of-repeats timings (and peak RSS deltas for peakmem_*): the numbers
quoted in closing notes. Usage:

    python asv_benchmarks/quick.py [module-substring ...] [--repeat N]

Peers (autograd, mygrad, jax, torch) are measured when importable in the
running interpreter; otherwise their rows say "skipped".
"""
import argparse
import importlib
import inspect
import itertools
import os
import pkgutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run_class(cls, repeat, out):
    params = getattr(cls, "params", [None])
    names = getattr(cls, "param_names", [])
    if params and not isinstance(params[0], (list, tuple)) and params != [None]:
        params = [params]
    combos = list(itertools.product(*params)) if params != [None] else [()]
    for combo in combos:
        inst = cls()
        label = ", ".join(f"{n}={v}" for n, v in zip(names, combo))
        try:
            if hasattr(inst, "setup"):
                inst.setup(*combo)
        except NotImplementedError as e:
            out.append((cls.__name__, label, "skipped", str(e).split(":")[0]))
            continue
        for name, meth in inspect.getmembers(inst, inspect.ismethod):
            if name.startswith("time_"):
                ts = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    meth(*combo)
                    ts.append(time.perf_counter() - t)
                out.append((cls.__name__, label, name, f"{min(ts) * 1e3:.3f} ms"))
                print(f"{cls.__name__:18s} {label:40s} {name:24s} {min(ts) * 1e3:10.3f} ms",
                      flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("select", nargs="*")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    import benchmarks
    out = []
    for m in pkgutil.iter_modules(benchmarks.__path__):
        if not m.name.startswith("bench_"):
            continue
        if a.select and not any(s in m.name for s in a.select):
            continue
        mod = importlib.import_module(f"benchmarks.{m.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and any(k.startswith("time_") for k in dir(cls)):
                run_class(cls, a.repeat, out)
    for row in out:
        if row[2] == "skipped":
            print(f"{row[0]:18s} {row[1]:40s} skipped ({row[3]})")


if __name__ == "__main__":
    main()
