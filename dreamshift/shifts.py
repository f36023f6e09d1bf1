"""``dreamshift shifts``: list the suites and shift kinds, render a gallery.

    dreamshift shifts list                  # suites and shift kinds
    dreamshift shifts gallery [--env dmc:walker_walk] [--out gallery.png] [--suite standard] [--seed 0] [--size 64]
                              [--scale 0]     # size 16-1024, scale 1-16 (0: automatic), size x scale <= 1024
"""

from __future__ import annotations

import argparse

from shifts import suites
from shifts.base import make_shift
from shifts.gallery import write_gallery


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shifts list`` and ``shifts gallery`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    sh = sub.add_parser("shifts", help="visual shifts: list suites and kinds, render a gallery")
    sh_sub = sh.add_subparsers(dest="action", required=True)
    sh_sub.add_parser("list", help="print the suites and the shift kinds (with their level)")
    g = sh_sub.add_parser("gallery", help="PNG grid of one frame: rows = kinds of a suite, columns = severity 0-5")
    g.add_argument("--env", default="dmc:walker_walk")
    g.add_argument("--out", default="gallery.png", help="output PNG file (.png)")
    g.add_argument("--suite", default="standard")
    g.add_argument("--seed", type=int, default=0, help="env reset and shift seed, 0 to 2**32 - 1")
    g.add_argument("--size", type=int, default=64, help="frame side in pixels, 16-1024")
    g.add_argument("--scale", type=int, default=0, help="cell upscaling factor 1-16, at most 1024 px a cell "
                   "(default: cells of ~128 px)")
    sh.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift shifts list|gallery``; raises ``ShiftError`` / ``EnvError`` / ``ConfigError``."""
    if args.action == "list":
        print("suites:")
        for name in suites.suite_names():
            missing = suites.missing_kinds(name)
            if missing:
                status = f"unavailable (needs {', '.join(missing)})"
            else:
                status = f"{len(suites.get_suite(name))} conditions"
            print(f"  {name:<9} {status:<15} {suites.describe(name)}")
        print("kinds:")
        for kind in suites.ordered_kinds():
            print(f"  {kind:<15} {make_shift(kind, 0).level}")
    elif args.action == "gallery":
        path = write_gallery(args.out, env_name=args.env, suite=args.suite, seed=args.seed, size=args.size,
                             scale=args.scale or None)
        print(f"gallery: {path}")
