"""``raytrain-eff``: train, tune, compare and inspect efficient-training runs on Ray.

Configs are validated before torch or ray is imported, so a typo costs milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback

from raytrain_eff import __version__
from raytrain_eff import config as config_mod
from raytrain_eff.engine.failures import RunFailed, summary
from raytrain_eff.typed import ConfigError

EXAMPLES = {
    "train": """\
        examples:
          raytrain-eff train                                  # default preset, local Ray
          raytrain-eff train --preset digits-adamw run.steps=100 methods.adamw.lr=1e-3
          raytrain-eff train --config my.yaml --address auto  # join a running cluster
          raytrain-eff train run.stop_after=300               # pause at step 300 ...
          raytrain-eff train --resume ~/raytrain_runs/RUN     # ... and go on to run.steps
          raytrain-eff train --resume ~/raytrain_runs/RUN scaling.num_workers=4""",
    "tune": """\
        examples:
          raytrain-eff tune tune_spaces/baseline_adamw.yaml
          raytrain-eff tune tune_spaces/dho2.yaml run.steps=200 --name dho2-sweep
          raytrain-eff tune tune_spaces/dho2.yaml --resume --name dho2-sweep""",
    "exporter": """\
        examples:
          raytrain-eff exporter                                   # one exporter, this process
          raytrain-eff exporter --address auto --host node        # every node, file_sd kept current
          raytrain-eff exporter --address auto --stop             # end the cluster's exporters""",
    "provenance": """\
        examples:
          raytrain-eff provenance                  # {"env_vars": {"RAYTRAIN_EFF_COMMIT": ...}}
          ray job submit --address http://127.0.0.1:8265 --working-dir . \\
              --runtime-env-json "$(raytrain-eff provenance \\
                  --runtime-env clusters/runtime_env.yaml)" \\
              -- raytrain-eff train --preset digits-adamw""",
    "eval": "example:\n  raytrain-eff eval ~/raytrain_runs/RUN",
    "export": "example:\n  raytrain-eff export ~/raytrain_runs/RUN --out model.pt",
    "sample": "example:\n  raytrain-eff sample ~/raytrain_runs/RUN --prompt 'In the beginning' "
    "--chars 200",
}


