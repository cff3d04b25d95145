"""ethermem.torch against real memory nodes: a model offloaded to the pool
with a local cache smaller than its weights gives the same outputs as the
plain model; weights stored under a name are mapped read-only by another
process; state dicts round-trip through a region; bad input is refused."""
import copy
import os
import subprocess
import sys
import unittest

import numpy as np
import torch

import ethermem
import ethermem.torch as et


def model(seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(6):
        layers += [torch.nn.Linear(512, 512), torch.nn.GELU()]
    m = torch.nn.Sequential(*layers, torch.nn.LayerNorm(512), torch.nn.BatchNorm1d(512))
    return m.eval()


class TestTorch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pool = ethermem.Pool()
        torch.manual_seed(1)
        cls.x = torch.randn(8, 512)

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()

    def test_offload_same_outputs_with_a_small_cache(self):
        plain = model()
        with torch.no_grad():
            want = plain(self.x)
        m = copy.deepcopy(plain)
        weights = sum(t.numel() * t.element_size() for t in m.state_dict().values())
        self.assertGreater(weights, 4 * (1 << 20))
        off = et.offload(m, self.pool, local_mem="1M", fetch_unit="64K")
        self.assertIs(m.ethermem_offload, off)
        # every parameter and buffer now views the mapping
        lo, hi = off.mapping.address, off.mapping.address + len(off.mapping)
        for t in list(m.parameters()) + list(m.buffers()):
            self.assertTrue(lo <= t.data_ptr() < hi)
        with torch.no_grad():
            got = m(self.x)
            again = m(self.x)
        self.assertTrue(torch.equal(got, want))
        self.assertTrue(torch.equal(again, want))
        st = off.stats()
        self.assertGreaterEqual(st["bytes_fetched"], weights)  # it came from the pool
        self.assertLessEqual(ethermem.map_stats()["resident"], 1 << 20)
        # the tensors hold the mapping: it cannot be unmapped under them, and
        # closing the pool leaves their memory in place until they go
        with self.assertRaises(BufferError):
            off.mapping.close()
        with ethermem.Pool() as pool2:
            m2 = copy.deepcopy(plain)
            et.offload(m2, pool2, local_mem="8M")
        with torch.no_grad():
            self.assertTrue(torch.equal(m2(self.x), want))
        del m2
        # gradients still flow through offloaded weights
        m.train()
        m(self.x).sum().backward()
        self.assertIsNotNone(m[0].weight.grad)

    def test_shared_weights_in_another_process(self):
        plain = model(seed=3)
        with torch.no_grad():
            want = plain(self.x)
        m = copy.deepcopy(plain)
        et.offload(m, self.pool, local_mem="64M", name="py-torch-shared")
        torch.save(self.x, os.path.join(os.environ["EM_TEST_TMP"], "x.pt"))
        script = f"""
import os, sys, torch, ethermem, ethermem.torch as et
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_torch import model
m = model(seed=99)  # other weights: all must come from the pool
with ethermem.Pool() as pool:
    off = et.load_shared(m, pool, "py-torch-shared", local_mem="2M")
    assert off.mapping.readonly
    x = torch.load(os.path.join(os.environ["EM_TEST_TMP"], "x.pt"))
    with torch.no_grad():
        y = m(x)
    torch.save(y, os.path.join(os.environ["EM_TEST_TMP"], "y.pt"))
"""
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
        got = torch.load(os.path.join(os.environ["EM_TEST_TMP"], "y.pt"))
        self.assertTrue(torch.equal(got, want))
        # a module of another shape is refused, not mis-mapped
        wrong = torch.nn.Sequential(torch.nn.Linear(512, 256))
        with self.assertRaises(ValueError):
            et.load_shared(wrong, self.pool, "py-torch-shared")
        m.ethermem_offload.mapping  # keep it alive until here

    def test_save_load_state_dict(self):
        sd = {
            "f32": torch.randn(3, 5),
            "bf16": torch.randn(7).to(torch.bfloat16),
            "i64": torch.arange(10),
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.empty(0, 4),
            "strided": torch.arange(20.0).reshape(4, 5).t(),
        }
        et.save(sd, self.pool, "py-torch-sd")
        et.save(sd, self.pool, "py-torch-sd")  # replaces
        back = et.load(self.pool, "py-torch-sd")
        self.assertEqual(list(back), list(sd))
        for k, t in sd.items():
            self.assertEqual(back[k].dtype, t.dtype, k)
            self.assertTrue(torch.equal(back[k], t), k)
        m = model()
        et.save(m.state_dict(), self.pool, "py-torch-model")
        m2 = model(seed=7)
        m2.load_state_dict(et.load(self.pool, "py-torch-model"))
        with torch.no_grad():
            self.assertTrue(torch.equal(m(self.x), m2(self.x)))

    def test_bad_input(self):
        with self.assertRaises(TypeError):
            et.offload("not a module", self.pool)
        with self.assertRaises(TypeError):
            et.offload(model(), "not a pool")
        with self.assertRaises(ValueError):
            et.offload(model(), self.pool, local_mem="lots")
        with self.assertRaises(ValueError):
            et.offload(torch.nn.ReLU(), self.pool)
        with self.assertRaises(TypeError):
            et.save({"a": 1}, self.pool, "py-torch-bad")
        with self.assertRaises(ethermem.Error):
            et.load(self.pool, "py-torch-missing")
        # regions not written by ethermem.torch, or with a corrupt index
        with self.pool.create(8192, name="py-torch-junk") as r:
            r.write(0, np.random.default_rng(0).integers(0, 255, 8192, dtype=np.uint8))
        with self.assertRaises(ValueError):
            et.load(self.pool, "py-torch-junk")
        with self.pool.open("py-torch-junk") as r:
            r.write(0, b"EMTORCH1" + (1 << 40).to_bytes(8, "little"))
        with self.assertRaises(ValueError):
            et.load(self.pool, "py-torch-junk")
        idx = b'{"tensors":[{"name":"a","dtype":"float32","shape":[1000000],"offset":0,"nbytes":4000000}]}'
        with self.pool.open("py-torch-junk") as r:
            r.write(0, b"EMTORCH1" + len(idx).to_bytes(8, "little") + idx)
        with self.assertRaises(ValueError):
            et.load(self.pool, "py-torch-junk")
        idx = b'{"tensors":[{"name":"a","dtype":"os.system","shape":[1],"offset":0,"nbytes":4}]}'
        with self.pool.open("py-torch-junk") as r:
            r.write(0, b"EMTORCH1" + len(idx).to_bytes(8, "little") + idx)
        with self.assertRaises(ValueError):
            et.load(self.pool, "py-torch-junk")

    def test_frombuffer_on_a_mapping(self):
        with self.pool.create(1 << 20) as r:
            t = torch.arange(1000, dtype=torch.float32)
            r.write(0, t.numpy())
            m = r.map(cache="4M")
            v = torch.frombuffer(m, dtype=torch.float32, count=1000)
            self.assertTrue(torch.equal(v, t))
            # given a memoryview, torch keeps a buffer view: close() refuses
            w = torch.frombuffer(memoryview(m), dtype=torch.float32, count=1000)
            with self.assertRaises(BufferError):
                m.close()
            del w
            v.mul_(2)  # writes go to the mapping, and back to the pool
            del v
            m.close()
            self.assertTrue(torch.equal(torch.frombuffer(bytearray(r.read(0, 4000)),
                                                         dtype=torch.float32), t * 2))


if __name__ == "__main__":
    unittest.main()
