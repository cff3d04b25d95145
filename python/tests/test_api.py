"""The Python API against two real memory nodes (run.sh starts them and sets
ETHERMEM_NODES / ETHERMEM_SECRET_FILE): regions, zero-copy reads and writes,
atomics, the batch queue, mappings viewed by NumPy, the KV block store,
errors and bad arguments,
and that waiting on the network leaves the GIL to other threads."""
import errno
import os
import signal
import threading
import time
import unittest

import numpy as np

import ethermem


class Base(unittest.TestCase):
    def setUp(self):
        self.pool = ethermem.Pool()

    def tearDown(self):
        self.pool.close()


class TestPool(Base):
    def test_from_environment_and_kwargs(self):
        self.assertEqual(self.pool.nodes, 2)
        nodes = os.environ["ETHERMEM_NODES"].split(",")
        with ethermem.Pool(nodes=nodes, secret_file=os.environ["ETHERMEM_SECRET_FILE"],
                           transport="tcp", timeout_ms=5000) as p:
            self.assertEqual(p.nodes, 2)
        self.assertTrue(p.closed)
        with ethermem.Pool(nodes=nodes[0]) as p:
            self.assertEqual(p.nodes, 1)
        with self.assertRaises(ValueError):
            p.create(4096)

    def test_wrong_secret_is_an_error_with_errno(self):
        path = os.path.join(os.environ["EM_TEST_TMP"], "other-secret")
        with open(path, "w") as f:
            f.write("not the cluster's secret at all, 40 bytes\n")
        os.chmod(path, 0o600)  # a readable secret would be refused before the node sees it
        with self.assertRaises(ethermem.Error) as cm:
            ethermem.Pool(secret_file=path)
        self.assertEqual(cm.exception.errno, ethermem.EAUTH)
        self.assertEqual(cm.exception.strerror, ethermem.strerror(ethermem.EAUTH))
        self.assertIsInstance(cm.exception, OSError)

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            ethermem.Pool(nodes=5)
        with self.assertRaises(TypeError):
            ethermem.Pool(secret_file=3)
        with self.assertRaises(ValueError):
            ethermem.Pool(transport="carrier-pigeon")
        with self.assertRaises(ValueError):
            ethermem.Pool(timeout_ms=-1)
        with self.assertRaises(TypeError):
            ethermem.Pool(encrypt="yes")
        with self.assertRaises(TypeError):
            ethermem.Pool(etcd=2379)
        with self.assertRaises(TypeError):
            ethermem.Pool(cluster=["a"])
        with self.assertRaises(ValueError):
            self.pool.create(0)
        with self.assertRaises(ValueError):
            self.pool.create("lots")
        with self.assertRaises(ValueError):
            self.pool.create(-5)
        with self.assertRaises(TypeError):
            self.pool.create(4096.0)
        with self.assertRaises(ValueError):
            self.pool.create(4096, name="x" * 64)
        with self.assertRaises(ValueError):
            self.pool.queue(depth=0)

    @unittest.skipUnless(os.environ.get("EM_TEST_ETCD_URL"), "no etcd (scripts/deps.sh)")
    def test_etcd_cluster_and_encrypt(self):
        # the pool from etcd alone: no node list anywhere
        url, cluster = os.environ["EM_TEST_ETCD_URL"], os.environ["EM_TEST_CLUSTER"]
        nodes = os.environ.pop("ETHERMEM_NODES")
        try:
            with ethermem.Pool(etcd=url, cluster=cluster, encrypt=True,
                               secret_file=os.environ["ETHERMEM_SECRET_FILE"]) as p:
                self.assertEqual(p.nodes, 1)
                self.assertEqual(p.status()[0]["capacity"], 64 << 20)
                with p.create(1 << 20, name="from-etcd") as r:
                    r.write(4096, b"found through etcd")
                self.assertIn("from-etcd", [x["name"] for x in p.regions()])
                with p.open("from-etcd") as r:
                    self.assertEqual(r.read(4096, 18), b"found through etcd")
                p.delete("from-etcd")
            # the node requires encryption: a client that refuses it is refused
            with self.assertRaises(ethermem.Error) as cm:
                ethermem.Pool(etcd=url, cluster=cluster, encrypt=False)
            self.assertEqual(cm.exception.errno, ethermem.ECRYPT)
            # another cluster's name finds no node
            with self.assertRaises(ethermem.Error):
                ethermem.Pool(etcd=url, cluster=cluster + "-none", timeout_ms=500)
        finally:
            os.environ["ETHERMEM_NODES"] = nodes
        # etcd given as an argument replaces the node list of the environment
        with ethermem.Pool(etcd=url, cluster=cluster, encrypt=True) as p:
            self.assertEqual(p.nodes, 1)

    def test_status(self):
        st = self.pool.status()
        self.assertEqual(len(st), 2)
        for node in st:
            self.assertEqual(node["capacity"], 256 << 20)
            self.assertGreaterEqual(node["clients"], 1)
            self.assertIn("read", node["ops"])
            self.assertIn("p99", node["latency_ns"]["read"])
        self.assertEqual(sorted(st[0]["ops"]), sorted(["read", "write", "atomic", "create",
                                                       "open", "delete", "list", "status"]))