def main(argv: list[str] | None = None) -> int:
    working_dir_on_path()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    try:
        return args.func(args) or 0
    except ConfigError as err:  # a configuration, input or resource problem the user can fix
        return _fail(err, str(err), verbose)
    except RunFailed as err:  # a run that started and failed: one line, the log has the rest
        return _fail(err.cause, str(err), verbose, rc=1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _is_ray_failure(err):
            raise  # a bug: its traceback is what a report needs
        return _fail(err, _ray_failure_line(args, err), verbose, rc=1)


def working_dir_on_path() -> None:
    """The working directory on ``sys.path``, as ``python -m`` puts it, so that a task
    factory such as ``examples.my_task:make_task`` imports from where the command runs (Ray
    puts the driver's working directory on its workers' paths itself)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _fail(err: BaseException, line: str, verbose: bool, rc: int = 2) -> int:
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {line}", file=sys.stderr)
    return rc


def _ray_failure_line(args, err: BaseException) -> str:
    line = f"{args.command} failed: {summary(err)}"
    if args.command == "tune" and args.name:
        from raytrain_eff.tune.sweep import resume_command

        line += f"; resume with: {resume_command(args, args.name)}"
    return line + " (--verbose shows Ray's traceback)"


def _is_ray_failure(err: BaseException) -> bool:
    """A failure Ray reports for a worker or trial (told in one line), not a bug of ours."""
    if "ray" not in sys.modules:
        return False
    import ray.exceptions

    kinds: list[type] = [ray.exceptions.RayError]
    for module, name in (("ray.train", "TrainingFailedError"), ("ray.tune", "TuneError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            kinds.append(cls)
    return isinstance(err, tuple(kinds))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raytrain-eff",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train PyTorch models on Ray with efficient-training methods and measure "
        "what they save.",
        epilog="run `raytrain-eff COMMAND --help` for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    p = _sub(sub, "train", "train a preset or config on Ray Train")
    _config_args(p)
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run (its directory, or a name "
        "under run.storage_path) from its newest good checkpoint",
    )
    p.add_argument(
        "--from-checkpoint",
        metavar="DIR|STEP",
        help="with --resume: start from "
        "this checkpoint (its directory or a step) instead of the newest",
    )
    p.add_argument(
        "--address",
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray started for this run)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the config")
    p.set_defaults(func=cmd_train)

    p = _sub(sub, "tune", "sweep a YAML search space with Ray Tune (each trial a Train run)")
    p.add_argument("space", help="search-space YAML (see tune_spaces/)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied to the space's base config",
    )
    p.add_argument("--name", help="sweep name (default: sweep-<space>-<time>)")
    p.add_argument(
        "--storage-path",
        help="where the sweep directory goes (default: the base config's run.storage_path)",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS or local)")
    p.set_defaults(func=cmd_tune)

    p = _sub(sub, "exporter", "run the Prometheus exporter by hand (one, or one per Ray node)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address: 127.0.0.1 (this machine "
        "only), node (the Ray node's IP), 0.0.0.0 (every interface) or an address",
    )
    p.add_argument(
        "--port",
        type=int,
        default=9464,
        help="first port tried; the next free one is used if taken",
    )
    p.add_argument(
        "--file-sd",
        help="write a Prometheus file_sd JSON of the exporter targets "
        "(on a cluster, default: one per cluster under $RAYTRAIN_EFF_FILE_SD_DIR)",
    )
    p.add_argument("--address", help="a Ray cluster: start an exporter on every node")
    p.add_argument(
        "--stop",
        action="store_true",
        help="end every exporter and file_sd writer "
        "of the cluster (--address, default auto) and remove the writers' files",
    )
    p.set_defaults(func=cmd_exporter)

    p = _sub(
        sub,
        "provenance",
        "print the runtime env that hands this checkout's commit and "
        "dirty flag to a `ray job submit` run (its summary.json records them)",
    )
    p.add_argument(
        "--runtime-env",
        metavar="YAML",
        help="a runtime env file to extend (e.g. clusters/runtime_env.yaml)",
    )
    p.set_defaults(func=cmd_provenance)

    p = _sub(sub, "presets", "list the packaged presets")
    p.add_argument("--show", metavar="NAME", help="print one preset's YAML")
    p.set_defaults(func=cmd_presets)

    p = _sub(sub, "eval", "evaluate a run's latest checkpoint on the held-out split")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=cmd_eval)

    p = _sub(sub, "export", "write a plain PyTorch state dict with method artefacts folded in")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="output .pt file")
    p.set_defaults(func=cmd_export)

    p = _sub(sub, "sample", "sample text from a language-model run")
    p.add_argument("run", help="run directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--chars", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    from raytrain_eff.report.commands import add_commands

    add_commands(sub)  # compare, report
    for command in sub.choices.values():
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="Ray's own logs on the console, and tracebacks with errors",
        )
    return parser


def _sub(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=textwrap.dedent(EXAMPLES.get(name, "")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="packaged preset name (see `raytrain-eff presets`)")
    src.add_argument("--config", help="experiment YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. run.steps=200 methods.adamw.lr=1e-3",
    )


def _record_provenance() -> None:
    """The commit and dirty flag of the checkout this command runs in, for summary.json: read
    here, on the submitting side, because a job's uploaded working dir has no .git."""
    from raytrain_eff.engine import provenance

    provenance.export_from_checkout()


def cmd_train(args) -> int:
    if args.resume:
        if args.preset or args.config:
            raise ConfigError(
                "--resume continues a run with its saved config; drop --preset/--config"
            )
        from raytrain_eff.engine.launch import load_run_config

        cfg = config_mod.apply_resume_overrides(load_run_config(args.resume), args.overrides)
    else:
        cfg = config_mod.load(args.preset, args.config, args.overrides)
    if args.dry_run:
        print(config_mod.dump(cfg), end="")
        return 0
    _record_provenance()
    from raytrain_eff.engine import startup
    from raytrain_eff.engine.launch import fit

    started = startup.process_started()
    result = fit(
        cfg,
        address=args.address,
        resume=bool(args.resume),
        quiet=not args.verbose,
        from_checkpoint=args.from_checkpoint,
        marks={} if started is None else {"command": started},
    )
    print(summary_table(result))
    return 0


def summary_table(result) -> str:
    """The end-of-run table: where the run is and its final numbers."""
    m = result.metrics
    rows = [("run", result.run_name), ("run dir", result.run_dir)]
    rows += [(key, _number(m[key])) for key in ("step", "loss") if key in m]
    rows += [(key, _number(value)) for key, value in m.items() if key.startswith("val_")]
    if "samples_seen" in m:
        rows.append(("samples seen", f"{int(m['samples_seen']):,}"))
    if "wall_s" in m:
        rows.append(("train time", f"{float(m['wall_s']):.1f} s"))
    if result.checkpoint_path:
        rows.append(("checkpoint", result.checkpoint_path))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_tune(args) -> int:
    from raytrain_eff.tune import space

    space.load(args.space, args.overrides)  # fail on a bad file before Ray starts
    if args.resume and not args.name:
        raise ConfigError("--resume needs --name of the sweep to continue")
    _record_provenance()
    from raytrain_eff.tune.sweep import SweepInterrupted, resume_command, run_sweep

    try:
        sweep_dir = run_sweep(
            args.space,
            args.overrides,
            name=args.name,
            storage_path=args.storage_path,
            resume=args.resume,
            address=args.address,
            quiet=not args.verbose,
        )
    except SweepInterrupted as stop:
        print(f"{stop}\nresume with: {resume_command(args, stop.name)}", file=sys.stderr)
        return 130  # as a shell reports a SIGINT
    print(
        f"sweep results: {sweep_dir} (results.parquet, trials.parquet, best.yaml, "
        f"report.html, plots/)"
    )
    return 0


def cmd_exporter(args) -> int:
    from raytrain_eff.monitor.cli_exporter import run_exporter, stop_cluster

    if args.stop:
        return stop_cluster(args.address or "auto")
    return run_exporter(args.host, args.port, args.file_sd, address=args.address)


def cmd_provenance(args) -> int:
    import yaml

    from raytrain_eff.engine import provenance

    base = None
    if args.runtime_env:
        with open(args.runtime_env) as f:
            base = yaml.safe_load(f) or {}
    env = provenance.runtime_env(base)
    if not env["env_vars"].get(provenance.ENV_COMMIT):
        print(
            "warning: not in a git checkout; the run will record commit 'unknown'", file=sys.stderr
        )
    print(json.dumps(env))
    return 0


def cmd_presets(args) -> int:
    if args.show:
        import yaml

        print(yaml.safe_dump(config_mod.preset_raw(args.show), sort_keys=False), end="")
        return 0
    names = config_mod.preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {config_mod.preset_description(name)}")
    return 0


def cmd_eval(args) -> int:
    from raytrain_eff.engine.finished_runs import evaluate_run

    print(json.dumps(evaluate_run(args.run), indent=2))
    return 0


def cmd_export(args) -> int:
    from raytrain_eff.engine.finished_runs import export_run

    print(export_run(args.run, args.out))
    return 0


def cmd_sample(args) -> int:
    from raytrain_eff.engine.finished_runs import sample_run

    print(sample_run(args.run, args.prompt, args.chars, args.temperature, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
