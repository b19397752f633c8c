"""The ``greenstream`` command: generate sample files, and process the landing zone through Dagster."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from pathlib import Path

from greenstream_assets.generate import NO_DEFECTS, Defects, write_day


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greenstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic meter files into the landing zone")
    gen.add_argument("--meters", type=_bounded(int, 1), default=200)
    gen.add_argument("--days", type=_bounded(int, 1), default=7)
    gen.add_argument("--start", type=date.fromisoformat, default=date.today() - timedelta(days=7))
    gen.add_argument(
        "--interval",
        type=_interval,
        default=15,
        help="minutes between readings (a divisor of 1440, so that a day is whole intervals)",
    )
    gen.add_argument("--layout", choices=["batch", "per-meter"], default="batch")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--clean", action="store_true", help="inject no defects")
    for name, default in vars(Defects()).items():
        # Shares of rows or meters between 0 and 1; a count of files from 0 up.
        kind = _bounded(float, 0.0, 1.0) if isinstance(default, float) else _bounded(int, 0)
        gen.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)

    run = sub.add_parser("run", help="process what is in the landing zone now, through Dagster")
    run.add_argument("--day", type=date.fromisoformat, help="re-materialize this day (YYYY-MM-DD)")

    args = parser.parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    return _run(args.day)


def _bounded(kind: type, low: float, high: float | None = None):
    """An argparse type: ``kind`` of the text, within [low, high]; else a one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        if value < low or (high is not None and value > high) or value != value:
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {bounds}")
        return value

    return parse


def _interval(text: str) -> int:
    minutes = _bounded(int, 1, 1440)(text)
    if 1440 % minutes:
        raise argparse.ArgumentTypeError(
            f"{minutes} does not divide a day (1440 minutes) into whole intervals"
        )
    return minutes


def _generate(args: argparse.Namespace) -> int:
    from greenstream_assets.defs.resources import StorageResource

    landing = StorageResource().landing_store()
    defects = NO_DEFECTS if args.clean else Defects(**{k: getattr(args, k) for k in vars(Defects())})
    total = 0
    for offset in range(args.days):
        day = args.start + timedelta(days=offset)
        keys = write_day(landing, args.meters, day, args.interval, args.layout, defects, args.seed + offset)
        total += len(keys)
    print(f"wrote {total} files for {args.days} day(s) of {args.meters} meters into {landing.url}")
    return 0


def _run(day: date | None) -> int:
    from greenstream_assets.defs.partitions import daily_partitions
    from greenstream_assets.runner import run_landing_zone

    if day is not None and not daily_partitions.has_partition_key(day.isoformat()):
        first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
        print(
            f"greenstream run: {day} is no day partition: days run from {first} to {last} (UTC)",
            file=sys.stderr,
        )
        return 2
    if day is None:
        from greenstream_assets.defs.resources import StorageResource

        landing = StorageResource().landing_url()
        if "://" not in landing and not Path(landing).is_dir():
            # A mistyped folder would otherwise look like an empty landing zone.
            print(
                f"greenstream run: the landing zone {landing} is no folder (GREENSTREAM_LANDING): "
                "nothing to ingest",
                file=sys.stderr,
            )
            return 2
    ensure_dagster_home()
    summary = run_landing_zone(day)
    print(summary.render())
    if summary.failed:
        print("greenstream run: FAILED: " + "; ".join(summary.failed), file=sys.stderr)
        return 1
    return 0


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME (default ./.dagster_home), seeded with the local instance config."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text((Path(__file__).resolve().parent / "dagster_local.yaml").read_text())
    nux = home / ".nux" / "nux.yaml"
    if not nux.exists():
        nux.parent.mkdir(exist_ok=True)
        nux.write_text("seen: 1\n")
    return home


if __name__ == "__main__":
    sys.exit(main())
