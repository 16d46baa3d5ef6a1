"""An allowlist in front of every pickle: walk the opcodes, allow only what a state dict needs.

A denylist scanner (picklescan) only knows the dangerous names it was told
about; a payload built from ``importlib`` + ``operator.getitem`` or
``marshal`` + ``types.FunctionType`` walks past it. This guard reads the
pickle with :mod:`pickletools` (which never executes anything), resolves every
global that would be imported (``GLOBAL``, ``INST``, and ``STACK_GLOBAL``
through the memo), and refuses the file unless each one is in
:data:`ALLOWED_GLOBALS`. Opcodes that reach code by other routes (the
extension registry, text persistent ids) are refused too.

Torch checkpoints come in two containers, and both are walked:

* the zip format: every member that is a pickle (``data.pkl``, however it is
  renamed or cased) is walked; a nested archive is refused; members must not
  inflate beyond :func:`plugin.models.limits.max_inflated`;
* the legacy format: the five pickles at the head of the file (magic number,
  protocol, sys info, the object, the storage keys); raw storage bytes follow.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.models.limits import ResourceLimitError, max_inflated

_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexFloat",
             "ComplexDouble", "QInt8", "QUInt8", "QInt32", "Untyped")
ALLOWED_GLOBALS = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.Size",
    "torch.device",
    *(f"torch.{s}Storage" for s in _STORAGES),
    *(f"torch.{t}" for t in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                             "uint8", "bool")),
})
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4", "PERSID"}  # extension registry; text persistent ids torch never writes
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_KEEP_STACK_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "PROTO", "FRAME"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
LEGACY_PICKLES = 5
_PICKLE_PROTO = b"\x80"


def _refuse(where: str, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"{where}: {what}; refused by the pickle allowlist "
                                 "(checked before torch.load(weights_only=True))")


def check_pickle_stream(stream: io.BufferedIOBase, where: str) -> set[str]:
    """Walks one pickle from ``stream``; returns the globals it imports.

    Raises:
        UnsafeCheckpointError: a global outside :data:`ALLOWED_GLOBALS`, an
            unresolvable ``STACK_GLOBAL``, a refused opcode, or bytes that are
            not a pickle this walk can follow.
    """
    found: set[str] = set()
    memo: dict[int, object] = {}
    # Values of the latest pushes whose content we know (strings, or None for "something else"):
    # enough to resolve STACK_GLOBAL's two operands, and unknown operands are refused.
    recent: list[object] = []
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in _REFUSED_OPS:
                raise _refuse(where, f"opcode {name}")
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                g = f"{module}.{attr}"
                if g not in ALLOWED_GLOBALS:
                    raise _refuse(where, f"pickle imports {g}")
                found.add(g)
                recent = [None]
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                    raise _refuse(where, "STACK_GLOBAL with operands that are not literal strings")
                g = f"{recent[-2]}.{recent[-1]}"
                if g not in ALLOWED_GLOBALS:
                    raise _refuse(where, f"pickle imports {g}")
                found.add(g)
                recent = recent[:-2] + [None]
            elif name in _STRING_OPS:
                recent.append(arg if isinstance(arg, str) else None)
            elif name in _GET_OPS:
                recent.append(memo.get(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in _PUT_OPS:
                memo[arg] = recent[-1] if recent else None
            elif name in _KEEP_STACK_OPS:
                pass
            elif name == "POP" and recent:
                recent.pop()
            elif name == "DUP":
                recent.append(recent[-1] if recent else None)
            else:
                recent = []  # any other opcode: we no longer know what is on top of the stack
    except UnsafeCheckpointError:
        raise
    except (ValueError, EOFError, UnicodeDecodeError, TypeError) as e:
        raise _refuse(where, f"not a pickle the allowlist can follow ({type(e).__name__}: {str(e)[:120]})") from e
    return found


def _check_zip(path: Path, zf: zipfile.ZipFile) -> set[str]:
    infos = zf.infolist()
    cap = max_inflated(path.stat().st_size)
    total = sum(i.file_size for i in infos)
    if total > cap:
        raise ResourceLimitError(f"{path.name}: zip members inflate to {total} bytes, over the limit of {cap} "
                                 f"for a {path.stat().st_size}-byte archive", "max_inflated_bytes", cap)
    found: set[str] = set()
    for info in infos:
        parts = info.filename.split("/")
        if len(parts) >= 2 and parts[-2] == "data" and parts[-1].isdigit():
            continue  # raw tensor storage: bytes, never unpickled
        with zf.open(info) as fh:
            head = fh.read(4)
        if head.startswith(b"PK"):
            raise _refuse(f"{path.name}:{info.filename}", "a nested archive")
        if info.filename.lower().endswith(".pkl") or head.startswith(_PICKLE_PROTO):
            with zf.open(info) as fh:
                found |= check_pickle_stream(io.BufferedReader(fh), f"{path.name}:{info.filename}")
    return found


def check_checkpoint_pickles(path: str | Path) -> set[str]:
    """Refuses a torch checkpoint (zip or legacy) unless every pickle in it passes the allowlist.

    Returns:
        The globals the checkpoint imports (all allowed).

    Raises:
        UnsafeCheckpointError: see :func:`check_pickle_stream`.
        ResourceLimitError: zip members that would inflate too far.
        CheckpointError: the file cannot be read.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return _check_zip(path, zf)
        found: set[str] = set()
        size = path.stat().st_size
        with open(path, "rb") as fh:
            for i in range(LEGACY_PICKLES):
                if fh.tell() >= size:
                    break
                found |= check_pickle_stream(fh, f"{path.name} (pickle {i + 1})")
        return found
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{path.name}: unreadable zip archive ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{path.name}: unreadable ({e})") from e
