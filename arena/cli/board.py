"""`arena safety`, `arena milestones` and `arena board`: the milestone board's commands (arena.board):

    arena safety import FILE [--format csv|json]
    arena safety list [--model M] [--metric X]
    arena milestones add FILE.json
    arena milestones list
    arena milestones evaluate [--snapshot N] [--json]
    arena board export VERSION [--format json|csv] [--out PATH]

Errors are one `error:` line with exit status 2 for bad input (1 otherwise), as everywhere in arena.cli; a file
that does not validate gets one `error:` line per problem first, and nothing of it is stored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from arena.board.exports import board_report, export_csv, export_document, find_snapshot
from arena.board.milestones import MilestoneError, add_milestones, describe_rule, list_milestones
from arena.board.scores import ScoreFileError, import_scores, known_model, load_scores, score_format
from arena.cli.common import (
    BAD_INPUT,
    CommandError,
    Group,
    detail_lines,
    reports_errors,
    session,
    table,
    write_atomically,
)
from arena.leaderboard.reading import iso_utc
from arena.settings import current


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


# ------------------------------------------------------------------------------------------------ safety

safety_cli = Group("safety", help="Safety scores measured elsewhere, imported for the milestone ")


@safety_cli.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    help="CSV, or JSON (a list of objects, or JSON Lines); default: by the file name (.csv is CSV).",
)
@reports_errors
def safety_import(path: Path, fmt: str | None) -> None:
    """Import safety scores: model, metric, value, ci_low?, ci_high?, source, date (YYYY-MM-DD); all or none."""
    fmt = score_format(path.name, fmt)
    text = _read_text(path)
    with session() as db_session:
        try:
            count = import_scores(db_session, text, fmt=fmt, name=str(path))
        except ScoreFileError as e:
            raise CommandError(e.message, BAD_INPUT, detail_lines(e, f"{path}:")) from None
    click.echo(f"imported {count} safety score(s) from {path}")


@safety_cli.command("list")
@click.option("--model", "model", help="Only this model's scores.")
@click.option("--metric", "metric", help="Only this metric.")
@reports_errors
def safety_list(model: str | None, metric: str | None) -> None:
    """Stored safety scores by model, metric and date."""
    with session() as db_session:
        if model is not None:
            known_model(db_session, model)
        scores = load_scores(db_session, model=model, metric=metric)
    rows = [
        [
            s.model,
            s.metric,
            f"{s.value:g}",
            "-" if s.ci_low is None and s.ci_high is None else f"[{_g(s.ci_low)}, {_g(s.ci_high)}]",
            s.source,
            s.measured_on.isoformat(),
            iso_utc(s.imported_at),
        ]
        for s in scores
    ]
    if rows:
        table(["MODEL", "METRIC", "VALUE", "INTERVAL", "SOURCE", "DATE", "IMPORTED"], rows)
    else:
        click.echo("no safety scores")


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# ------------------------------------------------------------------------------------------------ milestones

milestones_cli = Group("milestones", help="Milestones declared by the board, and their decisions.")


@milestones_cli.command("add")
@click.argument("path", metavar="FILE.json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reports_errors
def milestones_add(path: Path) -> None:
    """Declare milestones (one JSON object or a list; see the README); all or none. Never edited afterwards."""
    try:
        payload = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    with session() as db_session:
        try:
            added = add_milestones(db_session, payload)
        except MilestoneError as e:
            raise CommandError(f"{path}: {e.message}", BAD_INPUT, detail_lines(e, f"{path}: ")) from None
        stored_metrics = {s.metric for s in load_scores(db_session)}
    for milestone in added:
        click.echo(f"added milestone {milestone.name!r}: {describe_rule(milestone.definition)}")
        for metric in sorted({t["metric"] for t in milestone.definition["safety"]} - stored_metrics):
            click.echo(f"note: no {metric!r} score is stored yet; no model meets {milestone.name!r} without one")


@milestones_cli.command("list")
@reports_errors
def milestones_list() -> None:
    """The declared milestones, oldest first."""
    with session() as db_session:
        rows = [[m.name, iso_utc(m.created_at)[:10], describe_rule(m.definition)] for m in list_milestones(db_session)]
    if rows:
        table(["NAME", "ADDED", "RULE"], rows)
    else:
        click.echo("no milestones")


@milestones_cli.command("evaluate")
@click.option("--snapshot", "version", type=click.IntRange(1), help="A snapshot version (default: the newest).")
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON (what GET /api/v1/milestones gives).")
@reports_errors
def milestones_evaluate(version: int | None, as_json: bool) -> None:
    """Every milestone on a snapshot: which models meet it, with margins, and which met it first."""
    with session() as db_session:
        snapshot = find_snapshot(db_session, version)
        report = board_report(db_session, snapshot, threshold=float(current().board_correlation_flag))
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    snapshot = report["snapshot"]
    click.echo(
        f"snapshot {snapshot['version']} ({snapshot['created_at']}); safety scores dated on or before "
        f"{report['scores_dated_on_or_before']}; capability at the lower end of the 95 % interval"
    )
    if not report["milestones"]:
        click.echo("no milestones (arena milestones add FILE.json)")
    for milestone in report["milestones"]:
        click.echo("")
        click.echo(f"milestone {milestone['name']!r}: {milestone['rule']}")
        reference = milestone["capability_reference"]
        if reference["note"]:
            click.echo(f"  capability threshold: none ({reference['note']})")
        else:
            of = (
                f" ({reference['rule']} {reference['model']}, rating {reference['rating']:.1f})"
                if reference["model"]
                else ""
            )
            click.echo(f"  capability threshold: {reference['threshold']:.1f}{of}")
        click.echo(f"  met by: {', '.join(milestone['met_by']) or 'no model'}")
        first = milestone["met_first"]
        click.echo(
            f"  met first: snapshot {first['version']} by {', '.join(first['models'])}"
            if first
            else f"  met first: not yet (no model in snapshots up to {snapshot['version']})"
        )
        metrics = [t["metric"] for t in milestone["definition"]["safety"]]
        rows = []
        for decision in milestone["models"]:
            capability = decision["capability"]
            interval = capability["interval"]
            rows.append(
                [
                    decision["model"],
                    "yes" if decision["met"] else "no",
                    _number(capability["value"])
                    + (f" [{_number(interval[0])}, {_number(interval[1])}]" if interval else ""),
                    _signed(capability["margin"]) + ("  prov." if capability["provisional"] else ""),
                    *(_safety_cell(part) for part in decision["safety"]),
                    _why_not(decision, milestone["definition"]),
                ]
            )
        table(["MODEL", "MET", "RATING [95 %]", "MARGIN", *(f"{m} (margin)" for m in metrics), "WHY NOT"], rows)
        notes = sorted({part["note"] for d in milestone["models"] for part in d["safety"] if part.get("note")})
        for note in notes:
            click.echo(f"  note: {note}")
    correlations = report["correlations"]
    if correlations["metrics"]:
        click.echo("")
        click.echo(
            f"safety metrics against capability ({correlations['against']}; {correlations['replicates']} "
            f"bootstrap replicates over models, seed {correlations['seed']}); flag: {correlations['why']}"
        )
        rows = [
            [
                c["metric"],
                c["n"],
                _correlation_cell(c["pearson"], "r"),
                _correlation_cell(c["spearman"], "rho"),
                "FLAGGED" if c["flagged"] else ("-" if c.get("note") else "no"),
                c.get("note", "") if not c["flagged"] else "",
            ]
            for c in correlations["metrics"]
        ]
        table(["METRIC", "N", "PEARSON [95 %]", "SPEARMAN [95 %]", "FLAG", "NOTE"], rows)


def _why_not(decision: dict, definition: dict) -> str:
    """The failing parts in a few words (the JSON output has the full reasons)."""
    if decision["met"]:
        return "-"
    capability, parts = decision["capability"], []
    if capability["value"] is None:
        parts.append("not rated")
    elif not capability["met"]:
        parts.append("capability" if capability["margin"] is not None else "no capability threshold")
    if capability["provisional"] and not definition.get("allow_provisional"):
        parts.append("provisional")
    parts += [
        part["metric"] + (" missing" if part["value"] is None else "") for part in decision["safety"] if not part["met"]
    ]
    return ", ".join(parts)


def _safety_cell(part: dict) -> str:
    if part["value"] is None:
        return "missing"
    return f"{part['value']:g} ({part['margin']:+.3g})"


def _correlation_cell(stat: dict, name: str) -> str:
    if stat[name] is None:
        return "-"
    return f"{stat[name]:+.2f} [{_number(stat['ci_low'], 2)}, {_number(stat['ci_high'], 2)}]"


# ------------------------------------------------------------------------------------------------ export

board_group = Group("board", help="The milestone board's signed export.")


@board_group.command("export")
@click.argument("version", type=click.IntRange(1))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    help="Signed JSON (default), or CSV with a detached signature; a --out name ending in .csv picks CSV.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: standard output); CSV also writes its signature to PATH.sig.",
)
@reports_errors
def board_export(version: int, fmt: str | None, out: Path | None) -> None:
    """The board for snapshot VERSION: capability, safety scores used, milestone decisions, correlations."""
    fmt = fmt or ("csv" if out is not None and out.suffix.lower() == ".csv" else "json")
    threshold = float(current().board_correlation_flag)
    with session() as db_session:
        snapshot = find_snapshot(db_session, version)
        if fmt == "json":
            export = export_document(db_session, current(), snapshot, threshold=threshold)
            text, signature = json.dumps(export, indent=2, ensure_ascii=False) + "\n", None
        else:
            data, signature = export_csv(db_session, current(), snapshot, threshold=threshold)
            text = data.decode("utf-8")
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        if signature is not None:
            click.echo(f"signature (Ed25519, base64, key {signature['key_id']}): {signature['value']}", err=True)
        return
    write_atomically(out, lambda f: f.write(text))
    if signature is not None:
        sig = out.with_name(out.name + ".sig")
        write_atomically(sig, lambda f: f.write(signature["value"] + "\n"))
        click.echo(
            f"wrote the board of snapshot {version} to {out}, its signature (key {signature['key_id']}) to {sig}"
        )
    else:
        click.echo(f"wrote the signed board of snapshot {version} to {out}")


GROUPS = (safety_cli, milestones_cli, board_group)
