"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys

from featuregeo.core.errors import InputError


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bad(msg: str) -> InputError:
    return InputError(msg)


def fit_ranks(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.replace("..", ",").replace("-", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two ranks like '11,150'. Got {text!r} instead.") from None
    if not 1 <= a < b:
        raise argparse.ArgumentTypeError(f"expected ranks 1 <= a < b. Got {text!r} instead.")
    return a, b




def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` / ``--workers N``: run the map-reduce part on a Dask cluster."""
    g = p.add_argument_group("cluster (Dask)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (`dask scheduler` prints "
                   "tcp://HOST:8786); outputs must be on storage every worker sees at the same path")
    g.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")


def int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise bad(f"{name}: expected comma-separated integers like '2,3,4,8'. Got {text!r} instead.") from None


def flagged(e: Exception, flags) -> str:
    """An error message with its parameter named as the command-line flag (``prune_max:`` -> ``--prune-max:``)
    when that parameter is one of ``flags``."""
    import re

    msg = str(e)
    m = re.match(r"([a-z_]+):", msg)
    if m and m.group(1) in flags:
        msg = "--" + m.group(1).replace("_", "-") + msg[len(m.group(1)):]
    return msg
