package ai.imgfeat

import org.apache.spark.graphx.Graph
import org.apache.spark.ml.Transformer
import org.apache.spark.ml.param.{BooleanParam, IntParam, Param, ParamMap, ParamValidators, StringArrayParam}
import org.apache.spark.ml.util.{DefaultParamsReadable, DefaultParamsWritable, Identifiable}
import org.apache.spark.sql.{Column, DataFrame, Dataset, Row}
import org.apache.spark.sql.functions.{array, col, count, explode, length, lit, max, min, posexplode, struct, udf}
import org.apache.spark.sql.types.{ArrayType, BinaryType, DataType, FloatType, IntegerType, LongType, NumericType, StringType,
  StructField, StructType}
import org.apache.spark.storage.StorageLevel

/** Near-duplicate groups of a features table, the same groups `imgfeat dedup` writes: two rows are joined
  * when any of their codes (by default the object's and the whole image's, every pair) are within
  * `maxDistance` bits, groups are the connected components of those joins (transitive), only groups of two
  * or more rows are kept, and each group's representative is its smallest id. Rows without any code (the
  * error rows) are left out.
  *
  * Exact at any radius, without comparing every pair (multi-index hashing, as the CLI does): each code is
  * cut into `bands` bands of bits, and two codes within r bits agree to within ⌊r / bands⌋ bits on at
  * least one band (pigeonhole). So one side of a self-join on (band, key) emits its own band keys, the
  * other every key within ⌊r / bands⌋ bits of its own, and the candidates are kept when their exact Hamming
  * distance is at most `maxDistance`. The join spreads over the cluster like any join.
  *
  * Skew: a collection often holds thousands of rows with one code (placeholder images, the same photo
  * uploaded again). Identical codes are collapsed before the join: each distinct code is named by the
  * smallest id carrying it, every row carrying it is joined to that id, and only distinct codes go
  * through the band join, so n identical rows cost n edges instead of n² candidate pairs.
  *
  * {{{
  * val groups = new NearDuplicates().setIdCol("path").transform(features)
  * // path, representative (the smallest path of its group), group_size
  * }}}
  *
  * By default (`verify`, as `imgfeat dedup`), a candidate pair of distinct codes within maxDistance (47) is joined
  * only when the cosine of their features (`featureCols`, in the order of `codeCols`) reaches 0.68 for two
  * whole-image codes, 0.95 for two object codes and 0.76 for one of each; the last code column is the whole
  * image's, and an object code equal to its row's whole-image code counts as a whole image. A code is represented
  * by the row with its smallest id (the first of its columns), as the CLI does, so the groups are `imgfeat
  * dedup`'s. With verify, each row's insets (`insetsCol`, photos found pasted into it: a collage's tiles, a photo
  * pasted onto another) are candidates too, against the distinct whole-image codes of other rows, joined when their
  * cosine reaches 0.78; never against object codes or other insets, nor without verify. `setVerify(false)` joins
  * candidates by their codes alone (`imgfeat dedup --no-verify`; maxDistance
  * is then 24 unless set), which a table without feature columns needs.
  *
  * `transform` runs Spark jobs right away (GraphX's connected components iterate eagerly); what it returns
  * reads their cached result. Ids should be unique: rows sharing an id are one vertex.
  */
class NearDuplicates(override val uid: String) extends Transformer with DefaultParamsWritable {

  SparkLine.check() // a jar for another Spark/Scala pair fails here, naming both (see ImageFeatureExtractor)

  def this() = this(Identifiable.randomUID("imgfeat-dups"))

  final val idCol = new Param[String](this, "idCol", "column identifying a row (a string or number)")
  final val codeCols = new StringArrayParam(this, "codeCols",
    "binary code columns; two rows are joined when any of their codes are within maxDistance",
    ParamValidators.arrayLengthGt(0))
  final val maxDistance = new IntParam(this, "maxDistance",
    "largest Hamming distance of candidate codes (with verify off, 24 unless set)", ParamValidators.gtEq(0))
  final val bands = new IntParam(this, "bands",
    "bands of bits each code is cut into for the join (a divisor of the code's bits); exact for any maxDistance",
    ParamValidators.gt(0))

