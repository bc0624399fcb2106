"""`gdr build-ids`: one unique token code per item (or per user, `view="social"`).

Reads `processed/`, embeds (text / collab / social, training data only; or a trained run's item table), quantises with the
chosen method, appends the collision digit, and writes `ids/<name>/` (codes.parquet, usage.png,
manifest.json) atomically.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, Stopwatch, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.build_ids import BuildIdsConfig
from stages.ids.codeset import VIEWS, CodeSet
from stages.ids.collisions import disambiguate
from stages.ids.methods import make_method
from stages.ids.run_vectors import run_item_vectors
from stages.ids.sources import embed, social_splits
from stages.ids.usage import level_usage, plot_usage
from stages.inputs import open_processed, open_run


def default_name(config: BuildIdsConfig) -> str:
    """The ID-set name when --ids is not given: the method, plus '-social' for the social view."""
    return config.method + ("-social" if config.view == "social" else "")


def embedder_cache(paths: DataPaths) -> Path:
    """Where packaged embedder models are extracted once (`<data root>/.cache/embedders`)."""
    return paths.root / ".cache" / "embedders"


def run(*, dataset: str, data_dir: Path, config: BuildIdsConfig, ids: str | None = None) -> Manifest:
    """Build ID set `ids` (default: `default_name(config)`) for `dataset`; returns its manifest."""
    watch = Stopwatch()
    paths = DataPaths(Path(data_dir), dataset)
    method = make_method(config.method, config)
    name = ids or default_name(config)
    folder = paths.ids(name)
    processed = open_processed(paths)
    key = VIEWS[config.view]
    if config.view == "social":
        social_splits(processed)  # friend recommendation needs a friend graph, whatever the method
    n = processed.table(f"{key}s").height

    inputs = {"processed": processed.ref}
    source = method.source()
    if "from_run" in config.embed.model_fields_set and source != "run":
        raise GdrError(
            f"--from-run names the run whose item table --source run quantises, but the source is {source!r}",
            fix="add --source run (rqkmeans or rqvae, item view), or drop --from-run",
        )
    if source is None:
        emb, emb_stats = None, {"embedding_source": None}
    elif source == "run":
        trained = open_run(paths, config.embed.from_run, model="sasrec")
        inputs["run"] = trained.ref
        emb, emb_stats = run_item_vectors(trained, n_items=n, view=config.view, name=config.embed.from_run)
    else:
        emb, emb_stats = embed(source, processed, config.embed, n=n, seed=config.seed, cache=embedder_cache(paths))
    sem, level_sizes = method.assign(n, emb)
    codes, collisions = disambiguate(sem)
    codeset = CodeSet(codes, [*level_sizes, max(1, collisions["max_collisions"])], key=key)
    usage = level_usage(codeset.codes, codeset.vocab_sizes)
    stats = {
        "view": config.view,
        "method": config.method,
        "entities": n,
        "n_digits": codeset.n_digits,
        "vocab_sizes": codeset.vocab_sizes,
        "codebook_requested": config.codebook,
        "codebook_effective": level_sizes[0],
        "codebook_sizes": list(level_sizes),
        **collisions,
        "usage": usage,
        **emb_stats,
        **method.stats,
    }
    manifest = Manifest(
        stage="build_ids",
        dataset=dataset,
        name=name,
        command=command_line(),
        config=dump_config(config),
        seed=config.seed,
        inputs=inputs,
        stats=stats,
    )
    with staged_dir(folder) as tmp:
        codeset.save(tmp)
        plot_usage(
            tmp / "usage.png",
            codeset.codes,
            codeset.vocab_sizes,
            f"{dataset} / {name}: code usage per digit ({n} {key}s)",
        )
        manifest.wall_time_s = watch.seconds()
        write_manifest(tmp, manifest)
    _report(manifest, paths.rel(folder))
    return manifest


def _report(manifest: Manifest, where: str) -> None:
    s = manifest.stats
    table = Table(title=f"ID set {manifest.name}", title_justify="left")
    for col in ("digit", "vocab", "used", "entropy (bits)", "max (bits)"):
        table.add_column(col, justify="right")
    for u in s["usage"]:
        table.add_row(
            str(u["digit"]), str(u["size"]), str(u["used"]), f"{u['entropy_bits']:.2f}", f"{u['max_entropy_bits']:.2f}"
        )
    console.print(table)
    console.print(
        f"build-ids: {s['entities']} {'users' if s['view'] == 'social' else 'items'} -> {s['n_digits']}-digit codes "
        f"({s['method']}), collisions {s['collision_rate_before']:.1%} before / {s['collision_rate_after']:.1%} after "
        f"(max group {s['max_collisions']}), wrote {where} in {manifest.wall_time_s:.1f}s",
        soft_wrap=True,
    )
