"""Shared fixtures. ``cli`` runs a command-line tool's ``main`` in this process: starting a second
interpreter and importing torch again costs more than most of the tiny runs the tests make, so
only the tests about the process itself (exit status seen by a shell, torchrun, kills) start one."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

from emca_vis.errors import run_cli


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys) -> Callable[..., Result]:
    """``cli(main, *argv)``: the exit status, stdout and stderr of ``main`` run as ``python -m``
    would run it (``run_cli``, argparse's exits included). The torch settings a run may change
    (deterministic algorithms, thread count, the RNG) are restored afterwards."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    benchmark = torch.backends.cudnn.benchmark

    def call(main, *argv) -> Result:
        capsys.readouterr()
        try:
            rc = run_cli(main, [str(a) for a in argv])
        except SystemExit as error:  # argparse: --help, or a bad option
            rc = error.code if isinstance(error.code, int) else int(error.code is not None)
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    with torch.random.fork_rng(devices=[]):
        yield call
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = benchmark
