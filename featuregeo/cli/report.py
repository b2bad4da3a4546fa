"""`featuregeo report`: argparse and printing."""

from __future__ import annotations

from featuregeo.cli.common import log


def cmd_report(args) -> int:
    from featuregeo.pipeline import report as pipeline

    res = pipeline.run(args.results, args.out, figures=not args.no_figures)
    width = max(len(c.id) for c in res.claims)
    for c in res.claims:
        print(f"{c.id:<{width}}  {c.verdict:<13}  {c.sentence}")
    log(f"report: open {res.html} in a browser")
    return 0


def add(sub) -> None:
    p = sub.add_parser("report", help="findings report: every claim of the paper judged on saved results "
                                      "(one self-contained report.html)")
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                   help="a results directory (e.g. a demo output); more directories (e.g. one per SAE) add the "
                        "spread of every claim across them")
    p.add_argument("--out", help="the HTML file to write (default: RESULTS_DIR/report.html)")
    p.add_argument("--no-figures", action="store_true", help="do not draw and embed figures")
    p.set_defaults(func=cmd_report)