  final val verify = new BooleanParam(this, "verify",
    "join candidates only when their features agree, as imgfeat dedup (off: by the codes alone, as --no-verify)")
  final val featureCols = new StringArrayParam(this, "featureCols",
    "float feature columns of the codes in codeCols, in the same order, for verify",
    ParamValidators.arrayLengthGt(0))
  final val insetsCol = new Param[String](this, "insetsCol",
    "column of each row's insets (array of structs with code and feature), compared with other rows' whole images " +
      "under verify; empty, or a column the input lacks: none")

  // `imgfeat dedup`'s defaults; 16 bands split 64-, 128- and 256-bit codes.
  setDefault(idCol -> "path", codeCols -> Array("code", "whole_code"), maxDistance -> NearDuplicates.VerifiedMaxDistance,
    bands -> 16, verify -> true, featureCols -> Array("feature", "whole_feature"), insetsCol -> "insets")

  def getIdCol: String = $(idCol)
  def getCodeCols: Array[String] = $(codeCols)
  def getMaxDistance: Int = $(maxDistance)
  def getBands: Int = $(bands)
  def setIdCol(value: String): this.type = set(idCol, value)
  def setCodeCols(value: Array[String]): this.type = set(codeCols, value)
  def setMaxDistance(value: Int): this.type = set(maxDistance, value)
  def setBands(value: Int): this.type = set(bands, value)
  def getVerify: Boolean = $(verify)
  def getFeatureCols: Array[String] = $(featureCols)
  def setVerify(value: Boolean): this.type = set(verify, value)
  def setFeatureCols(value: Array[String]): this.type = set(featureCols, value)
  def getInsetsCol: String = $(insetsCol)
  def setInsetsCol(value: String): this.type = set(insetsCol, value)

  /** The candidate distance: maxDistance, or with verify off and maxDistance not set 24 (as the CLI). */
  private def candidateDistance: Int = if (!$(verify) && !isSet(maxDistance)) NearDuplicates.CodesOnlyMaxDistance else $(maxDistance)

  /** One row per member of a near-duplicate group of two or more rows: the id (named as `idCol`), the
    * group's `representative` (its smallest id) and `group_size`. */
  override def transform(dataset: Dataset[_]): DataFrame = {
    val schema = transformSchema(dataset.schema, logging = true)
    val codes = rowCodes(dataset)
    val owners = distinctCodes(codes)
    // Each row is joined to the row naming its code (the big side streams; the owners side has one row
    // per code, so a code carried by millions of rows is no hot key to buffer).
    val rowsToOwners = codes.join(owners, "code").where(col("id") =!= col("owner"))
      .select(col("id").as("a"), col("owner").as("b"))
    val codesToCodes = pairsOfDistinctCodes(codes, owners).select(col("id_a").as("a"), col("id_b").as("b"))
    val insetsToWholes = insetCodes(dataset) match {
      case Some(insets) => insetPairs(codes, insets, owners.where(col("whole")))
      case None => codes.limit(0).select(col("id").as("a"), col("id").as("b"))
    }
    connectedGroups(codesToCodes.union(rowsToOwners).union(insetsToWholes), schema($(idCol)).dataType)
  }

  /** (id, code, feature): one row per inset of each row with an id, when verify is on and the input has the insets
    * column; None otherwise. */
  private def insetCodes(dataset: Dataset[_]): Option[DataFrame] = {
    if (!$(verify) || $(insetsCol).isEmpty || !dataset.columns.contains($(insetsCol))) return None
    Some(dataset.select(col($(idCol)).as("id"), explode(col($(insetsCol))).as("inset"))
      .select(col("id"), col("inset.code").as("code"), col("inset.feature").cast(ArrayType(FloatType)).as("feature"))
      .where(col("code").isNotNull && col("feature").isNotNull && col("id").isNotNull))
  }

