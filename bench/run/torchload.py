"""torchload.py save FILE LAYERS DIM | torchload.py load FILE: writes a
state dict of LAYERS Linear(DIM) layers to FILE (setup, run once plainly),
or loads it with torch.load and runs one forward pass. Prints a digest of
the output."""
import hashlib
import sys

import torch

torch.set_num_threads(1)
torch.manual_seed(2)
if sys.argv[1] == "save":
    layers, dim = int(sys.argv[3]), int(sys.argv[4])
    net = torch.nn.Sequential(*[torch.nn.Linear(dim, dim) for _ in range(layers)])
    torch.save({"dim": dim, "layers": layers, "state": net.state_dict()}, sys.argv[2])
    sys.exit(0)
ck = torch.load(sys.argv[2])
dim, layers = ck["dim"], ck["layers"]
with torch.no_grad():
    net = torch.nn.Sequential(*[torch.nn.Linear(dim, dim) for _ in range(layers)])
    net.load_state_dict(ck["state"])
    del ck
    y = net(torch.randn(64, dim))
print(hashlib.sha256(y.numpy().tobytes()).hexdigest())
