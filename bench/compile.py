"""
torch.compile against eager for every registered model: the time to the first compiled training step, and the step
time of both, in one run. Its results file decides train.py's compile='auto' (hardware.choose_compile).

    python bench/compile.py                                   # writes results/<device type>/compile.json
    python bench/compile.py --models=newllm --rounds=3 --json=    # one model, print only

Each model at its config/cmp_<model>.py size (the model fields of that file; models without one: their defaults),
vocab_size --vocab_size (the cmp configs' word-1000 data), dropout as configured, float32, batch --batch_size x
block_size random tokens (speed does not depend on the data). A step is train.py's (bench/timing.py train_step:
model(x, y) under the run's autocast, backward, clipping, AdamW). Two copies of the model from the same
initialisation: one eager, one compiled as train.py compiles it (hardware.compile_model: torch.compile of the model,
inductor, default mode; on a CPU random numbers from eager's ops, or with --inductor_rng from inductor's generated
code). compile_s: the wall time of the compiled copy's first step (tracing, compilation, one step), with
inductor's on-disk caches off: a cold compile. Then
bench/timing.run_rounds, round-robin, after one warm-up step of each: the median step of each and
speedup = eager / compiled (wall time; CPU time beside it). Where compilation is the slower, train.py's 'auto' keeps
the model eager. Why a speedup is or is not possible: matmul_ms, the step's matmul FLOPs (flops.py) at this
device's measured float32 matmul rate (hardware.py), is time that fusion cannot remove, so
speedup_bound = eager / matmul_ms is the most any compiler could give (fusing every other op away entirely). On a
CPU, one eager step under torch.profiler also gives opaque_share, the share of the step inside the kernels the
compiler calls as they are (the project's custom ops linlm::*: New-LLM's token loop, the BK-Core, the fused loss; and
nn.LSTM's fused kernel) plus the matmuls outside them, and opaque_bound = 1 / opaque_share: the most compilation can
give this model here.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch._inductor.config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checkpoint as ckpt_io  # noqa: E402
import configurator  # noqa: E402
import flops  # noqa: E402
import hardware  # noqa: E402
from bench import timing  # noqa: E402
from cli import fail  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmp_model_args(model_type, vocab_size):
    """The model fields config/cmp_<model_type>.py sets (its block_size included), with vocab_size."""
    path = os.path.join(ROOT, 'config', f'cmp_{model_type}.py')
    fields = ckpt_io.config_fields(model_type)
    args = {}
    if os.path.isfile(path):
        args = {k: v for k, v in configurator.script_defaults(path).items() if k in fields}
    return dict(args, vocab_size=vocab_size)


MATMULS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm')
KERNELS = ('linlm::', 'aten::lstm', 'aten::mkldnn_rnn_layer')   # called as they are: the custom ops, nn.LSTM's kernel


def opaque_share(step):
    """One step under torch.profiler (CPU) -> the share of its time that compilation cannot change: inside the
    kernels it calls as they are (KERNELS: the custom ops linlm::*, nn.LSTM's fused kernel; their loops and matmuls
    included) and in the matmuls outside them."""
    def inside(e, names):
        while e.cpu_parent is not None:
            e = e.cpu_parent
            if e.name.startswith(names):
                return True
        return False
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        wall_us = (time.perf_counter() - t0) * 1e6
    fixed_us = sum(e.cpu_time_total for e in prof.events()
                   if (e.name.startswith(KERNELS) and not inside(e, KERNELS))
                   or (e.name in MATMULS and not inside(e, KERNELS + MATMULS)))
    return fixed_us / wall_us


def bench_model(model_type, model_args, batch_size, rounds, device, matmul_rate, inductor_rng=False):
    """-> the results row of one model (see the module docstring)."""
    torch.manual_seed(0)
    eager = ckpt_io.build_model(model_type, model_args).to(device)
    compiled_raw = ckpt_io.build_model(model_type, model_args).to(device)
    compiled_raw.load_state_dict(eager.state_dict())
    T = eager.config.block_size
    x = torch.randint(0, model_args['vocab_size'], (batch_size, T), device=device)
    y = torch.randint(0, model_args['vocab_size'], (batch_size, T), device=device)
    torch._dynamo.reset()
    step_eager = timing.train_step(eager, x, y, device=device)
    step_compiled = timing.train_step(hardware.compile_model(compiled_raw, device, inductor_rng), x, y, device=device)
    hardware.synchronize(device)
    t0 = time.perf_counter()
    step_compiled()
    hardware.synchronize(device)
    compile_s = time.perf_counter() - t0
    times = timing.run_rounds({'eager': step_eager, 'compiled': step_compiled}, rounds, device=device)
    (we, ce), (wc, cc) = times['eager'].median, times['compiled'].median
    # what compilation can remove: the step's time outside its matmuls (fusion does not make a matmul faster)
    counts = flops.step_flops(model_type, model_args, batch_size, T, device_type=hardware.device_type(device))
    matmul_s = (counts['forward_matmul'] + counts['backward_matmul']) / matmul_rate
    share = opaque_share(step_eager) if hardware.device_type(device) == 'cpu' else None
    return dict(model=model_type, model_args=model_args, batch_size=batch_size, block_size=T,
                compile_s=round(compile_s, 2), speedup=round(we / wc, 3), cpu_speedup=round(ce / cc, 3),
                matmul_ms=round(matmul_s * 1e3, 1), speedup_bound=round(we / matmul_s, 2),
                opaque_share=share and round(share, 3), opaque_bound=share and round(1 / share, 2),
                eager=times['eager'].summary(), compiled=times['compiled'].summary())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--models', default=','.join(ckpt_io.MODELS), help='comma-separated model types')
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--vocab_size', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (CPU)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--inductor_rng', action='store_true',
                        help="random numbers from inductor's generated code, not eager's ops (hardware.compile_model)")
    parser.add_argument('--json', default=None,
                        help="results file (default results/<device type>/compile.json; '' = print only)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(',') if m]
    for m in models:
        if m not in ckpt_io.MODELS:
            fail(f"unknown model {m!r}; choose from {', '.join(ckpt_io.MODELS)}")
    if args.rounds < 1 or args.batch_size < 1 or args.threads < 1:
        fail("--rounds, --batch_size and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch._inductor.config.force_disable_caches = True     # compile_s is a cold compile, as on a fresh machine
    device_type = hardware.device_type(args.device)
    out = args.json if args.json is not None else os.path.join(ROOT, 'results', device_type, 'compile.json')
    rate = hardware.measured_rates(args.device, ('float32',))['float32'][0]
    rows = []
    print(f"{'model':<10} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} {'speedup':>7} {'cpu speedup':>11} "
          f"{'matmul ms':>9} {'bound':>6} {'opaque':>6} {'bound':>6}")
    for m in models:
        row = bench_model(m, cmp_model_args(m, args.vocab_size), args.batch_size, args.rounds, args.device, rate,
                          args.inductor_rng)
        rows.append(row)
        print(f"{m:<10} {row['compile_s']:>9.1f} {row['eager']['wall_ms']:>9.1f} {row['compiled']['wall_ms']:>11.1f} "
              f"{row['speedup']:>6.2f}x {row['cpu_speedup']:>10.2f}x {row['matmul_ms']:>9.1f} "
              f"{row['speedup_bound']:>5.2f}x {row['opaque_share'] or 0:>6.2f} {row['opaque_bound'] or 0:>5.2f}x", flush=True)
    if out:
        from checkpoint import atomic_write_text
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        atomic_write_text(json.dumps(dict(
            command='python ' + ' '.join(['bench/compile.py'] + (sys.argv[1:] if argv is None else argv)),
            machine=hardware.machine_info(args.device), date=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
            torch=torch.__version__, threads=args.threads, matmul_flops_per_s=rate, rounds=args.rounds, dtype='float32', device_type=device_type,
            inductor_rng=args.inductor_rng,
            rows=rows), indent=1) + '\n', out)


if __name__ == '__main__':
    main()
