"""``raytrain-eff compare`` and ``raytrain-eff report``: the adoption report from the CLI."""

from __future__ import annotations

import argparse
import textwrap

from raytrain_eff.typed import ConfigError

COMPARE_EXAMPLES = """\
    examples:
      raytrain-eff compare --preset gpt-mst --against gpt-dense
      raytrain-eff compare --preset classify-dho2 --against digits-adamw --seeds 5 \\
          --price-per-node-hour 2.5 --out reports/dho2
      raytrain-eff compare --config-a mine.yaml --config-b baseline.yaml run.steps=500
      raytrain-eff compare --preset erm-dasvrda --against erm-prox-svrg \\
          --metric val_accuracy --mode max scaling.num_workers=4 --address auto"""
REPORT_EXAMPLES = """\
    examples:
      raytrain-eff report ~/raytrain_runs/RUN_A1 ~/raytrain_runs/RUN_B1 --out reports/ab
          # two config groups: A is the group of the first directory, B the other
      raytrain-eff report --a ~/raytrain_runs/mst-s0 ~/raytrain_runs/mst-s1 \\
          --b ~/raytrain_runs/dense-s0 ~/raytrain_runs/dense-s1 --out reports/mst
      raytrain-eff report --a ~/raytrain_runs/sweep-mst --b ~/raytrain_runs/sweep-dense \\
          --out reports/tuned   # Tune sweeps: each side's best completed config"""


def add_commands(subparsers) -> None:
    """Add ``compare`` and ``report`` to the CLI's subparsers."""
    p = _parser(
        subparsers,
        "compare",
        "run a method and its baseline over several seeds on "
        "the same cluster, data and budget, and write the report",
        COMPARE_EXAMPLES,
    )
    a = p.add_mutually_exclusive_group()
    a.add_argument("--preset", help="side A (the method): a packaged preset")
    a.add_argument("--config-a", help="side A as an experiment YAML file")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--against", help="side B (the baseline): a packaged preset")
    b.add_argument("--config-b", help="side B as an experiment YAML file")
    p.add_argument("--seeds", type=int, default=3, help="seeds per side (default 3)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS or local)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied to both sides, e.g. run.steps=200",
    )
    _report_options(p)
    p.set_defaults(func=cmd_compare)

    p = _parser(
        subparsers, "report", "build the report from finished runs and Tune sweeps", REPORT_EXAMPLES
    )
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="run or sweep directories "
        "forming exactly two config groups (A: the first directory's group)",
    )
    p.add_argument("--a", nargs="+", default=[], metavar="DIR", help="side A's run/sweep dirs")
    p.add_argument("--b", nargs="+", default=[], metavar="DIR", help="side B's run/sweep dirs")
    p.add_argument("--labels", nargs=2, metavar=("A", "B"), help="names of the two sides")
    _report_options(p)
    p.set_defaults(func=cmd_report)


def _parser(subparsers, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=textwrap.dedent(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="report directory (default: ./compare-<time>)")
    p.add_argument(
        "--price-per-node-hour",
        type=float,
        default=3.0,
        help="price of one node for one hour, any currency (default 3.0)",
    )
    p.add_argument(
        "--workers-per-node",
        type=int,
        default=1,
        help="Ray Train workers per node, to count nodes (default 1)",
    )
    p.add_argument("--metric", default="val_loss", help="quality metric (default val_loss)")
    p.add_argument(
        "--mode",
        choices=["min", "max"],
        help="better direction of --metric (default: max for accuracies, else min)",
    )
    p.add_argument(
        "--target",
        type=float,
        help="target value of --metric (default: the baseline's median final value)",
    )


def _common(args) -> dict:
    if args.price_per_node_hour < 0 or args.workers_per_node < 1:
        raise ConfigError("--price-per-node-hour must be >= 0 and --workers-per-node >= 1")
    return dict(
        metric=args.metric,
        mode=args.mode,
        target=args.target,
        workers_per_node=args.workers_per_node,
    )


def cmd_compare(args) -> int:
    a, b = args.preset or args.config_a, args.against or args.config_b
    if not a or not b:
        raise ConfigError(
            "compare needs side A (--preset or --config-a) and side B (--against or --config-b)"
        )
    from raytrain_eff.report.compare import compare

    out = compare(
        a,
        b,
        seeds=args.seeds,
        overrides=args.overrides,
        price_per_node_hour=args.price_per_node_hour,
        out_dir=args.out,
        address=args.address,
        quiet=not args.verbose,
        **_common(args),
    )
    print(f"report: {out}/report.html (tables/*.parquet, plots/*.png)")
    return 0


def cmd_report(args) -> int:
    import os
    import time

    from raytrain_eff.report import build

    common = _common(args)
    if args.a or args.b:
        if args.dirs or not (args.a and args.b):
            raise ConfigError("give both --a DIR... and --b DIR..., and no positional RUN_DIR")
        side_a, side_b = args.a, args.b
    else:
        side_a, side_b = split_by_group(args.dirs)
    out = args.out or os.path.abspath(f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    build.build_report(
        side_a,
        side_b,
        out,
        args.price_per_node_hour,
        tuple(args.labels) if args.labels else None,
        **common,
    )
    print(f"report: {out}/report.html (tables/*.parquet, plots/*.png)")
    return 0


def split_by_group(dirs: list[str]) -> tuple[list[str], list[str]]:
    """Positional run dirs -> (A: the first dir's config group, B: the other group)."""
    from raytrain_eff.report import build

    keys = [build.group_key(build.expand(d)[0].config) for d in dirs]
    groups = list(dict.fromkeys(keys))
    if len(groups) != 2:
        raise ConfigError(
            f"the {len(dirs)} directories form {len(groups)} config group(s) "
            f"(configs minus seed); expected two, or say which is which with "
            f"--a DIR... --b DIR..."
        )
    return (
        [d for d, k in zip(dirs, keys, strict=True) if k == groups[0]],
        [d for d, k in zip(dirs, keys, strict=True) if k == groups[1]],
    )
