"""
The helpers each model's flop_rows uses to list its components (flops.py's docstring states the counting rules).
Their own small file with no imports from the project, so that model files import them at the top without an
import cycle (flops.py imports the model registry).
"""
from collections import namedtuple

# one component: forward and backward FLOPs, split into what torch's counter sees (matmul/SDPA/conv) and the rest.
# Each model class lists its own components with these helpers (flop_rows in model_*.py), by the rules above.
Row = namedtuple('Row', 'group name fwd_mm fwd_other bwd_mm bwd_other')


def linear(group, name, m, k, n, bias=True, extra=0):
    """x (m, k) @ W (k, n) [+ b]; extra: further elementwise FLOPs of the same component."""
    mm, other = 2 * m * k * n, (m * n if bias else 0) + extra
    return Row(group, name, mm, other, 2 * mm, 2 * other)


def elementwise(group, name, count):
    return Row(group, name, 0, count, 0, 2 * count)
