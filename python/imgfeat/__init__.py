"""imgfeat: image features for similarity search and de-duplication. For each photo: SSD object
detection, a crop of the main object, CNN embeddings of the object and the whole image, and compact
binary codes; then Hamming search and near-duplicate groups.

Locally, on pyarrow tables (no Spark)::

    import imgfeat
    table = imgfeat.extract("photos/")               # one row per file, the features schema
    groups = imgfeat.find_duplicates("photos/")      # group, path, representative
    hits = imgfeat.search(table, "query.jpg")        # path, distance, cosine; nearest first
    rows = imgfeat.Pipeline({"codes": {"bits": 128}}).process([open("a.jpg", "rb").read()])

On Spark: ``imgfeat.ImageFeatureExtractor`` and ``imgfeat.NearDuplicates`` (``pyspark.ml`` stages over the
JVM transformers; the jar is inside this package, see ``imgfeat.spark.session``), and
``imgfeat.spark.extract`` for Spark Connect.

Names load on first use, so that the local API needs no pyspark and the PySpark classes no native module
(they also run from a zip of this folder, ``--py-files``).
"""
import sys
from typing import Any, List

__version__ = "0.1.0"

_LOCAL = ("Pipeline", "Index", "extract", "find_duplicates", "search", "ImgfeatError")
_SPARK_ML = ("ImageFeatureExtractor", "NearDuplicates")
__all__ = list(_LOCAL + _SPARK_ML)


def __getattr__(name: str) -> Any:
    if name in _LOCAL:
        from . import _local

        return getattr(_local, name)
    if name in _SPARK_ML:
        try:
            from . import ml
        except ModuleNotFoundError as missing:
            if missing.name and missing.name.split(".")[0] in ("pyspark", "numpy"):
                raise ImportError(f"imgfeat.{name} needs pyspark and numpy: pip install 'imgfeat[spark]' "
                                  f"({missing})") from missing
            raise
        return getattr(ml, name)
    raise AttributeError(f"module 'imgfeat' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + __all__)


# pyspark rebuilds a loaded stage from its JVM class name (JavaParams._from_java imports the module
# "ai.imgfeat" and takes the class of that name), so loading a Pipeline or PipelineModel holding these
# stages needs "ai.imgfeat" to resolve to this package, as spark-nlp does for its com.johnsnowlabs classes.
sys.modules.setdefault("ai.imgfeat", sys.modules[__name__])
