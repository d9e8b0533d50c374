"""In-place updates (issue #4): 1,000 slice updates of a 1e6-element array,
in place versus the out-of-place equivalent. Target: in-place <= 1.5x the
out-of-place time and no full copy of the base per write."""
import numpy as np

N = 10 ** 6
STEPS = 1000


def inplace(x):
    u = x.copy()
    for k in range(STEPS):
        i = (k * 997) % (N - 100)
        u[i:i + 100] = u[i:i + 100] * 0.99 + 0.01
    return np.sum(u ** 2)


def out_of_place(x):
    u = x
    for k in range(STEPS):
        i = (k * 997) % (N - 100)
        u = np.concatenate([u[:i], u[i:i + 100] * 0.99 + 0.01, u[i + 100:]])
    return np.sum(u ** 2)


class SliceUpdates:
    params = ["inplace", "out_of_place"]
    param_names = ["style"]
    timeout = 300

    def setup(self, style):
        import tracegrad as tg
        self.x = np.random.default_rng(0).uniform(size=N)
        self.g = tg.grad(inplace if style == "inplace" else out_of_place)

    def time_grad(self, style):
        self.g(self.x)

    def peakmem_grad(self, style):
        self.g(self.x)