  /** Edges (a, b) between rows and the owners of the whole-image codes their insets verify against: the same band
    * join as between distinct codes. The whole-image codes probe and the insets are probed: the probing side is
    * multiplied by the keys within the radius, and Spark may broadcast the side it estimates smaller, which is the
    * insets' (few rows, carrying their features). */
  private def insetPairs(codes: DataFrame, insets: DataFrame, wholeOwners: DataFrame): DataFrame =
    bandLayout(codes) match {
      case None => insets.limit(0).select(col("id").as("a"), col("id").as("b"))
      case Some(layout) =>
        val probed = insets.select(col("id").as("owner"), col("code"), lit(false).as("whole"), col("feature"))
        bandPairs(wholeOwners, probed, layout, col("id_a") =!= col("id_b"), NearDuplicates.verifiedInset)
          .select(col("id_a").as("a"), col("id_b").as("b"))
    }

  /** The band join's result: pairs of distinct codes within `maxDistance` bits, each code named by the
    * smallest id carrying it (`id_a` < `id_b`), with the smallest distance between codes they name. Rows
    * carrying the same code are not paired here (`transform` joins them to the code's id), so this is the
    * candidate work that grows with the number of distinct codes, not of rows. */
  def codePairs(dataset: Dataset[_]): DataFrame = {
    transformSchema(dataset.schema)
    val codes = rowCodes(dataset)
    pairsOfDistinctCodes(codes, distinctCodes(codes))
  }

  /** (id, code, position, whole, feature): one row per non-null code of each row with an id; `whole` tells a
    * whole-image code (the last column, or a code equal to it), `feature` is null without verify. */
  private def rowCodes(dataset: Dataset[_]): DataFrame = {
    val names = $(codeCols).toIndexedSeq
    val wholeCol = col(names.last)
    val entries = names.zipWithIndex.map { case (name, position) =>
      val feature = if ($(verify)) col($(featureCols)(position)).cast(ArrayType(FloatType))
        else lit(null).cast(ArrayType(FloatType))
      val whole = if (position == names.size - 1) lit(true) else wholeCol.isNotNull && col(name) === wholeCol
      struct(col(name).as("code"), lit(position).as("position"), whole.as("whole"), feature.as("feature"))
    }
    dataset.select(col($(idCol)).as("id"), explode(array(entries: _*)).as("entry"))
      .select(col("id"), col("entry.code").as("code"), col("entry.position").as("position"), col("entry.whole").as("whole"),
        col("entry.feature").as("feature"))
      .where(col("code").isNotNull && col("id").isNotNull)
  }

  /** (code, owner, whole, feature): each distinct code, the smallest id carrying it (its first column there) and
    * that entry's kind and feature (a partial aggregation, so a code carried by millions of rows is combined on
    * each executor before the shuffle). */
  private def distinctCodes(codes: DataFrame): DataFrame =
    codes.groupBy("code").agg(min(struct(col("id"), col("position"), col("whole"), col("feature"))).as("first"))
      .select(col("code"), col("first.id").as("owner"), col("first.whole").as("whole"), col("first.feature").as("feature"))

  private def pairsOfDistinctCodes(codes: DataFrame, owners: DataFrame): DataFrame =
    bandLayout(codes) match {
      case None => codes.limit(0).select(col("id").as("id_a"), col("id").as("id_b"), lit(0).as("distance"))
      case Some(layout) => bandJoin(owners, layout)
    }