class TestRegions(Base):
    def test_create_open_list_delete(self):
        # more than one node holds: striped over both, in 1 MiB chunks
        r = self.pool.create("300M", name="py-regions", chunk_size="1M")
        self.assertEqual(r.size, 300 << 20)
        self.assertEqual(r.name, "py-regions")
        listed = {d["name"]: d for d in self.pool.regions()}
        self.assertEqual(listed["py-regions"]["size"], 300 << 20)
        self.assertEqual(listed["py-regions"]["chunk_size"], 1 << 20)
        self.assertEqual(listed["py-regions"]["nodes"], 2)
        data = np.random.default_rng(1).integers(0, 255, 8 << 20, dtype=np.uint8)
        self.assertEqual(r.write(100 << 20, data), data.nbytes)
        with self.pool.open("py-regions") as r2:
            self.assertEqual(r2.read(100 << 20, 8 << 20), data.tobytes())
        with self.assertRaises(ethermem.Error) as cm:
            self.pool.create("300M", name="py-regions", exclusive=True)
        self.assertEqual(cm.exception.errno, errno.EEXIST)
        r.close()
        self.assertTrue(r.closed)
        with self.assertRaises(ValueError):
            r.read(0, 1)
        self.pool.delete("py-regions")
        self.assertNotIn("py-regions", [d["name"] for d in self.pool.regions()])
        with self.assertRaises(ethermem.Error) as cm:
            self.pool.open("py-regions")
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        self.assertEqual(cm.exception.strerror, ethermem.strerror(errno.ENOENT))

    def test_redundancy(self):
        # two copies, one on each node: listed as such, bytes the same
        r = self.pool.create("8M", name="py-rep", redundancy="replicate:2")
        d = {x["name"]: x for x in self.pool.regions()}["py-rep"]
        self.assertEqual(d["redundancy"], "replicate:2")
        self.assertEqual(d["state"], "healthy")
        self.assertEqual(self.pool.regions()[0]["epoch"] >= 0, True)
        data = bytes(range(256)) * 16
        r.write(4096, data)
        self.assertEqual(r.read(4096, len(data)), data)
        r.close()
        self.pool.delete("py-rep")
        plain = {x["name"]: x for x in self.pool.regions()}
        self.assertNotIn("py-rep", plain)
        for bad in ("replicate:1", "ec:", "mirror", "replicate:3x"):
            with self.assertRaises(ValueError):
                self.pool.create("1M", name="py-bad", redundancy=bad)
        with self.assertRaises(TypeError):
            self.pool.create("1M", redundancy=3)
        # three copies cannot be placed on two nodes
        with self.assertRaises(ethermem.Error):
            self.pool.create("1M", name="py-rep3", redundancy="replicate:3")

    def test_buffers_in_place(self):
        with self.pool.create(1 << 20) as r:
            self.assertIsNone(r.name)
            src = np.arange(4096, dtype=np.int64)
            r.write(4096, src)
            # into the middle of a bigger buffer, through a memoryview slice:
            # the bytes land where the view points, nowhere else
            big = bytearray(b"\xee" * (3 * 8192))
            self.assertEqual(r.readinto(4096, memoryview(big)[8192:16384]), 8192)
            self.assertEqual(bytes(big[:8192]), b"\xee" * 8192)
            self.assertEqual(bytes(big[16384:]), b"\xee" * 8192)
            self.assertTrue(np.array_equal(np.frombuffer(big, np.int64, 1024, 8192), src[:1024]))
            # numpy arrays, both orders, both directions
            f = np.asfortranarray(np.arange(64, dtype=np.float32).reshape(8, 8))
            r.write(0, f)
            g = np.empty((8, 8), np.float32, order="F")
            r.readinto(0, g)
            self.assertTrue(np.array_equal(f, g))
            self.assertEqual(r.read(0, 4), np.float32(0).tobytes())

    def test_bad_buffers_and_ranges(self):
        with self.pool.create(65536) as r:
            with self.assertRaises(TypeError):
                r.readinto(0, b"read-only bytes")
            with self.assertRaises(TypeError):
                r.write(0, 12345)
            with self.assertRaises(TypeError):
                r.readinto(0, np.zeros((8, 8))[:, ::2])  # not contiguous
            with self.assertRaises(ValueError):
                r.read(65536, 1)
            with self.assertRaises(ValueError):
                r.write(65530, b"0123456789")
            with self.assertRaises(ValueError):
                r.read(-1, 1)
            with self.assertRaises(TypeError):
                r.read("0", 1)
            with self.assertRaises(ValueError):
                r.read(1 << 70, 1)
            self.assertEqual(r.read(65536, 0), b"")


