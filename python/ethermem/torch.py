"""PyTorch weights in the pool.

``offload(module, pool, local_mem="2G")`` moves a module's parameters and
buffers into one pool region and makes every tensor a view of a mapping of
it: the module runs unchanged, its weights are fetched on first touch, and
the local copy is bounded by ``local_mem`` (the process-wide cache of
mappings), so a model larger than local memory fits.

With ``name`` the weights stay in a named region that other processes and
servers map read-only with ``load_shared(module, pool, name)``: one copy in
the pool serves them all. ``save(state_dict, pool, name)`` and
``load(pool, name)`` keep a state dict in a named region, loaded without a
file.

A region written here holds a small header followed by the tensors' bytes::

    b"EMTORCH1" | u64 index length | JSON index | small tensors | large tensors

The index lists each tensor's name, dtype, shape, offset and byte count. It
is checked against the region's size before anything is mapped. Small
tensors (biases, norms) are packed together in front and large ones follow,
page-aligned: interleaved, every layer's bias would sit a weight's length
after the last, a strided stream that the mapping's prefetcher follows with
whole fetch units nobody reads (measured: three times the bytes fetched
per forward pass). Packed, they stay resident and the weights stream.
"""
import json
import struct
import warnings
from collections import OrderedDict

import torch

from . import Error, Mapping, Pool, Region, parse_size

__all__ = ["offload", "load_shared", "save", "load", "Offloaded"]

_MAGIC = b"EMTORCH1"
_ALIGN = 64
_SMALL = 256 << 10  # tensors below this are packed together in front
_INDEX_MAX = 64 << 20


def _align(n, a):
    return (n + a - 1) // a * a


def _dtype_name(dt):
    return str(dt).split(".", 1)[1]


def _dtype(name):
    dt = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in the region's index")
    return dt


def _size(v):
    if isinstance(v, str):
        return parse_size(v)
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    raise ValueError(f"a size is a positive int or a string like '2G', not {v!r}")


def _bytes_of(t):
    """The tensor's bytes as a uint8 NumPy array over its own memory when it
    is contiguous (one copy otherwise)."""
    t = t.detach()
    if t.device.type != "cpu":
        raise ValueError(f"only CPU tensors go to the pool, not {t.device}")
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def _layout(items):
    """Offsets for (name, tensor) pairs: the header and where each goes."""
    sizes = [t.numel() * t.element_size() for _, t in items]
    offsets, off = [0] * len(items), 0
    for small in (True, False):
        for i, nbytes in enumerate(sizes):
            if (nbytes < _SMALL) == small:
                off = _align(off, _ALIGN if small else 4096)
                offsets[i] = off
                off += nbytes
    entries = [{"name": name, "dtype": _dtype_name(t.dtype), "shape": list(t.shape),
                "offset": o, "nbytes": n} for (name, t), o, n in zip(items, offsets, sizes)]
    # The index's own length fixes where the data starts; offsets are
    # relative to that start, so the index does not depend on itself.
    index = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    data_start = _align(16 + len(index), 4096)
    header = _MAGIC + struct.pack("<Q", len(index)) + index
    return header, data_start, entries, max(data_start + off, 4096)


def _write(region, header, data_start, entries, tensors):
    region.write(0, header)
    for e, t in zip(entries, tensors):
        if e["nbytes"]:
            region.write(data_start + e["offset"], _bytes_of(t))


def _read_index(region):
    """The index of a region written by this module, checked against the
    region's size (nothing in it is trusted)."""
    head = region.read(0, 16) if region.size >= 16 else b""
    if len(head) < 16 or head[:8] != _MAGIC:
        raise ValueError("the region does not hold tensors written by ethermem.torch")
    (n,) = struct.unpack("<Q", head[8:])
    if n > _INDEX_MAX or 16 + n > region.size:
        raise ValueError("the region's tensor index is corrupt (bad length)")
    try:
        entries = json.loads(region.read(16, n))["tensors"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the region's tensor index is corrupt: {e}") from None
    data_start = _align(16 + n, 4096)
    out = OrderedDict()
    for e in entries:
        try:
            name, dt, shape = e["name"], _dtype(e["dtype"]), tuple(int(s) for s in e["shape"])
            off, nbytes = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"the region's tensor index is corrupt: {err}") from None
        numel = 1
        for s in shape:
            if s < 0:
                raise ValueError(f"tensor {name!r}: negative dimension")
            numel *= s
        elem = torch.empty((), dtype=dt).element_size()
        if off < 0 or nbytes != numel * elem or data_start + off + nbytes > region.size:
            raise ValueError(f"tensor {name!r}: extent does not fit the region")
        out[name] = (dt, shape, data_start + off, nbytes)
    return out


def _view(mapping, dt, shape, off, nbytes):
    if nbytes == 0:
        return torch.empty(shape, dtype=dt)
    elem = torch.empty((), dtype=dt).element_size()
    # torch.frombuffer keeps a reference to the object it is given but lets
    # go of the buffer view at once; given a memoryview it keeps that, and
    # the memoryview keeps a view of the mapping, so close() sees the
    # tensors and refuses instead of unmapping under them
    return torch.frombuffer(memoryview(mapping), dtype=dt, count=nbytes // elem,
                            offset=off).view(shape)


def _named_tensors(module):
    seen, out = set(), []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        out.append((name, t))
    return out