  /** The bands' width and probe radius for the codes' length: one aggregation, so a bad length fails here
    * with a message rather than inside a task. None when there are no codes. */
  private def bandLayout(codes: DataFrame): Option[BandLayout] = {
    val bounds = codes.agg(min(length(col("code"))), max(length(col("code")))).head()
    if (bounds.isNullAt(0)) return None
    val (shortest, longest) = (bounds.getInt(0) * 8, bounds.getInt(1) * 8)
    require(shortest == longest, s"codes of different lengths ($shortest and $longest bits) cannot be compared")
    val (bits, bandCount, distance) = (longest, $(bands), candidateDistance)
    require(bits % bandCount == 0, s"a $bits-bit code does not split into $bandCount bands of equal width: " +
      s"set bands to a divisor of $bits (the default, 16, splits 64-, 128- and 256-bit codes)")
    val width = bits / bandCount
    require(width <= 64, s"$bandCount bands of a $bits-bit code are $width bits wide, more than a band key's 64: " +
      s"set bands to at least ${(bits + 63) / 64}")
    val layout = BandLayout(bandCount, width, math.min(distance / bandCount, width))
    require(layout.probesPerKey <= NearDuplicates.MaxProbesPerKey,
      s"maxDistance $distance with $bandCount bands of $width bits probes ${layout.probesPerKey} keys per band " +
        s"(at most ${NearDuplicates.MaxProbesPerKey}): use more bands or a smaller maxDistance")
    Some(layout)
  }

  private def bandJoin(owners: DataFrame, layout: BandLayout): DataFrame =
    bandPairs(owners, owners, layout, col("id_a") < col("id_b"), NearDuplicates.verified)
      // Two distinct codes can be named by the same id (a row's object and whole-image codes).
      .groupBy("id_a", "id_b")
      .agg(min("distance").as("distance"))

  /** Pairs of a `probing` code and an `exact` code (both: owner, code, whole, feature) within the candidate distance
    * that meet `pairs` (on id_a, id_b), each pair once, kept by `accept` (their features and kinds) under verify:
    * (id_a, id_b, distance), id_a the probing code's owner. */
  private def bandPairs(probing: DataFrame, exact: DataFrame, layout: BandLayout, pairs: Column,
      accept: (Seq[Float], Boolean, Seq[Float], Boolean) => Boolean): DataFrame = {
    val BandLayout(bandCount, width, radius) = layout
    val distanceLimit = candidateDistance
    val verified = udf { (a: Seq[Float], wholeA: Boolean, b: Seq[Float], wholeB: Boolean) => accept(a, wholeA, b, wholeB) }
    val bandKeys = udf { (code: Array[Byte]) => Seq.tabulate(bandCount)(band => NearDuplicates.bandKey(code, band, width)) }
    val keysWithinRadius = udf { (key: Long) => NearDuplicates.keysWithin(key, width, radius).toSeq }
    // A pair close on several bands meets once per band; it is kept only in the first, so no distinct.
    val firstCloseBand = udf { (a: Array[Byte], b: Array[Byte]) =>
      (0 until bandCount).indexWhere { band =>
        java.lang.Long.bitCount(NearDuplicates.bandKey(a, band, width) ^ NearDuplicates.bandKey(b, band, width)) <= radius
      }
    }
    val hamming = udf { (a: Array[Byte], b: Array[Byte]) => NearDuplicates.hamming(a, b) }
    def keyed(codes: DataFrame) = codes.select(col("owner"), col("code"), col("whole"), col("feature"),
      posexplode(bandKeys(col("code"))).as(Seq("band", "own_key")))
    val probes = keyed(probing).select(col("owner").as("id_a"), col("code").as("code_a"), col("whole").as("whole_a"),
      col("feature").as("feature_a"), col("band"), explode(keysWithinRadius(col("own_key"))).as("key"))
    val exacts = keyed(exact).select(col("owner").as("id_b"), col("code").as("code_b"), col("whole").as("whole_b"),
      col("feature").as("feature_b"), col("band"), col("own_key").as("key"))
    val candidates = probes.join(exacts, Seq("band", "key"))
      .where(pairs && firstCloseBand(col("code_a"), col("code_b")) === col("band"))
      .withColumn("distance", hamming(col("code_a"), col("code_b")))
      .where(col("distance") <= distanceLimit)
    val kept = if ($(verify)) candidates.where(verified(col("feature_a"), col("whole_a"), col("feature_b"), col("whole_b")))
      else candidates
    kept.select(col("id_a"), col("id_b"), col("distance"))
  }

