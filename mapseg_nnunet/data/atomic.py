"""Write-then-rename helpers: a crash or Ctrl-C never leaves a half-written file behind."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block completes."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json_atomic(obj, path: str, sort_keys: bool = False) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, sort_keys=sort_keys, indent=4)


def torch_save_atomic(obj, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def replace_directory(complete: str, final: str) -> None:
    """Move a fully written folder ``complete`` to ``final``, replacing an existing ``final`` (which is removed
    only after the new one is in place)."""
    import shutil
    old = final + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(complete, final)
    shutil.rmtree(old, ignore_errors=True)
