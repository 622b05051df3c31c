"""`python -m ranking`: rank a battle file from the command line.

Bad input ends with one line on stderr and exit status 2, never a traceback: the people who run this are
ranking battle logs, not debugging our code.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np

from ranking import bradley_terry as bt
from ranking.compilation import enable_compilation_cache
from ranking.data import BattleFileError, read_battles
from ranking.leaderboard import Leaderboard, RankingOptions, board_dict, code_version, rank_battles, select_battles
from ranking.stats import observed_win_rates, pair_counts, predicted_win_rates, win_matrix

FORMAT_VERSION = "arena-ranking/1"
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError("must be a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ranking",
        description="Rank AI models from a battle file (FastChat/LMArena JSON, "
        "JSON Lines or CSV, or the LLMFAO crowd CSV).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("file", help="battle file: .json, .jsonl or .csv")
        p.add_argument("--input-format", choices=("json", "jsonl", "csv"), help="override the file type")
        p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
        p.add_argument("--out", help="write the output to this path instead of standard output")
        p.add_argument(
            "--include-named",
            action="store_true",
            help="also rank battles whose models were named to the voter (anony = false)",
        )
        p.add_argument("--scale", type=_finite_float, default=400.0, help="Elo points per factor `base` of odds")
        p.add_argument("--base", type=_finite_float, default=10.0, help="Elo base")

    fit = sub.add_parser("fit", help="Bradley-Terry ratings with confidence intervals and rank upper bounds")
    common(fit)
    fit.add_argument(
        "--bootstrap",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="bootstrap replicates (default 1000; 0 uses sandwich intervals)",
    )
    fit.add_argument("--seed", type=_positive_int, default=0, help="bootstrap seed (default 0)")
    fit.add_argument(
        "--ties",
        choices=bt.TIE_MODELS,
        default="half",
        help="half: a tie is half a win each way (FastChat); davidson: an explicit tie model",
    )
    fit.add_argument("--category", help="rank only the battles of this category")
    fit.add_argument(
        "--style",
        action="store_true",
        help="style control: adjust for answer length and markdown (needs conv_metadata)",
    )
    fit.add_argument(
        "--prior",
        type=_finite_float,
        default=bt.DEFAULT_PRIOR,
        help=f"precision of the Gaussian prior on log-strengths (default {bt.DEFAULT_PRIOR:g}; 0 for the plain MLE)",
    )
    fit.add_argument("--confidence", type=_finite_float, default=0.95, help="interval level (default 0.95)")
    fit.add_argument("--anchor", help="pin this model at --anchor-rating (default: mean rating 1000)")
    fit.add_argument("--anchor-rating", type=_finite_float, default=1000.0)
    fit.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    rates = sub.add_parser("winrates", help="observed and fitted win rates of every compared pair")
    common(rates)
    rates.add_argument("--ties", choices=bt.TIE_MODELS, default="half")
    rates.add_argument("--prior", type=_finite_float, default=bt.DEFAULT_PRIOR)
    rates.add_argument("--category", help="only the battles of this category")

    verify = sub.add_parser(
        "verify",
        help="check a published snapshot: its signature, its battle file's SHA-256, "
        "and every number, recomputed from the battle file",
    )
    verify.add_argument("snapshot", help="the snapshot's JSON document, as the arena publishes it")
    verify.add_argument("file", help="the snapshot's battle file (JSON Lines)")
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="the arena's Ed25519 public key: a PEM file, or the base64 of the raw key (default: "
        "the key inside the snapshot, which proves it intact but not who signed it)",
    )
    verify.add_argument(
        "--board",
        action="append",
        metavar="NAME",
        help="recompute only this board (overall, style, category:NAME); repeatable; default all",
    )
    verify.add_argument("--no-recompute", action="store_true", help="check the signature and the hash only")

    elo = sub.add_parser("elo", help="online Elo over the battles in file order")
    common(elo)
    elo.add_argument("--k", type=_finite_float, default=4.0, help="K factor (default 4, as FastChat)")
    elo.add_argument("--initial", type=_finite_float, default=1000.0, help="initial rating (default 1000)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    try:
        return _run(args)
    except (BattleFileError, UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    if args.command == "verify":
        return _verify(args)
    battles = read_battles(args.file, format=args.input_format)
    if args.command == "fit":
        if args.bootstrap == 1:
            raise UsageError("--bootstrap needs at least 2 replicates (or 0 for sandwich intervals)")
        if not 0 < args.confidence < 1:
            raise UsageError("--confidence must lie strictly between 0 and 1")
        options = RankingOptions(
            ties=args.ties,
            prior=args.prior,
            replicates=args.bootstrap,
            seed=args.seed,
            confidence=args.confidence,
            anchor=args.anchor,
            anchor_rating=args.anchor_rating,
            scale=args.scale,
            base=args.base,
            category=args.category,
            style=args.style,
            include_named=args.include_named,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bt.RankingWarning)  # collected in the leaderboard, printed below
            board = rank_battles(battles, options, progress=not args.no_progress and sys.stderr.isatty())
        for message in board.warnings:
            print(f"warning: {message}", file=sys.stderr)
        text = _render_fit(board, args, battles.sha256)
    elif args.command == "winrates":
        text = _render_win_rates(args, battles)
    else:
        text = _render_elo(args, battles)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


EXIT_NOT_VERIFIED = 1


def _verify(args) -> int:
    """Print one line per check; exit 0 when all pass, 1 when something does not match, 2 for bad input."""
    from ranking import signature
    from ranking import snapshot as snap

    try:
        document = json.loads(Path(args.snapshot).read_bytes())
    except json.JSONDecodeError as error:
        raise UsageError(f"{args.snapshot}: not a JSON document ({error.msg} at line {error.lineno})") from None
    if not isinstance(document, dict) or document.get("format") != snap.SNAPSHOT_FORMAT:
        raise UsageError(f"{args.snapshot}: not an arena snapshot (format {snap.SNAPSHOT_FORMAT!r} expected)")
    public_key = None
    if args.public_key:
        key_path = Path(args.public_key)
        text = key_path.read_bytes() if key_path.is_file() else args.public_key
        public_key = signature.load_public_key(text)
    failures = 0

    checked = signature.check_signature(document, public_key)
    print(
        f"signature: {'ok' if checked.ok else 'FAILED'}"
        f"{f' (key {checked.key_id})' if checked.key_id else ''}: {checked.message}"
    )
    failures += not checked.ok

    battles = read_battles(args.file, format="jsonl")
    published_hash = (document.get("battle_file") or {}).get("sha256")
    if battles.sha256 == published_hash:
        print(f"battle file: ok: its SHA-256 {battles.sha256} is the one the snapshot names")
    else:
        print(f"battle file: FAILED: its SHA-256 is {battles.sha256}, the snapshot names {published_hash}")
        failures += 1

    if not args.no_recompute:
        specs = snap.board_specs(document)
        if args.board:
            unknown = sorted(set(args.board) - {name for name, _ in specs})
            if unknown:
                raise UsageError(
                    f"the snapshot has no board {', '.join(unknown)} (it has: {', '.join(name for name, _ in specs)})"
                )
            specs = [(name, board) for name, board in specs if name in args.board]
        for name, board in specs:
            check = snap.recompute_board(battles, board, name)
            if check.exact:
                print(f"board {name}: ok: all {check.models} models reproduced exactly")
            else:
                print(f"board {name}: FAILED: {len(check.problems)} difference(s)")
                for problem in check.problems[:20]:
                    print(f"  {problem}")
                if len(check.problems) > 20:
                    print(f"  ... and {len(check.problems) - 20} more")
                failures += 1
    version = document.get("version")
    print(f"snapshot {version}: {'verified' if not failures else f'NOT verified ({failures} check(s) failed)'}")
    return EXIT_NOT_VERIFIED if failures else 0


def _reproduce_command(args) -> str:
    parts = ["python", "-m", "ranking", args.command, Path(args.file).name]
    if args.command == "fit":
        parts += [
            "--bootstrap",
            str(args.bootstrap),
            "--seed",
            str(args.seed),
            "--ties",
            args.ties,
            "--prior",
            repr(args.prior),
            "--confidence",
            repr(args.confidence),
        ]
        if args.category:
            parts += ["--category", args.category]
        if args.style:
            parts.append("--style")
        if args.anchor:
            parts += ["--anchor", args.anchor, "--anchor-rating", repr(args.anchor_rating)]
    elif args.command == "winrates":
        parts += ["--ties", args.ties, "--prior", repr(args.prior)] + (
            ["--category", args.category] if args.category else []
        )
    else:
        parts += ["--k", repr(args.k), "--initial", repr(args.initial)]
    if args.include_named:
        parts.append("--include-named")
    parts += ["--scale", repr(args.scale), "--base", repr(args.base)]
    return shlex.join(parts)


def _render_fit(board: Leaderboard, args, sha256: str) -> str:
    if args.format == "json":
        board_data = board_dict(board)
        document = {
            "format": FORMAT_VERSION,
            "command": "fit",
            "code_version": code_version(),
            "input": {
                "file": Path(args.file).name,
                "sha256": sha256,
                "battles_read": board_data.pop("battles_read"),
                "battles_used": board_data.pop("battles_used"),
                "excluded": board_data.pop("excluded"),
            },
            "reproduce": _reproduce_command(args),
            **board_data,
        }
        return json.dumps(document, indent=2) + "\n"
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["rank_ub", "tier", "model", "rating", "ci_low", "ci_high", "battles", "wins", "losses", "ties"]
        )
        for row in board.models:
            writer.writerow(
                [
                    row.rank_ub,
                    row.tier,
                    row.model,
                    f"{row.rating:.6f}",
                    f"{row.ci_low:.6f}",
                    f"{row.ci_high:.6f}",
                    row.battles,
                    row.wins,
                    row.losses,
                    row.ties,
                ]
            )
        return out.getvalue()
    level = f"{board.options.confidence:.0%}"
    rows = [
        [str(r.rank_ub), str(r.tier), r.model, f"{r.rating:.1f}", _interval(r), str(r.battles)] for r in board.models
    ]
    header = ["rank", "tier", "model", "rating", f"{level} interval", "battles"]
    lines = _table(header, rows, align="rrlrll")
    notes = [
        f"{board.battles_used} of {board.battles_read} battles ranked; intervals: {board.interval_method}; "
        f"rank = 1 + models whose interval lies wholly above; "
        f"tier: indistinguishable from the tier's first model at {level}"
    ]
    if board.tie_strength is not None:
        notes.append(f"Davidson tie strength nu = {board.tie_strength:.4f}")
    if board.style_coefficients:
        notes.append(
            "style coefficients (log-odds per standard deviation): "
            + ", ".join(
                f"{name} {c['value']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                for name, c in board.style_coefficients.items()
            )
        )
    return "\n".join(lines + [""] + notes) + "\n"


def _interval(row) -> str:
    low = "-inf" if not np.isfinite(row.ci_low) else f"{row.ci_low - row.rating:+.1f}"
    high = "+inf" if not np.isfinite(row.ci_high) else f"{row.ci_high - row.rating:+.1f}"
    return f"{low} / {high}"


def _table(header, rows, align) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _render_win_rates(args, battles) -> str:
    """Long format, one row per ordered compared pair: battles, observed win rate (ties half), fitted rate."""
    options = RankingOptions(
        ties=args.ties,
        prior=args.prior,
        category=args.category,
        include_named=args.include_named,
        scale=args.scale,
        base=args.base,
    )
    keep, _ = select_battles(battles, options)
    if not keep.any():
        raise UsageError("no battle is left after the filters")
    m = len(battles.models)
    counts = pair_counts(battles.model_a[keep], battles.model_b[keep], battles.outcome[keep], m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bt.RankingWarning)
        fit = bt.fit_bradley_terry(counts, ties=args.ties, prior=args.prior, scale=args.scale, base=args.base)
    observed = observed_win_rates(counts)
    predicted = predicted_win_rates(np.nan_to_num(fit.ratings), scale=args.scale, base=args.base)
    games = win_matrix(counts)
    games = games + games.T
    order = sorted(np.flatnonzero(~np.isnan(fit.ratings)), key=lambda i: (-fit.ratings[i], battles.models[i]))
    rows = [
        (battles.models[i], battles.models[j], int(games[i, j]), float(observed[i, j]), float(predicted[i, j]))
        for i in order
        for j in order
        if i != j and games[i, j] > 0
    ]
    if args.format == "json":
        return (
            json.dumps(
                {
                    "format": FORMAT_VERSION,
                    "command": "winrates",
                    "code_version": code_version(),
                    "input": {"file": Path(args.file).name, "sha256": battles.sha256},
                    "reproduce": _reproduce_command(args),
                    "pairs": [dict(zip(("model", "opponent", "battles", "observed", "predicted"), r)) for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "opponent", "battles", "observed", "predicted"])
        writer.writerows([a, b, n, f"{o:.6f}", f"{p:.6f}"] for a, b, n, o, p in rows)
        return out.getvalue()
    table = [[a, b, str(n), f"{o:.3f}", f"{p:.3f}"] for a, b, n, o, p in rows]
    return "\n".join(_table(["model", "opponent", "battles", "observed", "predicted"], table, "llrrr")) + "\n"


def _render_elo(args, battles) -> str:
    from ranking.elo import online_elo

    keep = np.ones(battles.model_a.shape[0], bool) if args.include_named else battles.anony
    if not keep.any():
        raise UsageError("no anonymous battle to rate (use --include-named to rate named ones)")
    a, b = battles.model_a[keep], battles.model_b[keep]
    result = online_elo(
        a,
        b,
        battles.outcome[keep],
        len(battles.models),
        k=args.k,
        scale=args.scale,
        base=args.base,
        initial=args.initial,
    )
    counts = np.bincount(a, minlength=len(battles.models)) + np.bincount(b, minlength=len(battles.models))
    ratings = np.asarray(result.ratings)
    order = sorted(np.flatnonzero(counts), key=lambda i: (-ratings[i], battles.models[i]))
    if args.format == "json":
        document = {
            "format": FORMAT_VERSION,
            "command": "elo",
            "code_version": code_version(),
            "input": {
                "file": Path(args.file).name,
                "sha256": battles.sha256,
                "battles_read": int(battles.model_a.shape[0]),
                "battles_used": int(keep.sum()),
            },
            "options": {
                "k": args.k,
                "scale": args.scale,
                "base": args.base,
                "initial": args.initial,
                "include_named": args.include_named,
            },
            "reproduce": _reproduce_command(args),
            "models": [
                {"model": battles.models[i], "rating": float(ratings[i]), "battles": int(counts[i])} for i in order
            ],
        }
        return json.dumps(document, indent=2) + "\n"
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "rating", "battles"])
        for i in order:
            writer.writerow([battles.models[i], f"{ratings[i]:.6f}", int(counts[i])])
        return out.getvalue()
    rows = [[str(n + 1), battles.models[i], f"{ratings[i]:.1f}", str(int(counts[i]))] for n, i in enumerate(order)]
    return "\n".join(_table(["#", "model", "elo", "battles"], rows, align="rlrr")) + "\n"
