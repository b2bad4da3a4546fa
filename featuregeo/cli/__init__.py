"""Command-line interface: argparse and printing only; the work happens in :mod:`featuregeo.pipeline`.

Bad input exits with code 2 and a one-line message (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2
COMMANDS = ("galaxy", "harvest", "lobes", "atoms", "layers", "lens", "updates", "interaction", "atlas", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="featuregeo",
        description="Geometry of sparse-autoencoder features: galaxy spectra, lobes, crystals, layers, atlas.",
        epilog="SOURCE: 'saelens:RELEASE:SAE_ID' (SAE_ID may contain {layer}), a sae-lens folder, a "
               ".safetensors/.npz/.pt/.npy file, a directory, glob or {layer} path template of per-layer "
               "files, or 'default' / 'default:LAYER' for the suite shipped with featuregeo.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"featuregeo.cli.{name}").add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from featuregeo.core.errors import FeaturegeoError, InputError

    try:
        return int(args.func(args) or 0)
    except InputError as e:
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FeaturegeoError as e:  # e.g. disk full during a harvest: finished work is kept
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"featuregeo {args.command}: interrupted; finished layers are saved and a rerun resumes",
              file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"featuregeo {args.command}: error: out of memory; try fewer layers or a smaller "
              "--entropy-subsample", file=sys.stderr)
        return 1
    except Exception as e:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"featuregeo {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug "
              "for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
