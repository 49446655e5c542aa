"""imgfeat without Spark: the pipeline, extraction of a folder, search and near-duplicate groups, on
``pyarrow`` tables of the features schema (the CLI's and the Spark jobs' columns). The work is the Rust
crate's, through ``imgfeat._native``; the GIL is released while it runs."""
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pyarrow as pa

from . import _bundled, _native
from ._native import ImgfeatError

__all__ = ["Pipeline", "Index", "extract", "find_duplicates", "search", "ImgfeatError"]

ConfigLike = Union[None, str, Dict[str, Any]]
PathLike = Union[str, "os.PathLike[str]"]
Inputs = Union[PathLike, Sequence[PathLike]]


def _user_config_json(config: ConfigLike) -> str:
    """``config`` (a dict, or a JSON object string) as a JSON object string."""
    return json.dumps(_fields(config))


def _config_json(config: ConfigLike, threads: Optional[int]) -> str:
    """The native configuration: ``config`` (a dict, or a JSON object string; any field ``imgfeat config``
    prints, the others keep their defaults), ``threads`` over it, and the bundled models unless the
    config or ``IMGFEAT_MODEL_DIR`` names a folder."""
    fields = _fields(config)
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ValueError(f"threads must be a whole number ≥ 0 (0: every core), not {threads!r}")
        fields["threads"] = threads
    if "model_dir" not in fields and "IMGFEAT_MODEL_DIR" not in os.environ:
        bundled = _bundled.model_dir()
        if bundled is not None:
            fields["model_dir"] = str(bundled)
    return json.dumps(fields)


def _fields(config: ConfigLike) -> Dict[str, Any]:
    if config is None:
        fields: Dict[str, Any] = {}
    elif isinstance(config, dict):
        fields = dict(config)
    elif isinstance(config, str):
        try:
            fields = json.loads(config)
        except ValueError as error:
            raise ValueError(f"config is not valid JSON: {error}") from None
        if not isinstance(fields, dict):
            raise TypeError(f"config must be a JSON object, not {config!r}")
    else:
        raise TypeError(f"config must be a dict or a JSON object string, not {type(config).__name__}")
    return fields


class Pipeline:
    """Loaded models (once; reuse the object) and the threads each call computes on.

    ``config``: a dict or a JSON object string with any field of ``imgfeat config``'s output (detector and
    embedder presets or custom ONNX models, thresholds, ``codes.bits``, ``precision``, limits…); what it
    leaves out keeps its default. ``threads``: compute threads per call (default: every core).
    A bad field raises ``ValueError`` naming it; a model that does not load, ``ImgfeatError``.
    """

    def __init__(self, config: ConfigLike = None, *, threads: Optional[int] = None) -> None:
        self._native = _native.Pipeline(_config_json(config, threads))

    @property
    def threads(self) -> int:
        """Compute threads per call."""
        return self._native.threads

    @property
    def config(self) -> Dict[str, Any]:
        """The configuration in force, every field."""
        return json.loads(self._native.config_json)

    def process(self, images: Sequence[Optional[bytes]], paths: Optional[Sequence[str]] = None) -> pa.Table:
        """One row per encoded image, in order, in the features schema. ``paths`` fill the ``path`` column
        (default: the position, ``"0"``, ``"1"``…). An image that cannot be used (not an image, damaged,
        over the limits, ``None``) is a row with ``error`` set and the other columns null."""
        images = list(images)
        paths = [str(i) for i in range(len(images))] if paths is None else [str(p) for p in paths]
        return pa.Table.from_batches([self._native.process(images, paths)])

    def process_files(self, files: Sequence[PathLike]) -> pa.Table:
        """One row per file, in order; a file that cannot be read is an error row."""
        return pa.Table.from_batches([self._native.process_files([os.fspath(f) for f in files])])

    def __repr__(self) -> str:
        return f"imgfeat.Pipeline(threads={self.threads})"


def _as_list(inputs: Inputs) -> List[str]:
    if isinstance(inputs, (str, bytes)) or hasattr(inputs, "__fspath__"):
        return [os.fspath(inputs)]  # type: ignore[arg-type]
    return [os.fspath(i) for i in inputs]


