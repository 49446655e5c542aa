"""imgfeat's PySpark classes: thin py4j wrappers over the JVM transformers ``ai.imgfeat.ImageFeatureExtractor``
and ``ai.imgfeat.NearDuplicates``, with the params, getters and setters of ``pyspark.ml`` and its persistence.

They need the Spark jar on the session's classpath: ``imgfeat.spark.session()`` (or
``imgfeat.spark.configure(builder)``) adds the one inside this package; with ``spark-submit``, pass
``--jars`` and this package (installed, or ``--py-files`` a zip of ``python/imgfeat``). Then::

    from imgfeat import ImageFeatureExtractor, NearDuplicates
    images = spark.read.format("binaryFile").load("s3a://bucket/photos")
    extractor = ImageFeatureExtractor().setOutputCol("features").setCodeBits(128).setConfig({"score_threshold": 0.4})
    features = extractor.transform(images).select("path", "features.*")
    groups = NearDuplicates().setMaxDistance(12).transform(features)  # path, representative, group_size

Select the columns to keep (as above, or ``.drop("content")``) before writing ``features``: the input's
``content`` column holds every photo's bytes.

Both classes save and load as any ``pyspark.ml`` stage, alone or in a ``Pipeline``/``PipelineModel``, and
the files are the Scala classes' own (``DefaultParamsWritable``): saved from Python, they load in Scala, and
the other way round. On a Spark Connect session (no py4j), use ``imgfeat.spark.extract`` instead.
"""
import json
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Union

from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import JavaMLReadable, JavaMLReader, JavaMLWritable
from pyspark.ml.wrapper import JavaTransformer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["ImageFeatureExtractor", "NearDuplicates"]

_JVM_PACKAGE = "ai.imgfeat"