class Offloaded:
    """What ``offload``/``load_shared`` put behind a module: the region, its
    mapping (which the module's tensors view) and the mapping's counters."""

    def __init__(self, region: Region, mapping: Mapping, names):
        self.region = region
        self.mapping = mapping
        self.names = list(names)

    def stats(self) -> dict:
        """Faults, bytes fetched and resident bytes of the weights' mapping."""
        return self.mapping.stats()

    def __repr__(self):
        return f"<ethermem.torch.Offloaded {len(self.names)} tensors in {self.region!r}>"


def _repoint(module, items, index, mapping):
    for name, t in items:
        dt, shape, off, nbytes = index[name]
        if dt != t.dtype or shape != tuple(t.shape):
            raise ValueError(f"tensor {name!r}: the pool holds {dt} {list(shape)}, "
                             f"the module has {t.dtype} {list(t.shape)}")
    for name, t in items:
        dt, shape, off, nbytes = index[name]
        # .data keeps the Parameter object (optimisers and tied weights hold it)
        t.data = _view(mapping, dt, shape, off, nbytes)


def offload(module: torch.nn.Module, pool: Pool, local_mem="2G", name=None, *,
            fetch_unit=None) -> Offloaded:
    """Moves module's parameters and buffers into one pool region, and points
    each at a view of a mapping of it, so the module runs unchanged with at
    most ``local_mem`` (bytes or '2G'; the process-wide cache of mappings) of
    its weights local. With ``name`` the region is named and persists, for
    ``load_shared`` elsewhere; without, it is freed with the pool. Returns
    an :class:`Offloaded` (also kept as ``module.ethermem_offload``)."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError("offload() takes a torch.nn.Module")
    if not isinstance(pool, Pool):
        raise TypeError("offload() takes an ethermem.Pool")
    cache = _size(local_mem)
    items = _named_tensors(module)
    if not items:
        raise ValueError("the module has no parameters or buffers")
    header, data_start, entries, total = _layout(items)
    region = pool.create(total, name=name)
    try:
        _write(region, header, data_start, entries, [t for _, t in items])
        mapping = region.map(cache=cache, fetch_unit=_size(fetch_unit) if fetch_unit else 0)
    except BaseException:
        if name:
            region.close()
            pool.delete(name)
        raise
    index = _read_index(region)
    with torch.no_grad():
        _repoint(module, items, index, mapping)
    off = Offloaded(region, mapping, [n for n, _ in items])
    module.ethermem_offload = off
    return off


def load_shared(module: torch.nn.Module, pool: Pool, name: str, *, local_mem=None,
                fetch_unit=None) -> Offloaded:
    """Points module's parameters and buffers at a read-only mapping of the
    named region that ``offload(..., name=name)`` or ``save`` wrote: many
    processes and servers share one copy in the pool. The names, dtypes and
    shapes must match the module's. The tensors are read-only: for inference
    (a write to them faults). ``local_mem`` sets the process-wide cache."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError("load_shared() takes a torch.nn.Module")
    if not isinstance(pool, Pool):
        raise TypeError("load_shared() takes an ethermem.Pool")
    region = pool.open(name)
    index = _read_index(region)
    items = _named_tensors(module)
    missing = [n for n, _ in items if n not in index]
    if missing:
        region.close()
        raise ValueError(f"region {name!r} lacks {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    mapping = region.map(readonly=True, cache=_size(local_mem) if local_mem else None,
                         fetch_unit=_size(fetch_unit) if fetch_unit else 0)
    with torch.no_grad(), warnings.catch_warnings():
        # torch warns that the buffer is not writable: that is the point
        warnings.simplefilter("ignore", UserWarning)
        for _, t in items:
            t.requires_grad_(False)
        _repoint(module, items, index, mapping)
    off = Offloaded(region, mapping, [n for n, _ in items])
    module.ethermem_offload = off
    return off


def save(state_dict, pool: Pool, name: str) -> None:
    """Stores a state dict (name -> CPU tensor) in the named region ``name``,
    replacing what was there."""
    if not isinstance(pool, Pool):
        raise TypeError("save() takes an ethermem.Pool")
    if not isinstance(name, str):
        raise TypeError("save() needs a region name")
    items = list(state_dict.items())
    for k, t in items:
        if not isinstance(k, str) or not isinstance(t, torch.Tensor):
            raise TypeError("save() takes a mapping of str to torch.Tensor")
    header, data_start, entries, total = _layout(items)
    try:
        region = pool.create(total, name=name, exclusive=True)
    except Error as e:
        if e.errno != 17:  # EEXIST: replace it
            raise
        pool.delete(name)
        region = pool.create(total, name=name, exclusive=True)
    with region:
        _write(region, header, data_start, entries, [t for _, t in items])


def load(pool: Pool, name: str) -> "OrderedDict[str, torch.Tensor]":
    """Reads the state dict that ``save`` stored in region ``name`` into new
    CPU tensors, each filled straight from the pool."""
    if not isinstance(pool, Pool):
        raise TypeError("load() takes an ethermem.Pool")
    out = OrderedDict()
    with pool.open(name) as region:
        for k, (dt, shape, off, nbytes) in _read_index(region).items():
            t = torch.empty(shape, dtype=dt)
            if nbytes:
                region.readinto(off, t.reshape(-1).view(torch.uint8).numpy())
            out[k] = t
    return out
