"""ethermem: the memory of many servers as one pool, from Python.

A thin layer over libethermem (its C API, ``ethermem.h``)::

    import numpy, ethermem
    with ethermem.Pool() as pool:                 # ETHERMEM_NODES, ETHERMEM_SECRET_FILE
        r = pool.create(1 << 30, name="weights")  # or pool.open("weights")
        r.write(0, numpy.arange(1024, dtype=numpy.float32))
        a = numpy.empty(1024, numpy.float32)
        r.readinto(0, a)                          # straight into the array's memory
        m = r.map(cache="256M")                   # pages fetched on first touch
        v = numpy.frombuffer(m, numpy.float32, 1024)

Data moves through the buffer protocol without extra copies; calls that wait
on the network release the GIL. Failures raise :class:`Error` (an OSError
with the errno and ethermem's text); bad arguments raise TypeError or
ValueError. ``ethermem.torch`` offloads PyTorch modules into the pool.
``Pool.kv_store(name)`` opens a store of immutable blocks by 16-byte key
(``kv_key(data)`` makes one), shared by every process that names it: what a
serving engine needs to fetch a prompt's KV cache instead of recomputing it.
"""
from ._ethermem import (
    EAUTH,
    ECRYPT,
    ENONODE,
    EVERSION,
    HEADER_VERSION,
    LIB_VERSION,
    NAME_MAX,
    Completion,
    Error,
    KVStore,
    Mapping,
    Pool,
    Queue,
    Region,
    kv_key,
    map_cache_size,
    map_stats,
    parse_size,
    strerror,
)

__version__ = "0.1.0"

__all__ = [
    "Pool", "Region", "Mapping", "Queue", "Completion", "Error", "KVStore",
    "kv_key", "strerror", "parse_size", "map_cache_size", "map_stats",
    "EAUTH", "EVERSION", "ENONODE", "ECRYPT", "NAME_MAX", "LIB_VERSION", "HEADER_VERSION",
]
