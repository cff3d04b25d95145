"""linear.py LAYERS DIM PASSES: a stack of PyTorch Linear layers run
forward PASSES times over one fixed batch. Every pass reads every weight in
the same order, with GEMMs walking each matrix in blocks: a cache that only
sees the stream evicts what the next pass reuses. Prints a digest of the
outputs, which must be the same under every memory tier."""
import hashlib
import sys

import torch

layers, dim, passes = (int(a) for a in sys.argv[1:4])
torch.manual_seed(1)
torch.set_num_threads(1)  # one thread: the same sums in the same order every run
with torch.no_grad():
    net = torch.nn.Sequential(*[torch.nn.Linear(dim, dim) for _ in range(layers)])
    x = torch.randn(64, dim)
    h = hashlib.sha256()
    for _ in range(passes):
        y = net(x)
        h.update(y.numpy().tobytes())
        x = torch.tanh(y)
print(h.hexdigest())