def extract(inputs: Inputs, config: ConfigLike = None, *, threads: Optional[int] = None, batch_size: int = 32,
            progress: bool = True, pipeline: Optional[Pipeline] = None) -> pa.Table:
    """The features table of every image file under ``inputs`` (a folder, a file, or a list of them;
    folders walked, symlinks followed, each file once), in path order: the rows ``imgfeat extract``
    writes. A progress bar (tqdm) shows on stderr unless ``progress=False``. Pass a ``pipeline`` to reuse
    loaded models; ``config`` and ``threads`` then do not apply."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, not {batch_size}")
    files = _native.image_files(_as_list(inputs))
    pipeline = pipeline if pipeline is not None else Pipeline(config, threads=threads)
    from tqdm.auto import tqdm

    batches = [pipeline._native.process([], [])]  # the schema, for an empty folder
    with tqdm(total=len(files), unit="images", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            batches.append(pipeline._native.process_files(chunk))
            bar.update(len(chunk))
    return pa.Table.from_batches(batches)


def _as_table(table: Union[pa.Table, pa.RecordBatch]) -> pa.Table:
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    if isinstance(table, pa.Table):
        return table
    raise TypeError(f"expected a pyarrow Table of features (imgfeat.extract's, or a features table read with "
                    f"pyarrow.parquet.read_table), not {type(table).__name__}")


class Index:
    """A features table held for search: build it once, query it many times. The table may be in any
    shape imgfeat writes (``imgfeat.extract``'s, the CLI's file, a Spark job's output with its struct
    column, read with ``pyarrow.parquet.read_table``); rows without codes (errors) are left out. Query
    images are embedded with ``pipeline``, or one made from ``config`` (the table's own settings: the
    codes must have the same bits)."""

    def __init__(self, table: Union[pa.Table, pa.RecordBatch], config: ConfigLike = None, *,
                 pipeline: Optional[Pipeline] = None) -> None:
        self._native = _native.Index(_as_table(table))
        self._config = config
        self._pipeline = pipeline

    def __len__(self) -> int:
        return len(self._native)

    def search(self, image: Union[PathLike, bytes], k: int = 10, *, rerank: int = 50, insets: int = 4) -> pa.Table:
        """The ``k`` rows nearest to ``image`` (a file or encoded bytes), nearest first: ``path``, Hamming
        ``distance`` (best over the code pairs), ``cosine`` of the features; the first ``rerank`` by
        Hamming distance re-ordered by cosine, and up to ``insets`` photos pasted into the query searched
        too, as ``imgfeat search`` does."""
        if k < 1 or rerank < 0 or not 0 <= insets <= 16:
            raise ValueError("k must be ≥ 1, rerank ≥ 0 and insets between 0 and 16")
        if self._pipeline is None:
            self._pipeline = Pipeline(self._config)
        data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        return pa.Table.from_batches([self._native.search(self._pipeline._native, bytes(data), k, rerank, insets)])

    def duplicate_groups(self, max_distance: Optional[int] = None, *, verify: bool = True,
                         threads: Optional[int] = None) -> pa.Table:
        """Near-duplicate groups, as ``imgfeat dedup`` makes them: one row per member of a group of two or
        more (``group``, ``path``, ``representative``: the group's smallest path). Rows whose codes are
        within ``max_distance`` bits are candidates (default 47), joined, transitively, when their
        features agree; with ``verify=False`` (``imgfeat dedup --no-verify``, default distance 24) by the
        codes alone, which a table without feature columns needs. ``threads``: how many threads search
        the candidates (default: every core); the groups do not depend on it."""
        if max_distance is not None and max_distance < 0:
            raise ValueError(f"max_distance must be ≥ 0, not {max_distance}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be ≥ 1, not {threads}")
        return pa.Table.from_batches([self._native.duplicate_groups(max_distance, bool(verify), threads)])


def search(table: Union[pa.Table, pa.RecordBatch], image: Union[PathLike, bytes], k: int = 10, *,
           config: ConfigLike = None, pipeline: Optional[Pipeline] = None) -> pa.Table:
    """The ``k`` rows of ``table`` nearest to ``image``: see ``Index.search`` (for many queries, build one
    ``Index`` and reuse it)."""
    return Index(table, config, pipeline=pipeline).search(image, k)


def find_duplicates(photos: Union[Inputs, pa.Table, pa.RecordBatch], max_distance: Optional[int] = None, *,
                    verify: bool = True, config: ConfigLike = None, threads: Optional[int] = None,
                    progress: bool = True) -> pa.Table:
    """Near-duplicate groups (``group``, ``path``, ``representative``) of a folder of photos (extracted
    first, with a progress bar) or of a features table, as ``imgfeat dedup`` makes them."""
    if isinstance(photos, (pa.Table, pa.RecordBatch)):
        table = _as_table(photos)
    else:
        table = extract(photos, config, threads=threads, progress=progress)
    return Index(table).duplicate_groups(max_distance, verify=verify, threads=threads or None)  # 0: every core