  /** Connected components of the edges (a, b) between ids, with GraphX. Vertex numbers are given in id
    * order, so the component's label (its smallest vertex number) is the number of its smallest id. */
  private def connectedGroups(edges: DataFrame, idType: DataType): DataFrame = {
    val spark = edges.sparkSession
    // Read three times (ids, numbering, the graph): the band join behind them runs once.
    edges.persist(StorageLevel.MEMORY_AND_DISK)
    val ids = edges.select(col("a").as("id")).union(edges.select(col("b").as("id"))).distinct().orderBy("id")
    val numberedIds = ids.rdd.zipWithIndex().map { case (row, number) => Row(number, row.get(0)) }
    val vertices = spark.createDataFrame(numberedIds,
      StructType(Seq(StructField("vertex", LongType, nullable = false), StructField("id", idType, nullable = false))))
      .persist(StorageLevel.MEMORY_AND_DISK)
    val numberedEdges = edges
      .join(vertices.select(col("id").as("a"), col("vertex").as("src")), "a")
      .join(vertices.select(col("id").as("b"), col("vertex").as("dst")), "b")
      .select("src", "dst").rdd.map(row => (row.getLong(0), row.getLong(1)))
    // Eager: Pregel iterates to convergence here and caches the labels, so the edges are done with.
    val labels = Graph.fromEdgeTuples(numberedEdges, defaultValue = 0).connectedComponents().vertices
    edges.unpersist(blocking = false)
    val components = spark.createDataFrame(labels.map { case (vertex, label) => Row(vertex, label) },
      StructType(Seq(StructField("vertex", LongType, nullable = false), StructField("component", LongType, nullable = false))))
    val sizes = components.groupBy("component").agg(count(lit(1)).cast(IntegerType).as("group_size"))
    components.join(sizes, "component")
      .join(vertices.select(col("vertex"), col("id").as("member")), "vertex")
      .join(vertices.select(col("vertex").as("component"), col("id").as("representative")), "component")
      .select(col("member").as($(idCol)), col("representative"), col("group_size"))
  }

  override def transformSchema(schema: StructType): StructType = {
    def field(name: String, role: String): StructField = schema.find(_.name == name).getOrElse(
      throw new IllegalArgumentException(s"$role column '$name' is not in the input (columns: ${schema.fieldNames.mkString(", ")})"))
    val id = field($(idCol), "idCol")
    require(id.dataType == StringType || id.dataType.isInstanceOf[NumericType],
      s"idCol '${id.name}' must be a string or number column, not ${id.dataType.simpleString}")
    require(!Set("representative", "group_size").contains(id.name), s"idCol '${id.name}' is a name of an output column")
    for (name <- $(codeCols)) {
      val code = field(name, "code")
      require(code.dataType == BinaryType,
        s"code column '$name' must be binary (as `imgfeat extract` writes codes), not ${code.dataType.simpleString}")
    }
    if ($(verify)) {
      require($(featureCols).length == $(codeCols).length,
        s"verify needs one feature column per code column: featureCols ${$(featureCols).mkString(", ")} for codeCols " +
          $(codeCols).mkString(", "))
      for (name <- $(featureCols)) {
        val feature = schema.find(_.name == name).getOrElse(throw new IllegalArgumentException(
          s"feature column '$name' is not in the input (columns: ${schema.fieldNames.mkString(", ")}): verify compares " +
            "features; setVerify(false) groups by the codes alone"))
        require(feature.dataType match { case ArrayType(_: NumericType, _) => true; case _ => false },
          s"feature column '$name' must be an array of numbers (as `imgfeat extract` writes features), not " +
            feature.dataType.simpleString)
      }
    }
    StructType(Seq(StructField($(idCol), id.dataType, nullable = false),
      StructField("representative", id.dataType, nullable = false),
      StructField("group_size", IntegerType, nullable = false)))
  }

  override def copy(extra: ParamMap): NearDuplicates = defaultCopy(extra)
}

/** How codes are cut for the band join: `bands` bands of `width` bits, each probed within `radius` bits. */
private case class BandLayout(bands: Int, width: Int, radius: Int) {
  /** Keys within `radius` bits of a `width`-bit key: the sum of C(width, i) for i ≤ radius. */
  def probesPerKey: BigInt = (0 to radius).map(i => (0 until i).foldLeft(BigInt(1))((c, j) => c * (width - j) / (j + 1))).sum
}

