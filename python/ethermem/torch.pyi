# Type stubs for ethermem.torch.
from collections import OrderedDict
from typing import Mapping as _Mapping, Optional, Union

import torch

from . import Mapping, Pool, Region

Size = Union[int, str]

class Offloaded:
    region: Region
    mapping: Mapping
    names: list[str]
    def stats(self) -> dict[str, int]: ...

def offload(module: torch.nn.Module, pool: Pool, local_mem: Size = ..., name: Optional[str] = ...,
            *, fetch_unit: Optional[Size] = ...) -> Offloaded: ...
def load_shared(module: torch.nn.Module, pool: Pool, name: str, *, local_mem: Optional[Size] = ...,
                fetch_unit: Optional[Size] = ...) -> Offloaded: ...
def save(state_dict: _Mapping[str, torch.Tensor], pool: Pool, name: str) -> None: ...
def load(pool: Pool, name: str) -> "OrderedDict[str, torch.Tensor]": ...
