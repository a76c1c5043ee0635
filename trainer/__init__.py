"""seqtrain: production training jobs for recurrent sequence models."""

import os as _os

__version__ = "0.1.0"


def _cpu_allocator_defaults() -> None:
    """TensorFlow's CPU tensors come from a BFC pool, not one malloc per tensor.

    With the default allocator every large buffer of a step (the saved gates of a
    fused recurrent loop, tens of MB) is a fresh mmap whose pages fault in on first
    write, every step; the pool keeps them. Measured in docs/benchmarks.md. Read by
    TensorFlow when it first allocates a tensor, so it is set on import, before any
    op runs; an explicit setting in the environment wins. TensorFlow caps the pool
    at 64 GB by default: on a larger machine the cap is its physical memory.
    """
    _os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    try:
        memory_mb = _os.sysconf("SC_PHYS_PAGES") * _os.sysconf("SC_PAGE_SIZE") // 2**20
    except (ValueError, OSError, AttributeError):  # no sysconf (not Linux/macOS)
        return
    if memory_mb > 65536:
        _os.environ.setdefault("TF_CPU_BFC_MEM_LIMIT_IN_MB", str(memory_mb))


_cpu_allocator_defaults()
