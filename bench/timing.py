"""
The one timing method of the benchmarks: variants called in rounds, medians of wall and CPU time.

    times = timing.run_rounds({'a': fn_a, 'b': fn_b}, rounds=5, device='cpu')
    wall, cpu = times['a'].median          # seconds per call

Every variant is first called `warmup` times (kernels, allocator pools, caches). Then each round calls every variant
`block` times in a row, the variants always in the same order: at block=1 a round-robin, so a shared machine's slow
drift (other processes, clock changes) touches every variant alike. With block > 1 only the calls after the first of
each block are timed: every timed call then follows a call of the same variant, the steady state of a training loop.
Each timed call is bracketed by hardware.synchronize(device) and measures the wall time (time.perf_counter) and the
CPU time of this process (time.process_time). The CPU time leaves out the time the process waited descheduled, so at
one thread on a busy machine it is the steadier of the two; on a GPU it is not meaningful. A variant's summary is the
median over its timed calls (robust to the few calls a busy machine disturbs); the best (minimum) is kept too.
"""
import statistics
import time
from typing import NamedTuple

import hardware


class Timing(NamedTuple):
    wall: list      # seconds per timed call
    cpu: list       # CPU seconds of this process per timed call

    @property
    def median(self):
        """(median wall seconds, median CPU seconds) per call."""
        return statistics.median(self.wall), statistics.median(self.cpu)

    @property
    def best(self):
        """(fastest wall seconds, fewest CPU seconds) per call."""
        return min(self.wall), min(self.cpu)

    def summary(self):
        """The medians and bests in milliseconds, for a results file."""
        (w, c), (bw, bc) = self.median, self.best
        return {'wall_ms': w * 1e3, 'cpu_ms': c * 1e3, 'best_wall_ms': bw * 1e3, 'best_cpu_ms': bc * 1e3,
                'calls': len(self.wall)}


def run_rounds(variants, rounds, block=1, warmup=1, device='cpu'):
    """variants: {name: fn()}; -> {name: Timing} over rounds x block calls each (rounds x (block - 1) if block > 1)."""
    if rounds < 1 or block < 1 or warmup < 0:
        raise ValueError(f"rounds and block must be >= 1 and warmup >= 0, not {rounds}, {block}, {warmup}")
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: Timing([], []) for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for i in range(block):
                hardware.synchronize(device)
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                hardware.synchronize(device)
                if block == 1 or i > 0:
                    times[name].wall.append(time.perf_counter() - t0)
                    times[name].cpu.append(time.process_time() - c0)
    return times


def train_step(model, x, y, optimizer='adamw', lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), clip=0.5,
               dtype='float32', device='cpu'):
    """-> a function running one training step as train.py does (no gradient accumulation, no GradScaler): the
    model's fused training loss model(x, y) under the run's autocast, backward, clipping, optim.build's optimizers;
    on a CPU with freed memory kept in the heap (hardware.keep_freed_memory), as train.py runs."""
    import torch
    import optim
    if hardware.device_type(device) == 'cpu':
        hardware.keep_freed_memory()
    model.train()
    opts = optim.build(model, optimizer, lr, weight_decay, betas, device_type=hardware.device_type(device))
    ctx = hardware.autocast(device, dtype)

    def step():
        with ctx:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step
