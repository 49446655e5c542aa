#!/usr/bin/env bash
# Builds the JVM side of imgfeat without sbt/Maven, using only the JDK and the jars that ship
# inside pip's pyspark (Spark + Scala 2.13 compiler/library/reflect):
#
#   target/jvm/imgfeat-spark.jar    classes from jvm-bindings/src/main/{java,scala}
#                                   + native/linux-x86_64/libimgfeat.so  (the Rust cdylib, debug-stripped)
#                                   + imgfeat/models/*.{onnx,txt,safetensors}
#   target/jvm/imgfeat-example.jar  scala-example/src/*.scala (and *.java), compiled against
#                                   imgfeat-spark.jar + Spark jars (Spark itself is NOT bundled)
#
# Mixed compilation order: scalac gets both .scala and .java files (it only parses the .java ones,
# so Scala can refer to Java types), then javac compiles the .java files with scalac's output on
# the classpath (so Java can refer to Scala types).
#
# Environment overrides:
#   IMGFEAT_NATIVE_LIB   the native library to bundle   (default: target/release/libimgfeat.so)
#   IMGFEAT_MODELS_DIR   where the models are           (default: models/)
#   SPARK_JARS_DIR       Spark's jar dir                (default: <pyspark>/jars, found via PYTHON)
#   PYTHON               python that has pyspark        (default: .venv/bin/python)
#   JAVA                 java launcher for scalac       (default: $JAVA_HOME/bin/java or java)
#   JAVAC / JAR          javac / jar tools              (default: $JAVA_HOME/bin/... or PATH)
#   SCALAC_OPTS          extra scalac options; JAVAC_OPTS extra javac options
#   IMGFEAT_STRIP=0      bundle the native library as is (default: a copy with `strip --strip-debug`)
#   SKIP_EXAMPLE=1       don't build imgfeat-example.jar
set -Eeuo pipefail
trap 'echo "build.sh: FAILED (see the errors above)" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { trap - ERR; echo "build.sh: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
T_ALL=$(now)

# ---- tools -------------------------------------------------------------------------------------
if [[ -n "${JAVA_HOME:-}" ]]; then
  JAVA="${JAVA:-$JAVA_HOME/bin/java}"; JAVAC="${JAVAC:-$JAVA_HOME/bin/javac}"; JAR="${JAR:-$JAVA_HOME/bin/jar}"
else
  JAVA="${JAVA:-java}"; JAVAC="${JAVAC:-javac}"; JAR="${JAR:-jar}"
fi
for t in "$JAVA" "$JAVAC" "$JAR"; do
  command -v "$t" >/dev/null || die "'$t' not found (install a JDK 17+, or set JAVA_HOME)"
done

# ---- Spark / Scala jars ------------------------------------------------------------------------
if [[ -z "${SPARK_JARS_DIR:-}" ]]; then
  PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null ||
    die "no python at $PYTHON; create the venv: python3 -m venv .venv && .venv/bin/pip install -r jvm-bindings/requirements.txt (or set SPARK_JARS_DIR)"
  PYSPARK_DIR="$("$PYTHON" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" ||
    die "pyspark is not importable by $PYTHON; run: $PYTHON -m pip install -r jvm-bindings/requirements.txt (or set SPARK_JARS_DIR)"
  SPARK_JARS_DIR="$PYSPARK_DIR/jars"
fi
[[ -d "$SPARK_JARS_DIR" ]] || die "Spark jar dir $SPARK_JARS_DIR does not exist"