object NearDuplicates extends DefaultParamsReadable[NearDuplicates] {

  /** Probes per band key at most: 2^16, what `imgfeat dedup` probes at worst per 16-bit substring. Past it
    * a join would multiply each code's rows by more than the CLI ever does. */
  private[imgfeat] val MaxProbesPerKey: BigInt = BigInt(1) << 16

  /** Candidate distance when maxDistance is not set: `imgfeat dedup`'s, and with verify off `--no-verify`'s (the
    * CLI's `DuplicateRule::VERIFIED_DISTANCE` and `CODES_ONLY_DISTANCE`). */
  private[imgfeat] val VerifiedMaxDistance = 47
  private[imgfeat] val CodesOnlyMaxDistance = 24

  /** Least cosine between two candidates' features by their kinds: the CLI's `Verification::default()`. */
  private[imgfeat] val WholeCosine = 0.68f
  private[imgfeat] val ObjectCosine = 0.95f
  private[imgfeat] val MixedCosine = 0.76f
  private[imgfeat] val InsetCosine = 0.78f

  /** Whether two candidate codes' features agree enough to join them: their cosine against the threshold for their
    * kinds. */
  private[imgfeat] def verified(a: Seq[Float], wholeA: Boolean, b: Seq[Float], wholeB: Boolean): Boolean = {
    val threshold = if (wholeA && wholeB) WholeCosine else if (!wholeA && !wholeB) ObjectCosine else MixedCosine
    cosine(a, b) >= threshold
  }

  /** Whether a row's whole-image code (`a`) and another row's inset (`b`) agree enough to join their rows (the kinds
    * are known: the arguments mirror `verified`'s). */
  private[imgfeat] def verifiedInset(a: Seq[Float], wholeA: Boolean, b: Seq[Float], insetIsWhole: Boolean): Boolean =
    cosine(a, b) >= InsetCosine

  /** The features' cosine: a float sum in order, as the CLI computes it, so that both sides decide alike. */
  private def cosine(a: Seq[Float], b: Seq[Float]): Float = {
    require(a != null && b != null, "verify needs every code's feature: a row has a code without one")
    require(a.length == b.length, s"features of different lengths (${a.length} and ${b.length}) cannot be compared")
    var sum = 0f
    var i = 0
    while (i < a.length) {
      sum += a(i) * b(i)
      i += 1
    }
    sum
  }

  /** Bits [band * width, (band + 1) * width) of the code, most significant bit of each byte first. */
  private[imgfeat] def bandKey(code: Array[Byte], band: Int, width: Int): Long = {
    require(code.length * 8 >= (band + 1) * width, s"a ${code.length * 8}-bit code has no band $band of $width bits")
    var key = 0L
    var bit = band * width
    val end = bit + width
    while (bit < end) {
      key = (key << 1) | ((code(bit >> 3) >> (7 - (bit & 7))) & 1)
      bit += 1
    }
    key
  }

  /** Every `width`-bit key within `radius` bits of `key` (itself included). */
  private[imgfeat] def keysWithin(key: Long, width: Int, radius: Int): Array[Long] = {
    val keys = Array.newBuilder[Long]
    def flip(value: Long, fromBit: Int, left: Int): Unit = {
      keys += value
      if (left > 0) for (bit <- fromBit until width) flip(value ^ (1L << bit), bit + 1, left - 1)
    }
    flip(key, 0, math.min(radius, width))
    keys.result()
  }

  private[imgfeat] def hamming(a: Array[Byte], b: Array[Byte]): Int = {
    require(a.length == b.length, s"codes of different lengths (${a.length * 8} and ${b.length * 8} bits)")
    var distance = 0
    var i = 0
    while (i < a.length) {
      distance += Integer.bitCount((a(i) ^ b(i)) & 0xff)
      i += 1
    }
    distance
  }
}
