#!/usr/bin/python3
"""A PyTorch model whose weights are several times the local memory budget,
run three ways with the same seed and input:

  local  everything in memory (the reference output and time);
  mmap   the weights in a file, mmap'ed, in a child whose memory a cgroup
         limits to the budget (the file's page cache dropped first);
  swap   the weights in anonymous memory of such a child, with a swap file
         taking what does not fit;
  pool   ethermem.torch.load_shared in such a child: the weights stay in the
         pool, mapped read-only, with the local cache set to the budget.

Every child's output must equal the local one bit for bit; the time of the
first forward pass and of the later ones is printed per mode. With
--rounds N the children run N times, the modes interleaved and their order
reversed every other round, so that a machine whose load changes over the
run weighs on every mode alike; the medians over the rounds are printed.

On a virtual machine the weights file's "disk" is a file of the host, whose
page cache the guest cannot drop: the first read of a fresh file comes from
the host's disk, later ones from its memory. So that the mmap and swap
children do not see a cache state left by whichever ran before them, the
parent reads the file once after writing it (the host then holds it, the
baseline's most favourable case) and every child drops the guest's cache. The model is a
stack of Linear+GELU layers: every pass reads every weight once, in order,
which is what a model that does not fit does to whatever backs it.

Needs root (cgroup v1 memory controller, swapon), ETHERMEM_NODES and
ETHERMEM_SECRET_FILE naming a pool with room for the weights, and the
ethermem package (scripts/python.sh, or PYTHONPATH=build/python).

  examples/torch_offload.py [--layers 16] [--dim 2048] [--ratio 0.25] [--passes 4] [--rounds 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import ethermem
import ethermem.torch as et

CG = "/sys/fs/cgroup/memory"
SLACK = 16 << 20  # the interpreter's own allocations after joining the cgroup
REGION = "torch-offload-demo"


def build(layers, dim, init=True):
    torch.manual_seed(1234)
    mods = []
    for _ in range(layers):
        lin = torch.nn.Linear(dim, dim) if init else torch.nn.utils.skip_init(torch.nn.Linear, dim, dim)
        mods += [lin, torch.nn.GELU()]
    return torch.nn.Sequential(*mods).eval()


def run(model, x, passes):
    times, y = [], None
    with torch.no_grad():
        for _ in range(passes):
            t = time.perf_counter()
            y = model(x)
            times.append(time.perf_counter() - t)
    return y, times


def child(a):
    model = build(a.layers, a.dim, init=False)  # untouched memory, replaced below
    x = torch.load(os.path.join(a.dir, "x.pt"))
    torch.set_num_threads(1)
    # from here on, what this process touches counts against the budget
    with open(os.path.join(a.cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    params = list(model.parameters())
    if a.child == "pool":
        pool = ethermem.Pool()
        off = et.load_shared(model, pool, REGION, local_mem=a.budget, fetch_unit="2M")
    else:
        path = os.path.join(a.dir, "weights.f32")
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # start cold
        os.close(fd)
        if a.child == "mmap":
            flat = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c"))
        else:  # swap: read it all into anonymous memory; the excess is swapped out
            flat = torch.empty(os.path.getsize(path) // 4, dtype=torch.float32)
            with open(path, "rb", buffering=0) as f:
                view = flat.numpy().view(np.uint8)
                for o in range(0, view.nbytes, 8 << 20):
                    f.readinto(view[o:o + (8 << 20)])
        o = 0
        with torch.no_grad():
            for p in params:
                p.data = flat[o:o + p.numel()].view(p.shape)
                o += p.numel()
    y, times = run(model, x, a.passes)
    torch.save(y, os.path.join(a.dir, f"y-{a.child}.pt"))
    out = {"mode": a.child, "first_s": times[0], "later_s": statistics.median(times[1:])}
    if a.child == "pool":
        out["fetched_mb"] = off.stats()["bytes_fetched"] >> 20
    print(json.dumps(out), flush=True)


def cgroup(name, limit):
    path = os.path.join(CG, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
        f.write(str(limit))
    return path


def swap_on(path, size):
    subprocess.run(["fallocate", "-l", str(size), path], check=True)
    os.chmod(path, 0o600)
    subprocess.run(["mkswap", path], check=True, capture_output=True)
    subprocess.run(["swapon", path], check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--ratio", type=float, default=0.25, help="local budget / weight bytes")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="runs of each non-local mode, interleaved")
    ap.add_argument("--modes", default="local,mmap,swap,pool")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cgroup", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    if a.passes < 2:
        ap.error("--passes must be at least 2")
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    modes = a.modes.split(",")
    model = build(a.layers, a.dim)
    weights = sum(p.numel() * 4 for p in model.parameters())
    budget = int(weights * a.ratio)
    work = os.path.join(a.dir, f"ethermem-torch-demo.{os.getpid()}")
    os.makedirs(work)
    torch.set_num_threads(1)  # the same for every mode; the children use one too
    torch.manual_seed(99)
    x = torch.randn(4, a.dim)
    torch.save(x, os.path.join(work, "x.pt"))
    print(f"# {a.layers} layers of {a.dim}x{a.dim}: {weights >> 20} MiB of weights, "
          f"local budget {budget >> 20} MiB ({a.ratio:.0%}), {a.passes} passes, batch 4")
    rows, ref = [], None
    want, times = run(model, x, a.passes)
    rows.append({"mode": "local", "first_s": times[0], "later_s": statistics.median(times[1:])})
    need_root = [m for m in modes if m != "local"]
    if need_root and (os.geteuid() != 0 or not os.path.isdir(CG)):
        print(f"# skipping {need_root}: needs root and the cgroup v1 memory controller")
        modes = ["local"]
    swapfile = os.path.join(work, "swap")
    cg = f"ethermem-torch-demo-{os.getpid()}"
    try:
        if "mmap" in modes or "swap" in modes:
            with open(os.path.join(work, "weights.f32"), "wb") as f:
                for p in model.parameters():
                    f.write(p.detach().numpy().tobytes())
                f.flush()
                os.fsync(f.fileno())
            # the host's cache (see above) holds the file from here on
            with open(os.path.join(work, "weights.f32"), "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass
        if "pool" in modes:
            with ethermem.Pool() as pool:
                et.save(dict(model.named_parameters()), pool, REGION)
        if "swap" in modes:
            try:
                swap_on(swapfile, weights + (256 << 20))
            except (subprocess.CalledProcessError, OSError) as e:
                print(f"# skipping swap: cannot enable a swap file in {a.dir}: {e}")
                modes.remove("swap")
        children = [m for m in modes if m != "local"]
        runs = {m: [] for m in children}
        order = []
        for r in range(a.rounds):
            order += children if r % 2 == 0 else children[::-1]
        for mode in order:
            path = cgroup(cg, budget + SLACK)
            try:
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode,
                                    "--cgroup", path, "--budget", str(budget), "--dir", work,
                                    "--layers", str(a.layers), "--dim", str(a.dim),
                                    "--passes", str(a.passes)],
                                   capture_output=True, text=True, timeout=1800)
            finally:
                os.rmdir(path)
            if p.returncode:
                print(f"# {mode} failed ({p.returncode}): {p.stderr.strip()[-600:]}")
                runs[mode].append({"mode": mode, "failed": True})
                continue
            row = json.loads(p.stdout.strip().splitlines()[-1])
            row["identical"] = bool(torch.equal(torch.load(os.path.join(work, f"y-{mode}.pt")), want))
            if a.rounds > 1:
                print(f"# {mode}: first {row['first_s']:.3f} s, later {row['later_s']:.3f} s",
                      flush=True)
            runs[mode].append(row)
        for mode in children:
            done = [r for r in runs[mode] if not r.get("failed")]
            if len(done) < len(runs[mode]):
                rows.append({"mode": mode, "failed": True})
                continue
            row = dict(done[0])
            row["first_s"] = statistics.median(r["first_s"] for r in done)
            row["later_s"] = statistics.median(r["later_s"] for r in done)
            row["identical"] = all(r["identical"] for r in done)
            row["rounds"] = [[r["first_s"], r["later_s"]] for r in done]
            rows.append(row)
    finally:
        if os.path.exists(swapfile):
            subprocess.run(["swapoff", swapfile], capture_output=True)
        if "pool" in modes:
            try:
                with ethermem.Pool() as pool:
                    pool.delete(REGION)
            except ethermem.Error:
                pass
        subprocess.run(["rm", "-rf", work])
    base = {r["mode"]: r for r in rows if not r.get("failed")}
    print(f"{'mode':6} {'first pass s':>12} {'later pass s':>12} {'x local':>8} {'identical':>9}")
    for r in rows:
        if r.get("failed"):
            print(f"{r['mode']:6} {'failed':>12}")
            continue
        print(f"{r['mode']:6} {r['first_s']:12.3f} {r['later_s']:12.3f} "
              f"{r['later_s'] / base['local']['later_s']:8.1f} {str(r.get('identical', True)):>9}")
    if "pool" in base:
        for m in ("mmap", "swap"):
            if m in base:
                print(f"# pool is {base[m]['later_s'] / base['pool']['later_s']:.2f}x as fast as {m} "
                      f"(later passes), {base[m]['first_s'] / base['pool']['first_s']:.2f}x on the first")
    print(json.dumps({"rows": rows, "weights": weights, "budget": budget}))
    if any(r.get("failed") or r.get("identical") is False for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