class TestAtomics(Base):
    def test_ops(self):
        with self.pool.create(4096) as r:
            self.assertEqual(r.fetch_add(8, 5), 0)
            self.assertEqual(r.fetch_add(8, -2), 5)
            self.assertEqual(r.cas(8, 3, 10), 3)
            self.assertEqual(r.cas(8, 3, 11), 10)  # no swap: old value back
            self.assertEqual(r.atomic(8, "swap", 7), 10)
            self.assertEqual(r.atomic(8, "umax", 100), 7)
            self.assertEqual(r.atomic(8, "and", 0x0F), 100)
            self.assertEqual(r.atomic(8, "or", 0x30), 100 & 0x0F)
            self.assertEqual(r.atomic(8, "xor", 0xFF), 0x34)
            self.assertEqual(r.atomic(8, "smin", -1), 0x34 ^ 0xFF)
            self.assertEqual(r.read(8, 8), (-1).to_bytes(8, "little", signed=True))
            self.assertEqual(r.atomic(8, "cas", operand=1, compare=(1 << 64) - 1), (1 << 64) - 1)
            self.assertEqual(r.read(8, 8), (1).to_bytes(8, "little"))
            with self.assertRaises(ValueError):
                r.atomic(4, "fadd", 1)
            with self.assertRaises(ValueError):
                r.atomic(8, "nope", 1)
            with self.assertRaises(ValueError):
                r.atomic(4096, "fadd", 1)
            with self.assertRaises(TypeError):
                r.fetch_add(8, 1.5)

    def test_threads_add_without_losing_any(self):
        with self.pool.create(4096) as r:
            def work():
                for _ in range(200):
                    r.fetch_add(0, 1)
            ts = [threading.Thread(target=work) for _ in range(4)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            self.assertEqual(int.from_bytes(r.read(0, 8), "little"), 800)


class TestQueue(Base):
    def test_batch(self):
        with self.pool.create(1 << 20) as r, self.pool.queue(depth=16) as q:
            out = [np.full(1024, i, np.int32) for i in range(8)]
            n = q.submit([("write", r, i * 4096, out[i], ("w", i)) for i in range(8)])
            self.assertEqual(n, 8)
            done = q.wait(min=8)
            self.assertEqual(sorted(c.user_data for c in done), [("w", i) for i in range(8)])
            self.assertTrue(all(c.errno == 0 for c in done))
            back = [np.empty(1024, np.int32) for _ in range(8)]
            ops = [("read", r, i * 4096, back[i], i) for i in range(8)]
            ops.append(("atomic", r, 65536, "fadd", 3, 0, "a"))
            self.assertEqual(q.submit(ops), 9)
            self.assertEqual(q.inflight, 9)
            done = []
            while len(done) < 9:
                done += q.wait()
            self.assertEqual(q.inflight, 0)
            self.assertEqual([c for c in done if c.user_data == "a"][0].value, 0)
            for i in range(8):
                self.assertTrue(np.array_equal(back[i], out[i]))
            self.assertEqual(q.wait(), [])
            self.assertEqual(q.poll(), [])

    def test_asyncio_sleeps_on_the_queue_fd(self):
        import asyncio
        with self.pool.create(1 << 20) as r, self.pool.queue(depth=32) as q:
            r.write(0, bytes(range(256)) * 4096)
            bufs = [bytearray(4096) for _ in range(32)]

            async def main():
                loop = asyncio.get_running_loop()
                got, done = [], asyncio.Event()

                def ready():
                    got.extend(q.poll())
                    if len(got) == 32:
                        done.set()
                loop.add_reader(q.fileno(), ready)
                q.submit([("read", r, i * 4096, bufs[i], i) for i in range(32)])
                ready()  # the descriptor's state is brought up to date by submit
                await asyncio.wait_for(done.wait(), 30)
                loop.remove_reader(q.fileno())
                return got
            got = asyncio.run(main())
            self.assertEqual(sorted(c.user_data for c in got), list(range(32)))
            self.assertTrue(all(b == bytes(range(256)) * 16 for b in bufs))
        self.assertEqual(ethermem.LIB_VERSION, ethermem.HEADER_VERSION)

    def test_full_queue_posts_what_fits(self):
        with self.pool.create(1 << 20) as r, self.pool.queue(depth=4) as q:
            bufs = [bytearray(4096) for _ in range(10)]
            ops = [("read", r, i * 4096, bufs[i], i) for i in range(10)]
            posted = q.submit(ops)
            self.assertGreaterEqual(posted, 1)
            self.assertLessEqual(posted, 4)
            self.assertEqual(q.submit(ops[posted:]), 4 - posted)
            self.assertEqual(len(q.wait(min=4)), 4)

    def test_failed_operation_raises_with_completions(self):
        # a stopped node lets its operations time out
        pid = int(os.environ["EM_TEST_NODE_PID"])
        pool = ethermem.Pool(timeout_ms=300)
        r = pool.create("300M", chunk_size="1M")
        q = pool.queue()
        os.kill(pid, signal.SIGSTOP)
        try:
            q.submit([("read", r, i << 20, bytearray(16), i) for i in range(8)])
            with self.assertRaises(ethermem.Error) as cm:
                q.wait(min=8)
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertEqual(cm.exception.errno, errno.ETIMEDOUT)
        done = cm.exception.completions
        self.assertEqual(sorted(c.user_data for c in done), list(range(8)))
        self.assertIn(errno.ETIMEDOUT, [c.errno for c in done])
        self.assertIn(0, [c.errno for c in done])  # the other node answered
        pool.close()

    def test_bad_operations(self):
        with self.pool.create(65536) as r, self.pool.queue() as q:
            for bad, exc in [(5, TypeError), ([5], TypeError), ([("read", r)], TypeError),
                             ([("fly", r, 0, bytearray(1))], ValueError),
                             ([("read", "r", 0, bytearray(1))], TypeError),
                             ([("read", r, 0, b"ro")], TypeError),
                             ([("read", r, 65535, bytearray(2))], ValueError),
                             ([("atomic", r, 3, "fadd", 1)], ValueError),
                             ([("atomic", r, 0, "fadd")], TypeError),
                             ([("write", r, 0, bytearray(8)), ("write", r, -1, bytearray(8))],
                              ValueError)]:
                with self.assertRaises(exc, msg=repr(bad)):
                    q.submit(bad)
                self.assertEqual(q.inflight, 0)  # a bad batch posts nothing
            with ethermem.Pool() as other, other.create(4096) as foreign:
                with self.assertRaises(ValueError):
                    q.submit([("read", foreign, 0, bytearray(8))])

    def test_wait_releases_the_gil(self):
        # Stopped nodes cannot answer, so the waiting thread stays in
        # em_wait until they are continued; meanwhile this thread must run
        # Python code, which it could not if the wait held the GIL. Every
        # node of the pool is stopped (where the stripes land is the
        # placement's choice), and only once the kernel says so.
        pids = [int(p) for p in os.environ["EM_TEST_NODE_PIDS"].split()]

        def stopped(pid):
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        with self.pool.create("300M", chunk_size="1M") as r, self.pool.queue() as q:
            bufs = [bytearray(4096) for _ in range(16)]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                for _ in range(1000):
                    if all(stopped(pid) for pid in pids):
                        break
                    time.sleep(0.01)
                q.submit([("read", r, i << 20, bufs[i], i) for i in range(16)])
                result = []
                t = threading.Thread(target=lambda: result.append(q.wait(min=16)))
                t.start()
                spins = sum(1 for _ in range(200000))
                self.assertEqual(spins, 200000)
                self.assertTrue(t.is_alive())
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            t.join(60)
            self.assertFalse(t.is_alive())
            self.assertEqual(len(result[0]), 16)


class TestMapping(Base):
    def test_numpy_views_pool_memory(self):
        n = 1 << 20
        with self.pool.create(n * 8) as r:
            data = np.arange(n, dtype=np.float64)
            r.write(0, data)
            with r.map(cache="2M", fetch_unit="64K") as m:
                self.assertEqual(len(m), n * 8)
                v = np.frombuffer(m, np.float64, n)
                self.assertTrue(np.array_equal(v, data))
                st = m.stats()
                self.assertGreater(st["faults"], 0)
                self.assertGreaterEqual(st["bytes_fetched"], n * 8)
                self.assertGreater(st["evictions"], 0)  # 8 MiB through a 2 MiB cache
                self.assertLessEqual(ethermem.map_stats()["resident"], 2 << 20)
                v[10] = -1.0  # through the mapping
                with self.assertRaises(BufferError):
                    m.close()
                del v
                m.sync()
                self.assertEqual(r.read(80, 8), np.float64(-1.0).tobytes())
            self.assertTrue(m.closed)
            with self.assertRaises(BufferError):
                memoryview(m)

    def test_readonly_and_partial(self):
        with self.pool.create(1 << 20) as r:
            r.write(65536, b"hello pool")
            with r.map(offset=65536, length=4096, readonly=True) as m:
                a = np.frombuffer(m, np.uint8)
                self.assertFalse(a.flags.writeable)
                self.assertEqual(a[:10].tobytes(), b"hello pool")
                self.assertEqual(len(a), 4096)
                del a
            for kw, exc in [({"offset": 100}, ValueError), ({"length": 2 << 20}, ValueError),
                            ({"fetch_unit": 3000}, ValueError), ({"cache": "big"}, ValueError),
                            ({"readonly": "x", "cache": []}, TypeError),
                            ({"timeout_ms": -5}, ValueError)]:
                with self.assertRaises(exc, msg=repr(kw)):
                    r.map(**kw)

    def test_pool_close_keeps_viewed_memory(self):
        pool = ethermem.Pool()
        r = pool.create(65536)
        r.write(0, np.arange(16, dtype=np.int32))
        v = np.frombuffer(r.map(), np.int32, 16)
        pool.close()  # the view pins the mapping, its region and the connection
        self.assertTrue(pool.closed)
        self.assertFalse(r.closed)
        self.assertTrue(np.array_equal(v, np.arange(16)))
        with self.assertRaises(ValueError):
            r.read(0, 4)
        del v
        import gc
        gc.collect()


class TestKVStore(Base):
    def test_put_get_exists_between_handles(self):
        with self.pool.kv_store("py-kv", capacity="1M", value_max="8K") as s:
            self.assertEqual(s.value_max, 8192)
            k = ethermem.kv_key(b"a prompt's first block")
            self.assertEqual(len(k), 16)
            self.assertEqual(k, ethermem.kv_key(b"a prompt's first block"))
            self.assertNotEqual(k, ethermem.kv_key(b"a prompt's first block", seed=1))
            self.assertFalse(s.exists(k))
            self.assertIsNone(s.get(k))
            block = np.arange(1024, dtype=np.float32)
            self.assertTrue(s.put(k, block))
            self.assertFalse(s.put(k, b"another value"))  # the first writer wins
            self.assertTrue(s.exists(k))
            self.assertEqual(s.get(k), block.tobytes())
            # another connection, as another process would open it
            with ethermem.Pool() as p2, p2.kv_store("py-kv", create=False) as s2:
                out = np.zeros(1024, np.float32)
                self.assertEqual(s2.get(k, into=out), 4096)
                self.assertTrue(np.array_equal(out, block))
                with self.assertRaises(ethermem.Error) as e:
                    s2.get(k, into=bytearray(100))
                self.assertEqual(e.exception.errno, errno.EMSGSIZE)
            st = s.stats()
            self.assertEqual(st["used"], 1)
            self.assertEqual(st["bytes"], 4096)
            self.assertGreaterEqual(st["hits"], 2)
            self.assertGreaterEqual(st["present"], 1)
            with self.assertRaises(ethermem.Error) as e:
                s.put(ethermem.kv_key(b"big"), bytes(8193))
            self.assertEqual(e.exception.errno, errno.EMSGSIZE)
        self.assertTrue(s.closed)
        with self.assertRaises(ValueError):
            s.get(k)
        with self.assertRaises(ValueError):
            s.put(b"short", b"x")  # keys are 16 bytes

    def test_full_store_evicts(self):
        with self.pool.kv_store("py-kv-small", capacity="64K", value_max="4K") as s:
            keys = [ethermem.kv_key(str(i).encode()) for i in range(64)]
            for i, k in enumerate(keys):
                self.assertTrue(s.put(k, bytes([i]) * 100))
            st = s.stats()
            self.assertLessEqual(st["used"], st["entries"])
            self.assertGreater(st["evictions"], 0)
            last = s.get(keys[-1])  # the newest is in
            self.assertEqual(last, bytes([63]) * 100)

    def test_replicated_store(self):
        with self.pool.kv_store("py-kv-rep", capacity="256K", value_max="4K",
                                redundancy="replicate:2") as s:
            k = ethermem.kv_key(b"replicated")
            self.assertTrue(s.put(k, b"on both nodes"))
            self.assertFalse(s.put(k, b"second"))
            self.assertEqual(s.get(k), b"on both nodes")
        info = [r for r in self.pool.regions() if r["name"] == "py-kv-rep"]
        self.assertEqual(info[0]["redundancy"], "replicate:2")
        with self.assertRaises(ethermem.Error) as e:
            self.pool.kv_store("py-kv-ec", redundancy="ec:1+1")
        self.assertEqual(e.exception.errno, errno.EOPNOTSUPP)
        with self.assertRaises(ValueError):
            self.pool.kv_store("py-kv-bad", redundancy="mirror")

    def test_missing_store(self):
        with self.assertRaises(ethermem.Error) as e:
            self.pool.kv_store("py-kv-absent", create=False)
        self.assertEqual(e.exception.errno, errno.ENOENT)


class TestOddArguments(Base):
    """Every method, thrown odd values: an exception of the documented kinds,
    never a crash or anything else."""

    ODD = [None, -1, 0, 1, 4096, 2 ** 63, 2 ** 64, 2 ** 70, -2 ** 70, 1.5, "x", "", "1G",
           b"", b"abc", bytearray(3), memoryview(b"zz"), [], [("read",)], (), object(), "fadd"]
    OK = (TypeError, ValueError, ethermem.Error, BufferError)

    def test_methods(self):
        import random
        rnd = random.Random(7)
        r = self.pool.create(1 << 20)
        q = self.pool.queue(depth=4)
        m = r.map(cache="4M")
        kv = self.pool.kv_store("py-kv-odd", capacity="256K", value_max="4K")
        skip = {"close", "_c_read_loop", "delete", "kv_store"}
        targets = [(o, n) for o in (self.pool, r, q, m, kv) for n in dir(o)
                   if not n.startswith("__") and n not in skip and callable(getattr(o, n))]
        targets.append((ethermem, "parse_size"))
        targets.append((ethermem, "strerror"))
        targets.append((ethermem, "kv_key"))
        calls = 0
        for obj, name in targets:
            f = getattr(obj, name)
            for _ in range(150):
                args = [rnd.choice(self.ODD) for _ in range(rnd.randint(0, 3))]
                try:
                    f(*args)
                except self.OK:
                    pass
                calls += 1
            while q.inflight:
                try:
                    q.wait()
                except ethermem.Error:
                    pass
        self.assertGreater(calls, 1000)
        # still usable afterwards
        r.write(0, b"still here")
        self.assertEqual(r.read(0, 10), b"still here")
        m.close()
        q.close()
        r.close()
        kv.close()


class TestDocs(unittest.TestCase):
    def test_docstrings_and_stubs(self):
        for obj in [ethermem, ethermem.Pool, ethermem.Region, ethermem.Mapping, ethermem.Queue,
                    ethermem.Error, ethermem.Completion, ethermem.strerror, ethermem.parse_size,
                    ethermem.map_cache_size, ethermem.map_stats, ethermem.KVStore,
                    ethermem.kv_key]:
            self.assertTrue(obj.__doc__, obj)
        for cls in [ethermem.Pool, ethermem.Region, ethermem.Mapping, ethermem.Queue,
                    ethermem.KVStore]:
            for name, member in vars(cls).items():
                if not name.startswith("_"):
                    self.assertTrue(getattr(member, "__doc__", None), f"{cls.__name__}.{name}")
        here = os.path.dirname(ethermem.__file__)
        for stub in ["__init__.pyi", "torch.pyi", "py.typed"]:
            self.assertTrue(os.path.exists(os.path.join(here, stub)), stub)
        self.assertEqual(ethermem.parse_size("1.5G"), 3 << 29)
        with self.assertRaises(ValueError):
            ethermem.parse_size("1.5Q")


if __name__ == "__main__":
    unittest.main()
