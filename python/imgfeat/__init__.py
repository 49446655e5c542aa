"""imgfeat for PySpark: thin py4j wrappers over the JVM transformers ``ai.imgfeat.ImageFeatureExtractor``
and ``ai.imgfeat.NearDuplicates``.

Add the jar that carries the native library (``--jars imgfeat-spark.jar``) and this package
(``--py-files imgfeat.zip``, the zip of ``python/imgfeat``), then::

    from imgfeat import ImageFeatureExtractor
    images = spark.read.format("binaryFile").load("s3a://bucket/photos")
    features = ImageFeatureExtractor(outputCol="features").transform(images).select("path", "features.*")
    groups = NearDuplicates().transform(features)  # path, representative, group_size

Select the columns to keep (as above, or ``.drop("content")``) before writing ``features``: the input's
``content`` column holds every photo's bytes.
"""
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.wrapper import JavaTransformer

__all__ = ["ImageFeatureExtractor", "NearDuplicates"]


class ImageFeatureExtractor(JavaTransformer, HasInputCol, HasOutputCol):
    """Adds a struct column of image features: detection, crop, embeddings, binary codes, error.

    The same class name and params as the Scala API; every param is forwarded to the JVM object.
    """

    pathCol = Param(Params._dummy(), "pathCol",
                    "column of file paths, read when inputCol is absent from the input",
                    typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "images per native call", typeConverter=TypeConverters.toInt)
    threads = Param(Params._dummy(), "threads", "native compute threads per task; 0 means spark.task.cpus",
                    typeConverter=TypeConverters.toInt)
    detector = Param(Params._dummy(), "detector", "detector preset: coco or oidv4", typeConverter=TypeConverters.toString)
    embedder = Param(Params._dummy(), "embedder", "embedder preset: efficientnet_lite0",
                     typeConverter=TypeConverters.toString)
    codeBits = Param(Params._dummy(), "codeBits", "binary code length: 64, 128 or 256", typeConverter=TypeConverters.toInt)
    modelDir = Param(Params._dummy(), "modelDir", "folder with the models on every node; empty means the jar's",
                     typeConverter=TypeConverters.toString)
    precision = Param(Params._dummy(), "precision",
                      "arithmetic of the 1x1 and dense convolutions: f32, or int8 (about twice the speed with AVX-512 VNNI)",
                      typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol="content", pathCol="path", outputCol="features", batchSize=32, threads=0,
                 detector="coco", embedder="efficientnet_lite0", codeBits=256, modelDir="", precision="f32"):
        super().__init__()
        self._java_obj = self._new_java_obj("ai.imgfeat.ImageFeatureExtractor", self.uid)
        self._setDefault(inputCol="content", pathCol="path", outputCol="features", batchSize=32, threads=0,
                         detector="coco", embedder="efficientnet_lite0", codeBits=256, modelDir="", precision="f32")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="content", pathCol="path", outputCol="features", batchSize=32, threads=0,
                  detector="coco", embedder="efficientnet_lite0", codeBits=256, modelDir="", precision="f32"):
        """Sets any of the params by keyword."""
        return self._set(**self._input_kwargs)

    def nativeThreadsPerTask(self, tasks):
        """Diagnostic: the native compute threads each of ``tasks`` tasks uses with this configuration."""
        from pyspark.sql import SparkSession

        self._transfer_params_to_java()
        session = SparkSession.getActiveSession()
        return list(self._java_obj.nativeThreadsPerTask(session._jsparkSession, tasks))


class NearDuplicates(JavaTransformer):
    """Near-duplicate groups, the same as ``imgfeat dedup``'s: one row per member of a group of two or more
    rows (the id, ``representative``: the group's smallest id, ``group_size``). Rows are joined when any of
    their codes are within ``maxDistance`` bits, transitively (GraphX connected components). Exact at any
    distance: a band join on the codes (multi-index hashing) over the distinct codes only, so thousands of
    rows with one code cost no more than one.

    The same class name, params and defaults as the Scala API; every param is forwarded to the JVM object.
    """

    idCol = Param(Params._dummy(), "idCol", "column identifying a row (a string or number)",
                  typeConverter=TypeConverters.toString)
    codeCols = Param(Params._dummy(), "codeCols",
                     "binary code columns; two rows are joined when any of their codes are within maxDistance",
                     typeConverter=TypeConverters.toListString)
    maxDistance = Param(Params._dummy(), "maxDistance", "largest Hamming distance of near-duplicates",
                        typeConverter=TypeConverters.toInt)
    bands = Param(Params._dummy(), "bands",
                  "bands of bits each code is cut into for the join (a divisor of the code's bits); exact for any maxDistance",
                  typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, idCol="path", codeCols=("code", "whole_code"), maxDistance=24, bands=16):
        super().__init__()
        self._java_obj = self._new_java_obj("ai.imgfeat.NearDuplicates", self.uid)
        self._setDefault(idCol="path", codeCols=["code", "whole_code"], maxDistance=24, bands=16)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, idCol="path", codeCols=("code", "whole_code"), maxDistance=24, bands=16):
        """Sets any of the params by keyword."""
        return self._set(**self._input_kwargs)

    def getIdCol(self):
        return self.getOrDefault(self.idCol)

    def setIdCol(self, value):
        return self._set(idCol=value)

    def getCodeCols(self):
        return self.getOrDefault(self.codeCols)

    def setCodeCols(self, value):
        return self._set(codeCols=value)

    def getMaxDistance(self):
        return self.getOrDefault(self.maxDistance)

    def setMaxDistance(self, value):
        return self._set(maxDistance=value)

    def getBands(self):
        return self.getOrDefault(self.bands)

    def setBands(self, value):
        return self._set(bands=value)

    def codePairs(self, dataset):
        """The band join's result: pairs of distinct codes within maxDistance (id_a < id_b, distance), each
        named by the smallest id carrying it; the candidate work, which grows with distinct codes, not rows."""
        from pyspark.sql import DataFrame

        self._transfer_params_to_java()
        return DataFrame(self._java_obj.codePairs(dataset._jdf), dataset.sparkSession)