one_jar() { # the single jar in SPARK_JARS_DIR matching a glob
  local m=( "$SPARK_JARS_DIR"/$1 )
  [[ -e "${m[0]}" ]] || die "no $1 in $SPARK_JARS_DIR"
  [[ ${#m[@]} -eq 1 ]] || die "more than one $1 in $SPARK_JARS_DIR: ${m[*]}"
  echo "${m[0]}"
}
SCALA_COMPILER=$(one_jar 'scala-compiler-2.13.*.jar')
SCALA_LIBRARY=$(one_jar 'scala-library-2.13.*.jar')
SCALA_REFLECT=$(one_jar 'scala-reflect-2.13.*.jar')
SCALAC_CP="$SCALA_COMPILER:$SCALA_LIBRARY:$SCALA_REFLECT"
SPARK_CP=$(printf '%s:' "$SPARK_JARS_DIR"/*.jar); SPARK_CP="${SPARK_CP%:}"
SPARK_CORE=$(one_jar 'spark-core_2.13-*.jar')
SPARK_VERSION=$(basename "$SPARK_CORE" .jar); SPARK_VERSION="${SPARK_VERSION#spark-core_2.13-}"
SCALA_VERSION=$(basename "$SCALA_LIBRARY" .jar); SCALA_VERSION="${SCALA_VERSION#scala-library-}"

# ---- inputs ------------------------------------------------------------------------------------
NATIVE_LIB="${IMGFEAT_NATIVE_LIB:-$ROOT/target/release/libimgfeat.so}"
[[ -f "$NATIVE_LIB" ]] || die "native library not found: $NATIVE_LIB
  build it first with 'cargo build --release' (produces target/release/libimgfeat.so),
  or point IMGFEAT_NATIVE_LIB at a built libimgfeat.so"
MODELS_DIR="${IMGFEAT_MODELS_DIR:-$ROOT/models}"

OUT="$ROOT/target/jvm"
CLASSES="$OUT/classes"; RES="$OUT/resources"; EX_CLASSES="$OUT/example-classes"
MAIN_JAR="$OUT/imgfeat-spark.jar"; EX_JAR="$OUT/imgfeat-example.jar"

# compile <out-dir> <classpath> <label> <file>...   (mixed Scala/Java, see header)
compile() {
  local out="$1" cp="$2" label="$3"; shift 3
  local scala=() java=() f
  for f in "$@"; do case "$f" in *.scala) scala+=("$f");; *.java) java+=("$f");; esac; done
  mkdir -p "$out"
  local t
  if (( ${#scala[@]} )); then
    t=$(now)
    # shellcheck disable=SC2086
    "$JAVA" -Xss8m -Xmx1g -cp "$SCALAC_CP" scala.tools.nsc.Main \
      -classpath "$cp" -d "$out" -release 17 -encoding UTF-8 -deprecation -feature \
      ${SCALAC_OPTS:-} "${scala[@]}" "${java[@]}"
    echo "  scalac $label: ${#scala[@]} .scala + ${#java[@]} .java (parsed) in $(since "$t")"
  fi
  if (( ${#java[@]} )); then
    t=$(now)
    # shellcheck disable=SC2086
    "$JAVAC" --release 17 -encoding UTF-8 -Xlint:all,-processing,-serial,-path -d "$out" \
      -cp "$out:$cp" ${JAVAC_OPTS:-} "${java[@]}"
    echo "  javac  $label: ${#java[@]} .java in $(since "$t")"
  fi
}

# Clean every output of this script each run, so stale classes or resources never survive.
rm -rf "$CLASSES" "$RES" "$EX_CLASSES" "$MAIN_JAR" "$EX_JAR"
mkdir -p "$OUT"

echo "build.sh: Spark $SPARK_VERSION, Scala $SCALA_VERSION, $("$JAVAC" -version 2>&1)"
echo "  spark jars: $SPARK_JARS_DIR"

# ---- imgfeat-spark.jar -------------------------------------------------------------------------
mapfile -t SRCS < <(find jvm-bindings/src/main/java jvm-bindings/src/main/scala \
                      \( -name '*.java' -o -name '*.scala' \) -type f 2>/dev/null | sort || true)
(( ${#SRCS[@]} )) || die "no sources: nothing under jvm-bindings/src/main/java/**/*.java or jvm-bindings/src/main/scala/**/*.scala"
compile "$CLASSES" "$SPARK_CP" "imgfeat-spark" "${SRCS[@]}"

# Resources: copy jvm-bindings/src/main/resources (if any), then the native lib and the models.
if [[ -d jvm-bindings/src/main/resources ]]; then
  mkdir -p "$RES"; cp -r jvm-bindings/src/main/resources/. "$RES/"
fi
mkdir -p "$RES/native/linux-x86_64" "$RES/imgfeat/models"
cp "$NATIVE_LIB" "$RES/native/linux-x86_64/libimgfeat.so"
# The release profile keeps line tables (debug = "line-tables-only"): ~150 MB of DWARF that every
# executor would fetch per app. Bundle a copy without it (symbols stay, so backtraces still name
# functions); IMGFEAT_STRIP=0 bundles the library byte-for-byte.
STRIPPED=""
if [[ "${IMGFEAT_STRIP:-1}" != 0 ]]; then
  command -v strip >/dev/null || die "'strip' not found (apt-get install binutils), or set IMGFEAT_STRIP=0"
  strip --strip-debug "$RES/native/linux-x86_64/libimgfeat.so"
  STRIPPED=", debug info stripped: $(du -h "$RES/native/linux-x86_64/libimgfeat.so" | cut -f1); IMGFEAT_STRIP=0 keeps it"
fi
shopt -s nullglob
MODELS=( "$MODELS_DIR"/*.onnx "$MODELS_DIR"/*.txt "$MODELS_DIR"/*.safetensors )
shopt -u nullglob
(( ${#MODELS[@]} )) || echo "  warning: no *.onnx/*.txt/*.safetensors in $MODELS_DIR: the jar has no models" >&2
(( ${#MODELS[@]} )) && cp "${MODELS[@]}" "$RES/imgfeat/models/"
# The list of bundled model files, so the JVM side can extract them (a jar cannot list a folder).
for m in "${MODELS[@]}"; do basename "$m"; done > "$RES/imgfeat/models/INDEX"

t=$(now)
"$JAR" --create --file "$MAIN_JAR" -C "$CLASSES" .
# Native lib and ONNX weights barely compress: store them (faster build, mmap-friendly extraction).
"$JAR" --update --no-compress --file "$MAIN_JAR" -C "$RES" .
echo "  jar    imgfeat-spark: in $(since "$t")"

# ---- imgfeat-example.jar -----------------------------------------------------------------------
EX_SRCS=()
if [[ "${SKIP_EXAMPLE:-0}" != 1 ]]; then
  mapfile -t EX_SRCS < <(find scala-example/src \( -name '*.scala' -o -name '*.java' \) -type f 2>/dev/null | sort || true)
fi
if (( ${#EX_SRCS[@]} )); then
  compile "$EX_CLASSES" "$MAIN_JAR:$SPARK_CP" "imgfeat-example" "${EX_SRCS[@]}"
  "$JAR" --create --file "$EX_JAR" -C "$EX_CLASSES" .
else
  echo "  (no scala-example/src sources: imgfeat-example.jar not built)"
fi

# ---- summary -----------------------------------------------------------------------------------
echo "build.sh: built in $(since "$T_ALL"):"
for j in "$MAIN_JAR" "$EX_JAR"; do
  [[ -f "$j" ]] || continue
  printf '  %-60s %6s  %4d classes\n' "${j#"$ROOT"/}" "$(du -h "$j" | cut -f1)" \
    "$("$JAR" --list --file "$j" | grep -c '\.class$' || true)"
done
echo "  bundled: native/linux-x86_64/libimgfeat.so <- $NATIVE_LIB ($(du -h "$NATIVE_LIB" | cut -f1)$STRIPPED)"
for m in "${MODELS[@]}"; do echo "  bundled: imgfeat/models/$(basename "$m")"; done
