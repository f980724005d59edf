"""The ``joblib-rs`` command line (also ``python -m joblib_rs``).

::

    joblib-rs cache ls LOCATION [--json]
    joblib-rs cache show LOCATION FUNC [--json] [--verify]
    joblib-rs cache prune LOCATION [--max-size 10G] [--max-age 30d] [--max-items N]
                                   [--dry-run] [--yes]
    joblib-rs cache clear LOCATION [FUNC] [--yes]
    joblib-rs inspect FILE [--json]
    joblib-rs convert IN OUT [--to jrs|joblib] [--compress C] [--allow PATTERN]... [--fsync]
                             [--json]
    joblib-rs run SCRIPT [ARGS...] | run -m MODULE [ARGS...]

Exit status: 0 success; 1 something not found or damaged, or a declined confirmation; 2 bad
arguments. Errors go to stderr as ``joblib-rs: error: <message>``. See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from joblib_rs.cli._errors import EXIT_FAILURE, EXIT_USAGE, CliError

__all__ = ["build_parser", "main"]

PROG = "joblib-rs"


class _Parser(argparse.ArgumentParser):
    """argparse with the command's error format: ``joblib-rs: error: ...`` first, then the
    usage line, status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message}\n")
        self.print_usage(sys.stderr)
        sys.exit(EXIT_USAGE)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (expected an integer)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (must be >= 0)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``joblib-rs`` and its subcommands."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Inspect and prune joblib-rs caches; inspect files written by dump; convert files "
            "between joblib-rs's format and joblib's."
        ),
        epilog="Exit status: 0 ok, 1 not found / damaged / aborted, 2 bad arguments.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cache = commands.add_parser("cache", help="list, show, prune or clear a Memory cache")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    location_help = (
        "the folder or URL (s3://, gs://, az://) given to Memory(location), or its joblib_rs "
        "store root"
    )

    ls = actions.add_parser("ls", help="one row per cached function")
    ls.add_argument("location", metavar="LOCATION", help=location_help)
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    show = actions.add_parser("show", help="the entries of one cached function")
    show.add_argument("location", metavar="LOCATION", help=location_help)
    show.add_argument(
        "func", metavar="FUNC", help="the function's folder path (e.g. mymod/f) or its suffix"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument(
        "--verify", action="store_true", help="also read every output and check its checksums"
    )

    prune = actions.add_parser(
        "prune", help="remove least recently used entries (Memory.reduce_size)"
    )
    prune.add_argument("location", metavar="LOCATION", help=location_help)
    prune.add_argument("--max-size", metavar="SIZE", help="e.g. 500M, 10G (powers of 1024)")
    prune.add_argument("--max-age", metavar="AGE", help="e.g. 90s, 15m, 12h, 30d, 2w")
    prune.add_argument("--max-items", metavar="N", type=_count, help="number of entries kept")
    prune.add_argument("--dry-run", action="store_true", help="only print what would go")
    prune.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    clear = actions.add_parser("clear", help="remove the whole cache or one function")
    clear.add_argument("location", metavar="LOCATION", help=location_help)
    clear.add_argument("func", metavar="FUNC", nargs="?", help="only this function")
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    inspect = commands.add_parser(
        "inspect", help="describe and verify a file written by joblib_rs.dump or joblib.dump"
    )
    inspect.add_argument("file", metavar="FILE", help="a path, or an object's URL (s3://...)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    convert = commands.add_parser(
        "convert",
        help="rewrite a file between joblib-rs's format and joblib's (no code from it runs)",
    )
    convert.add_argument("input", metavar="IN", help="a file written by joblib_rs or joblib")
    convert.add_argument("output", metavar="OUT", help="the file to write (replaced atomically)")
    convert.add_argument(
        "--to",
        choices=("jrs", "joblib"),
        help="output format (default: the other one than IN's)",
    )
    convert.add_argument(
        "--compress",
        metavar="C",
        help="none, a level 1-9, a codec (zlib, gzip, bz2, lzma, xz, lz4; zstd for jrs) or "
        "codec:level (default: IN's codec when OUT's format has it)",
    )
    convert.add_argument(
        "--allow",
        metavar="PATTERN",
        action="append",
        default=[],
        help="also allow this global: module.Name, or pkg.* for a package's classes "
        "(repeatable; numpy.object_ for object arrays); plain data is always allowed",
    )
    convert.add_argument(
        "--fsync", action="store_true", help="flush OUT to disk before renaming it into place"
    )
    convert.add_argument("--json", action="store_true", help="machine-readable output")

    run = commands.add_parser(
        "run",
        help="run a program with `import joblib` bound to joblib-rs (joblib_rs.install())",
    )
    run.add_argument("-m", dest="module", action="store_true", help="TARGET is a module name")
    run.add_argument("target", metavar="TARGET", help="a script path (or a module with -m)")
    run.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def _run(args: argparse.Namespace) -> int:
    from joblib_rs.cli import _cache, _inspect

    if args.command == "inspect":
        return _inspect.run_inspect(args.file, args.json)
    if args.command == "convert":
        from joblib_rs.cli import _convert

        return _convert.run_convert(
            args.input, args.output, args.to, args.compress, args.allow, args.fsync, args.json
        )
    if args.action == "ls":
        return _cache.run_ls(args.location, args.json)
    if args.action == "show":
        return _cache.run_show(args.location, args.func, args.json, args.verify)
    if args.action == "prune":
        return _cache.run_prune(
            args.location, args.max_size, args.max_age, args.max_items, args.dry_run, args.yes
        )
    return _cache.run_clear(args.location, args.func, args.yes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 ok, 1 not found / damaged / aborted, 2 usage error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad arguments
    if args.command == "run":
        # The program's own exceptions and exit status are its own: not caught below.
        from joblib_rs.cli._run import run_program

        try:
            return run_program(args.target, args.args, args.module)
        except CliError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return e.status
    try:
        return _run(args)
    except CliError as e:
        sys.stdout.flush()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.status
    except BrokenPipeError:  # e.g. `joblib-rs cache ls . | head`
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