def _json_object(value: Union[Dict[str, Any], str]) -> str:
    """The ``config`` param's converter: a dict as JSON, or a string that must hold a JSON object. Whether its
    fields are imgfeat's is for the native parser to say, on the driver, when the transformer runs."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as error:
            raise TypeError(f"config is not valid JSON: {error}") from None
        if isinstance(parsed, dict):
            return value
    raise TypeError(f"config must be a dict or a JSON object string, not {value!r}")


class _ImgfeatReader(JavaMLReader):
    """Loads with the Scala companion object of the class (``ai.imgfeat.X``), where pyspark would look for
    a JVM class named after the Python module (``imgfeat.X``)."""

    @classmethod
    def _java_loader_class(cls, clazz: type) -> str:
        return f"{_JVM_PACKAGE}.{clazz.__name__}"


class _ImgfeatReadable(JavaMLReadable):
    @classmethod
    def read(cls) -> JavaMLReader:
        """The reader of a saved stage (``ImageFeatureExtractor.load(path)`` uses it)."""
        return _ImgfeatReader(cls)


class ImageFeatureExtractor(JavaTransformer, HasInputCol, HasOutputCol, _ImgfeatReadable, JavaMLWritable):
    """Adds a struct column of image features: detection, crop, embeddings, binary codes, error.

    The same class name, params, defaults, getters and setters as the Scala API; every param is forwarded to
    the JVM object. ``config`` (a dict, or a JSON object string) carries any setting of the native pipeline,
    the fields ``imgfeat config`` prints: custom detector and embedder models with their input specs,
    thresholds, class allow-list, embed mode, limits, precision. The other params override it only where
    they are set explicitly (by a setter or a keyword), and threads come from ``spark.task.cpus`` unless
    ``threads`` or the config sets them. ``transform`` checks the merged settings on the driver with the
    native parser, so a bad field fails before any task runs, with a message naming it.
    """

    pathCol: "Param[str]" = Param(Params._dummy(), "pathCol",
                                  "column of file paths, read when inputCol is absent from the input",
                                  typeConverter=TypeConverters.toString)
    batchSize: "Param[int]" = Param(Params._dummy(), "batchSize", "images per native call",
                                    typeConverter=TypeConverters.toInt)
    threads: "Param[int]" = Param(Params._dummy(), "threads", "native compute threads per task; 0 means spark.task.cpus",
                                  typeConverter=TypeConverters.toInt)
    detector: "Param[str]" = Param(Params._dummy(), "detector", "detector preset: coco or oidv4",
                                   typeConverter=TypeConverters.toString)
    embedder: "Param[str]" = Param(Params._dummy(), "embedder", "embedder preset: efficientnet_lite0",
                                   typeConverter=TypeConverters.toString)
    codeBits: "Param[int]" = Param(Params._dummy(), "codeBits", "binary code length: 64, 128 or 256",
                                   typeConverter=TypeConverters.toInt)
    modelDir: "Param[str]" = Param(Params._dummy(), "modelDir",
                                   "folder with the models on every node; empty means the jar's",
                                   typeConverter=TypeConverters.toString)
    precision: "Param[str]" = Param(Params._dummy(), "precision",
                                    "arithmetic of the 1x1 and dense convolutions: auto (bf16 where the CPU has "
                                    "AVX-512 BF16, else f32), f32, bf16, or int8 (fast on AVX-512 VNNI, the same rows on every CPU)",
                                    typeConverter=TypeConverters.toString)
    config: "Param[str]" = Param(Params._dummy(), "config",
                                 "settings of the native pipeline as a JSON object: any field of imgfeat's configuration "
                                 "(imgfeat config prints them all); the other params override it where they are set "
                                 "explicitly",
                                 typeConverter=_json_object)

    @keyword_only
    def __init__(self, *, inputCol: str = "content", pathCol: str = "path", outputCol: str = "features",
                 batchSize: int = 32, threads: int = 0, detector: str = "coco", embedder: str = "efficientnet_lite0",
                 codeBits: int = 256, modelDir: str = "", precision: str = "auto",
                 config: Union[Dict[str, Any], str] = "{}") -> None:
        super().__init__()
        self._java_obj = self._new_java_obj(f"{_JVM_PACKAGE}.ImageFeatureExtractor", self.uid)
        self._setDefault(inputCol="content", pathCol="path", outputCol="features", batchSize=32, threads=0,
                         detector="coco", embedder="efficientnet_lite0", codeBits=256, modelDir="", precision="auto",
                         config="{}")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol: str = "content", pathCol: str = "path", outputCol: str = "features",
                  batchSize: int = 32, threads: int = 0, detector: str = "coco", embedder: str = "efficientnet_lite0",
                  codeBits: int = 256, modelDir: str = "", precision: str = "auto",
                  config: Union[Dict[str, Any], str] = "{}") -> "ImageFeatureExtractor":
        """Sets the params given by keyword (and only those: the others stay unset, so ``config`` keeps its
        fields for them)."""
        return self._set(**self._input_kwargs)

    def setInputCol(self, value: str) -> "ImageFeatureExtractor":
        """The binary column of encoded images (default ``content``, as Spark's ``binaryFile`` source)."""
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "ImageFeatureExtractor":
        """The struct column added (default ``features``)."""
        return self._set(outputCol=value)

    def getPathCol(self) -> str:
        return self.getOrDefault(self.pathCol)

    def setPathCol(self, value: str) -> "ImageFeatureExtractor":
        """The column of file paths read (any Hadoop path) when the input has no ``inputCol``."""
        return self._set(pathCol=value)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def setBatchSize(self, value: int) -> "ImageFeatureExtractor":
        """Images per native call."""
        return self._set(batchSize=value)

    def getThreads(self) -> int:
        return self.getOrDefault(self.threads)

    def setThreads(self, value: int) -> "ImageFeatureExtractor":
        """Native compute threads per task; 0 means ``spark.task.cpus``."""
        return self._set(threads=value)

    def getDetector(self) -> str:
        return self.getOrDefault(self.detector)

    def setDetector(self, value: str) -> "ImageFeatureExtractor":
        """A detector preset, ``coco`` or ``oidv4`` (a custom model: a full ``detector`` object in ``config``)."""
        return self._set(detector=value)

    def getEmbedder(self) -> str:
        return self.getOrDefault(self.embedder)

    def setEmbedder(self, value: str) -> "ImageFeatureExtractor":
        """An embedder preset, ``efficientnet_lite0`` (a custom model: a full ``embedder`` object in ``config``)."""
        return self._set(embedder=value)

    def getCodeBits(self) -> int:
        return self.getOrDefault(self.codeBits)

    def setCodeBits(self, value: int) -> "ImageFeatureExtractor":
        """Binary code length: 64, 128 or 256."""
        return self._set(codeBits=value)

    def getModelDir(self) -> str:
        return self.getOrDefault(self.modelDir)

    def setModelDir(self, value: str) -> "ImageFeatureExtractor":
        """A folder with the models present on every node; empty means the models inside the jar."""
        return self._set(modelDir=value)

    def getPrecision(self) -> str:
        return self.getOrDefault(self.precision)

    def setPrecision(self, value: str) -> "ImageFeatureExtractor":
        """``auto`` (the default: ``bf16`` where the CPU has AVX-512 BF16, else ``f32``), ``f32``, ``bf16``, or ``int8``
        (the 1x1 and dense convolutions in u8×s8, about twice f32's speed on AVX-512 VNNI, the same rows on every CPU)."""
        return self._set(precision=value)

    def getConfig(self) -> str:
        """The ``config`` param as a JSON object string."""
        return self.getOrDefault(self.config)

    def setConfig(self, value: Union[Dict[str, Any], str]) -> "ImageFeatureExtractor":
        """Any settings of the native pipeline, as a dict or a JSON object string (``imgfeat config`` prints
        every field); the other params override it where they are set explicitly."""
        return self._set(config=value)

    def nativeThreadsPerTask(self, tasks: int) -> List[int]:
        """Diagnostic: the native compute threads each of ``tasks`` tasks uses with this configuration."""
        from pyspark.sql import SparkSession

        self._transfer_params_to_java()
        session = SparkSession.getActiveSession()
        return list(self._java_obj.nativeThreadsPerTask(session._jsparkSession, tasks))


class NearDuplicates(JavaTransformer, _ImgfeatReadable, JavaMLWritable):
    """Near-duplicate groups, the same as ``imgfeat dedup``'s: one row per member of a group of two or more
    rows (the id, ``representative``: the group's smallest id, ``group_size``). Rows whose codes are within
    ``maxDistance`` bits (47) are candidates, joined when their features agree (``verify``, as ``imgfeat dedup``)
    or with ``verify`` off by the codes alone (``--no-verify``, 24 bits unless set); transitively (GraphX
    connected components). Exact at any
    distance: a band join on the codes (multi-index hashing) over the distinct codes only, so thousands of
    rows with one code cost no more than one.

    The same class name, params, defaults, getters and setters as the Scala API; every param is forwarded to
    the JVM object.
    """

    idCol: "Param[str]" = Param(Params._dummy(), "idCol", "column identifying a row (a string or number)",
                  typeConverter=TypeConverters.toString)
    codeCols: "Param[List[str]]" = Param(Params._dummy(), "codeCols",
                     "binary code columns; two rows are joined when any of their codes are within maxDistance",
                     typeConverter=TypeConverters.toListString)
    maxDistance: "Param[int]" = Param(Params._dummy(), "maxDistance",
                        "largest Hamming distance of candidate codes (with verify off, 24 unless set)",
                        typeConverter=TypeConverters.toInt)
    bands: "Param[int]" = Param(Params._dummy(), "bands",
                  "bands of bits each code is cut into for the join (a divisor of the code's bits); exact for any maxDistance",
                  typeConverter=TypeConverters.toInt)
    verify: "Param[bool]" = Param(Params._dummy(), "verify",
                   "join candidates only when their features agree, as imgfeat dedup (off: by the codes alone, as --no-verify)",
                   typeConverter=TypeConverters.toBoolean)
    featureCols: "Param[List[str]]" = Param(Params._dummy(), "featureCols",
                        "float feature columns of the codes in codeCols, in the same order, for verify",
                        typeConverter=TypeConverters.toListString)
    insetsCol: "Param[str]" = Param(Params._dummy(), "insetsCol",
                      "column of each row's insets (array of structs with code and feature), compared with other rows' "
                      "whole images under verify; empty, or a column the input lacks: none",
                      typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, idCol: str = "path", codeCols: Sequence[str] = ("code", "whole_code"), maxDistance: int = 47,
                 bands: int = 16, verify: bool = True,
                 featureCols: Sequence[str] = ("feature", "whole_feature"), insetsCol: str = "insets") -> None:
        super().__init__()
        self._java_obj = self._new_java_obj(f"{_JVM_PACKAGE}.NearDuplicates", self.uid)
        self._setDefault(idCol="path", codeCols=["code", "whole_code"], maxDistance=47, bands=16, verify=True,
                         featureCols=["feature", "whole_feature"], insetsCol="insets")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, idCol: str = "path", codeCols: Sequence[str] = ("code", "whole_code"), maxDistance: int = 47,
                  bands: int = 16, verify: bool = True,
                  featureCols: Sequence[str] = ("feature", "whole_feature"),
                  insetsCol: str = "insets") -> "NearDuplicates":
        """Sets any of the params by keyword."""
        return self._set(**self._input_kwargs)

    def getIdCol(self) -> str:
        return self.getOrDefault(self.idCol)

    def setIdCol(self, value: str) -> "NearDuplicates":
        """The column identifying a row (a string or number; ``path`` by default)."""
        return self._set(idCol=value)

    def getCodeCols(self) -> List[str]:
        return self.getOrDefault(self.codeCols)

    def setCodeCols(self, value: Sequence[str]) -> "NearDuplicates":
        """The binary code columns; two rows are joined when any of their codes are within ``maxDistance``."""
        return self._set(codeCols=value)

    def getMaxDistance(self) -> int:
        return self.getOrDefault(self.maxDistance)

    def setMaxDistance(self, value: int) -> "NearDuplicates":
        """The largest Hamming distance of near-duplicates (24 of 256 bits by default, as ``imgfeat dedup``)."""
        return self._set(maxDistance=value)

    def getBands(self) -> int:
        return self.getOrDefault(self.bands)

    def setBands(self, value: int) -> "NearDuplicates":
        """Bands each code is cut into for the join (a divisor of the code's bits); exact for any distance."""
        return self._set(bands=value)

    def getVerify(self) -> bool:
        return self.getOrDefault(self.verify)

    def setVerify(self, value: bool) -> "NearDuplicates":
        """Join candidates only when their features agree, as ``imgfeat dedup`` does (the default); off, by the
        codes alone, as ``imgfeat dedup --no-verify`` (maxDistance 24 unless set), which a table without feature
        columns needs."""
        return self._set(verify=value)

    def getFeatureCols(self) -> List[str]:
        return self.getOrDefault(self.featureCols)

    def setFeatureCols(self, value: Sequence[str]) -> "NearDuplicates":
        """The float feature columns of the codes in ``codeCols``, in the same order (for ``verify``)."""
        return self._set(featureCols=value)

    def getInsetsCol(self) -> str:
        return self.getOrDefault(self.insetsCol)

    def setInsetsCol(self, value: str) -> "NearDuplicates":
        """The column of each row's insets (photos found pasted into it), compared under ``verify`` with other rows'
        whole images at cosine 0.78, as ``imgfeat dedup`` does; empty (or a column the input lacks): none."""
        return self._set(insetsCol=value)

    def codePairs(self, dataset: "DataFrame") -> "DataFrame":
        """The band join's result: pairs of distinct codes within maxDistance (id_a < id_b, distance), each
        named by the smallest id carrying it; the candidate work, which grows with distinct codes, not rows."""
        from pyspark.sql import DataFrame

        self._transfer_params_to_java()
        return DataFrame(self._java_obj.codePairs(dataset._jdf), dataset.sparkSession)


# Users import these from the package (`from imgfeat import ImageFeatureExtractor`), and that is the name
# they print and pickle under.
ImageFeatureExtractor.__module__ = NearDuplicates.__module__ = "imgfeat"
