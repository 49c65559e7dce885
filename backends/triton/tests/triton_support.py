"""What the Triton tests share besides fixtures (a module of its own: every test folder has a ``conftest``)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
"""This folder: on Triton's Python path too, so the pyfunc classes of triton_models.py load there."""


def start_triton(workdir, install, **kwargs):
    """A started Triton in ``workdir`` whose Python also imports this folder's model classes."""
    from matih_lite.testing.triton import TritonServer

    return TritonServer(workdir, install, python_path=(TESTS,), **kwargs).start()
