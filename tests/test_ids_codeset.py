"""CodeSet round trip and load_codeset's checks (missing, other dataset, wrong view, stale, size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_ids_helpers import write_processed

from gdr_cli.errors import GdrError, StaleInputError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, input_ref, read_manifest, write_manifest
from gdr_cli.paths import DataPaths
from stages.ids.codeset import CodeSet, load_codeset


def test_save_load_round_trip(tmp_path: Path) -> None:
    codes = np.array([[0, 2, 0], [1, 0, 0], [0, 2, 1]])
    cs = CodeSet(codes, [2, 3, 2])
    cs.save(tmp_path)
    back = CodeSet.load(tmp_path)
    assert np.array_equal(back.codes, codes) and back.vocab_sizes == [2, 3, 2]
    assert back.n_digits == 3 and back.key == "item"
    assert back.as_tensor().dtype.is_floating_point is False and tuple(back.as_tensor().shape) == (3, 3)
    assert back.offsets.tolist() == [0, 2, 5]


def test_codeset_rejects_out_of_vocab() -> None:
    with pytest.raises(ValueError, match="outside"):
        CodeSet(np.array([[0, 3]]), [2, 3])


def fake_ids(paths: DataPaths, name: str, n: int, *, dataset: str | None = None, view: str = "item") -> None:
    """An ID-set folder as build-ids writes it (codes + manifest referencing the processed data)."""
    processed = read_manifest(paths.processed, what="processed", fix="")
    with staged_dir(paths.ids(name)) as folder:
        CodeSet(np.arange(n)[:, None] % 7, [7], key="item" if view == "item" else "user").save(folder)
        write_manifest(
            folder,
            Manifest(
                stage="build_ids",
                dataset=dataset or paths.dataset,
                name=name,
                command=f"gdr build-ids {paths.dataset} --ids {name}",
                inputs={"processed": input_ref(paths.processed, paths.root, processed)},
                stats={"view": view},
            ),
        )


def test_load_codeset_checks(tmp_path: Path) -> None:
    paths = write_processed(tmp_path, n_items=40)
    with pytest.raises(GdrError, match="not found") as err:
        load_codeset(paths, "rqkmeans")
    assert "gdr build-ids toy --method rqkmeans --ids rqkmeans" in err.value.line()
    fake_ids(paths, "good", 40)
    cs, manifest = load_codeset(paths, "good")
    assert cs.n_items == 40 and manifest.stage == "build_ids"
    fake_ids(paths, "other", 40, dataset="elsewhere")
    with pytest.raises(GdrError, match="built for dataset 'elsewhere'"):
        load_codeset(paths, "other")
    fake_ids(paths, "short", 39)
    with pytest.raises(GdrError, match="has 39 items but the processed data has 40"):
        load_codeset(paths, "short")
    with pytest.raises(GdrError, match="item view, not social"):
        load_codeset(paths, "good", view="social")
    write_processed(tmp_path, n_items=40, seed=1)  # processed data rebuilt after the ID set
    with pytest.raises(StaleInputError, match="stale"):
        load_codeset(paths, "good")
