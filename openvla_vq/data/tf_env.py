"""Import TensorFlow, tensorflow-datasets and rlds the way this project needs them (always through here).

TensorFlow only feeds data here: it must not grab a GPU, and on 2 cores it must not start dozens of
threads. `rlds` imports `reverb` at package import, and the installable dm-reverb is ABI-broken with
TF 2.21, so a permissive stand-in module is registered first (rlds only uses reverb for its
`pattern_map` transformations, which this project does not use).
"""

from __future__ import annotations

import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # triton (shipped with torch, loaded by torch._dynamo) segfaults when TensorFlow's libraries load first
    import triton  # noqa: F401
except ImportError:
    pass

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")
try:
    tf.config.threading.set_inter_op_parallelism_threads(min(os.cpu_count() or 2, 8))
except RuntimeError:  # already initialised by an earlier import
    pass

import tensorflow_datasets as tfds  # noqa: E402


class _AnyAttribute:
    """Answers every attribute, call, subscript and `|`: enough for rlds' annotations that mention reverb."""

    def __getattr__(self, name: str) -> "_AnyAttribute":
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttribute()

    def __call__(self, *args, **kwargs) -> "_AnyAttribute":
        return _AnyAttribute()

    def __getitem__(self, key) -> "_AnyAttribute":
        return _AnyAttribute()

    def __or__(self, other) -> "_AnyAttribute":
        return _AnyAttribute()

    __ror__ = __or__


try:
    import reverb  # noqa: F401
except Exception:
    def _module_getattr(name: str) -> _AnyAttribute:
        if name.startswith("__"):  # __file__, __path__, ...: module scanners must see a plain module
            raise AttributeError(name)
        return _AnyAttribute()

    stub = types.ModuleType("reverb")
    stub.__getattr__ = _module_getattr
    sys.modules["reverb"] = stub

import rlds  # noqa: E402

__all__ = ["rlds", "tf", "tfds"]
