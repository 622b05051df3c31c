"""`arena models`: the models in the arena, changed through the same functions as the labs' API
(arena.catalog.registry), so an operator's endpoint gets the same address policy and real check as a lab's."""

from __future__ import annotations

import click

from arena.catalog import labs, registry
from arena.catalog.audit import OPERATOR
from arena.catalog.identity import set_identity_labels
from arena.cli.common import Group, reports_errors, session, table
from arena.settings import current

models_cli = Group("models", help="The models in the arena.")


@models_cli.command("list")
@click.option("--lab", "lab_name", help="Only this lab's models.")
@reports_errors
def models_list(lab_name: str | None) -> None:
    """Models with organization, kind, status and sampling weight."""
    with session() as s:
        lab = labs.lab_by_name(s, lab_name) if lab_name else None
        rows = [
            [m.name, m.organization or "-", m.kind, m.status, f"{m.sampling_weight:g}"]
            for m in registry.list_models(s, lab)
        ]
    if rows:
        table(["NAME", "ORGANIZATION", "KIND", "STATUS", "WEIGHT"], rows)
    else:
        click.echo("no models")


@models_cli.command("add-endpoint")
@click.option("--name", required=True, help="The model's public name.")
@click.option("--organization", required=True, help="Who made it.")
@click.option("--base-url", required=True, help="OpenAI-compatible base URL, e.g. https://host/v1.")
@click.option("--model", "endpoint_model", required=True, help="The model identifier the endpoint expects.")
@click.option(
    "--api-key",
    envvar="ARENA_ENDPOINT_API_KEY",
    show_envvar=True,
    help="The endpoint's key, stored encrypted (the variable keeps it out of shell history).",
)
@click.option("--lab", "lab_name", help="The lab that owns the model.")
@click.option("--system-prompt", help="A system prompt sent before each conversation.")
@reports_errors
def models_add_endpoint(name, organization, base_url, endpoint_model, api_key, lab_name, system_prompt) -> None:
    """Register an OpenAI-compatible endpoint as a model, after one real request to it (as for a lab)."""
    with session() as s:
        lab = labs.lab_by_name(s, lab_name) if lab_name else None
        model = registry.register_endpoint_model(
            s,
            OPERATOR,
            lab=lab,
            settings=registry.EndpointSettings.from_settings(current()),
            name=name,
            organization=organization,
            base_url=base_url,
            endpoint_model=endpoint_model,
            api_key=api_key,
            system_prompt=system_prompt,
        )
        key_note = "key stored encrypted" if model.endpoint_key_encrypted else "no API key"
        click.echo(
            f"added endpoint model {model.name!r}: {model.base_url} model {model.endpoint_model!r} "
            f"({key_note}; it answered the check)"
        )


def _status_command(action: str):
    @models_cli.command(action, help=f"{action.capitalize()} a model.")
    @click.argument("name")
    @reports_errors
    def command(name: str) -> None:
        with session() as s:
            model = registry.change_status(s, OPERATOR, registry.model_by_name(s, name), action)
            click.echo(f"model {model.name!r} is {model.status}")

    return command


models_pause, models_resume, models_retire = (_status_command(a) for a in ("pause", "resume", "retire"))


@models_cli.command("weight")
@click.argument("name")
@click.argument("weight", type=float)
@reports_errors
def models_weight(name: str, weight: float) -> None:
    """Set a model's published sampling weight W >= 0 (pairs are drawn in proportion to w_a * w_b)."""
    with session() as s:
        model = registry.set_sampling_weight(s, OPERATOR, registry.model_by_name(s, name), weight)
        click.echo(f"model {model.name!r} has sampling weight {model.sampling_weight:g}")


@models_cli.command("identity")
@click.argument("name")
@click.option("--alias", "aliases", multiple=True, help="Add an alias (repeatable).")
@click.option("--family", "families", multiple=True, help="Add a model family, e.g. Llama (repeatable).")
@click.option("--remove-alias", "remove_aliases", multiple=True, help="Remove an alias (repeatable).")
@click.option("--remove-family", "remove_families", multiple=True, help="Remove a family (repeatable).")
@reports_errors
def models_identity(name, aliases, families, remove_aliases, remove_families) -> None:
    """Show or change the names a model's answers must not reveal it by (besides its name and organization).

    The next snapshot re-checks every stored answer against them: votes on answers naming one are left out
    (rule identity_leak), in earlier battles too."""
    with session() as s:
        model = registry.model_by_name(s, name)
        changed = set_identity_labels(
            s,
            model,
            add_aliases=aliases,
            add_families=families,
            remove_aliases=remove_aliases,
            remove_families=remove_families,
            actor=OPERATOR,
        )
        s.commit()
        asked = aliases or families or remove_aliases or remove_families
        note = " (unchanged)" if asked and not changed else ""
        click.echo(
            f"model {model.name!r}: aliases {list(model.aliases or [])}, families {list(model.families or [])}{note}"
        )


GROUPS = (models_cli,)
