"""The Python package as a user gets it: the wheel installed into a fresh virtualenv (no Rust, no
pyspark), its local API compared with the CLI on the same photos, and bad input met with a clear
exception or an error row, never a crash."""
import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest

from conftest import CLI, ROOT, readme_block


def test_extract_of_a_folder_gives_the_clis_table(local, photos, cli_table, tmp_path):
    out = tmp_path / "python.parquet"
    result = local(f"""
        import imgfeat, pyarrow.parquet as pq
        table = imgfeat.extract({str(photos)!r}, progress=False)
        pq.write_table(table, {str(out)!r})
        print(table.num_rows)
    """)
    python, cli = pq.read_table(out), pq.read_table(cli_table)
    assert result == cli.num_rows == len([p for p in photos.rglob("*") if p.is_file()])
    assert python.schema.remove_metadata() == cli.schema.remove_metadata()
    assert python.to_pylist() == cli.to_pylist(), "the rows differ from the CLI's"
    # How the rows were made travels with them, as the CLI records it: the same settings, projection and
    # arithmetic (the precision and kernels this CPU ran), in the file pyarrow wrote.
    made = json.loads(python.schema.metadata[b"imgfeat.provenance"])
    assert made == json.loads(pq.read_metadata(cli_table).metadata[b"imgfeat.provenance"])
    assert made["arithmetic"]["precision"] in ("f32", "bf16") and made["settings"]["engine"]["precision"] == "auto"
    errors = {r["path"]: r["error"] for r in python.to_pylist() if r["error"]}
    assert "cannot decode" in errors[str(photos / "not-an-image.jpg")] or "unrecognised" in errors[str(photos / "not-an-image.jpg")]


def test_pipeline_process_of_bytes_gives_the_same_rows_and_error_rows_for_bad_items(local, photos, cli_table, tmp_path):
    files = sorted(str(p) for p in (photos / "imagenet").iterdir())[:6] if (photos / "imagenet").is_dir() \
        else sorted(str(p) for p in (photos / "fixtures").iterdir())
    local(f"""
        import json, imgfeat
        files = {files!r}
        images = [open(f, "rb").read() for f in files]
        import zlib
        header = b"IHDR" + (60000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 60000 x 60000 RGB
        chunk = lambda data: (len(data) - 4).to_bytes(4, "big") + data + zlib.crc32(data).to_bytes(4, "big")
        huge = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(header) + chunk(b"IDAT" + zlib.compress(bytes(64))) + chunk(b"IEND")
        table = imgfeat.Pipeline(threads=2).process(images + [None, b"", huge, b"GIF89a"], paths=files + ["none", "empty", "huge", "gif"])
        import pyarrow.parquet as pq
        pq.write_table(table, {str(tmp_path / "rows.parquet")!r})
        print(table.num_rows)
    """)
    rows = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    cli = {r["path"]: r for r in pq.read_table(cli_table).to_pylist()}
    assert [r["path"] for r in rows[:len(files)]] == files
    for row in rows[:len(files)]:
        assert row == cli[row["path"]], f"{row['path']} differs from the CLI's row"
    bad = {r["path"]: r for r in rows[len(files):]}
    assert "None" in bad["none"]["error"]
    assert "empty input" in bad["empty"]["error"]
    assert "max_pixels" in bad["huge"]["error"]
    assert bad["gif"]["error"] and bad["gif"]["code"] is None


def cli_search(table, image):
    out = subprocess.run([str(CLI), "search", "--index", str(table), str(image), "--json"], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return json.loads(out)["hits"]


def test_search_and_find_duplicates_answer_as_the_cli_does(local, photos, cli_table, tmp_path):
    queries = sorted(p for p in (photos / "formats").rglob("*") if p.suffix in (".jpeg", ".jpg", ".png", ".webp", ".bmp") and "corrupt" not in p.name) \
        if (photos / "formats").is_dir() else sorted((photos / "fixtures").iterdir())[:2]
    found = local(f"""
        import json, imgfeat, pyarrow.parquet as pq
        table = pq.read_table({str(cli_table)!r})
        index = imgfeat.Index(table)
        hits = [index.search(q).to_pylist() for q in {[str(q) for q in queries]!r}]
        one = imgfeat.search(table, {str(queries[0])!r}, k=3).to_pylist()
        groups = imgfeat.find_duplicates(table).to_pylist()
        codes_only = index.duplicate_groups(verify=False).to_pylist()
        one_thread = index.duplicate_groups(threads=1).to_pylist()
        try:
            index.duplicate_groups(threads=0)
            refused = ""
        except ValueError as e:
            refused = str(e)
        print(json.dumps({{"hits": hits, "one": one, "groups": groups, "codes_only": codes_only, "rows": len(index),
                          "one_thread": one_thread, "refused": refused}}))
    """)
    for query, hits in zip(queries, found["hits"]):
        expected = cli_search(cli_table, query)
        assert [h["path"] for h in hits] == [h["path"] for h in expected], query
        assert [h["distance"] for h in hits] == [h["distance"] for h in expected], query
        assert [h["cosine"] for h in hits] == pytest.approx([h["cosine"] for h in expected], abs=1e-6)
    assert found["one"] == found["hits"][0][:3]
    csv = tmp_path / "groups.csv"
    subprocess.run([str(CLI), "dedup", str(cli_table), "-o", str(csv)], check=True, capture_output=True, timeout=300)
    lines = csv.read_text().splitlines()[1:]
    cli_groups = [dict(zip(["group", "path", "representative"], line.split(","))) for line in lines]
    assert [{**g, "group": str(g["group"])} for g in found["groups"]] == cli_groups
    assert found["one_thread"] == found["groups"], "the groups must not depend on the threads"
    assert "threads must be ≥ 1" in found["refused"], found["refused"]
    if (photos / "formats").is_dir():
        assert cli_groups, "the odd formats hold near-duplicates of one photo: dedup must group them"
    subprocess.run([str(CLI), "dedup", "--no-verify", str(cli_table), "-o", str(csv)], check=True, capture_output=True, timeout=300)
    lines = csv.read_text().splitlines()[1:]
    cli_codes_only = [dict(zip(["group", "path", "representative"], line.split(","))) for line in lines]
    assert [{**g, "group": str(g["group"])} for g in found["codes_only"]] == cli_codes_only
    assert cli_codes_only, "the odd formats' copies of one photo are near-duplicates by their codes alone too"


def test_find_duplicates_of_a_folder_extracts_then_groups(local, photos, cli_table):
    groups = local(f"""
        import json, imgfeat
        print(json.dumps(imgfeat.find_duplicates({str(photos)!r}, progress=False).to_pylist()))
    """)
    cli = local(f"""
        import json, imgfeat, pyarrow.parquet as pq
        print(json.dumps(imgfeat.find_duplicates(pq.read_table({str(cli_table)!r})).to_pylist()))
    """)
    assert groups == cli


def reversed_projection(path):
    """The shipped 256-bit projection with its bits in reverse order: valid, and making codes that cannot be
    compared with the shipped projection's (safetensors: an 8-byte header length, a JSON header, the data)."""
    data = (ROOT / "models/codes_itq_256.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    start, end = header["rotation"]["data_offsets"]
    k = header["rotation"]["shape"][0]
    body = bytearray(data[8 + n:])
    rows = [bytes(body[start + r * 4 * k:start + (r + 1) * 4 * k]) for r in range(k)]
    body[start:end] = b"".join(b"".join(row[c * 4:(c + 1) * 4] for c in reversed(range(k))) for row in rows)
    path.write_bytes(data[:8 + n] + bytes(body))


def test_search_refuses_codes_from_another_projection_or_length(local, photos, cli_table, tmp_path):
    """The table read with pyarrow keeps the provenance `extract` recorded: a query made by another projection
    or with another code length is refused with the CLI's message, never ranked."""
    other = tmp_path / "reversed.safetensors"
    reversed_projection(other)
    query = next(p for p in sorted(photos.rglob("*.JPEG")) + sorted(photos.rglob("*.jpg")) if "corrupt" not in p.name)
    errors = local(f"""
        import json, imgfeat, pyarrow.parquet as pq
        table = pq.read_table({str(cli_table)!r})
        errors = {{}}
        for name, config in (("projection", {{"codes": {{"projection": {str(other)!r}}}}}), ("bits", {{"codes": {{"bits": 64}}}})):
            try:
                imgfeat.Index(table, config).search({str(query)!r})
            except ValueError as error:
                errors[name] = str(error)
        print(json.dumps({{"errors": errors, "found": imgfeat.Index(table).search({str(query)!r}, k=1).to_pylist()}}))
    """)
    assert "from projection" in errors["errors"]["projection"], errors
    assert "64 bits, the table's 256" in errors["errors"]["bits"], errors
    assert errors["found"][0]["path"] == str(query), "the table's own settings find the photo"


def test_the_native_sides_warnings_reach_pythons_logging(local, cli_table):
    """A table whose rows were made in two precisions (as Spark executors on different CPUs make them) is
    read with a warning on the logger "imgfeat.search", naming both; a table of one precision without."""
    logged = local(f"""
        import io, json, logging, imgfeat, pyarrow as pa, pyarrow.parquet as pq
        stream = io.StringIO()
        logging.basicConfig(stream=stream, level=logging.WARNING, format="%(name)s: %(message)s")
        table = pq.read_table({str(cli_table)!r})
        imgfeat.Index(table)
        one = stream.getvalue()
        made = table.column("arithmetic").to_pylist()
        first = next(i for i, m in enumerate(made) if m)
        made[first] = "f32 (avx2)" if made[first].startswith("int8") else "int8 (avx2-int8)"
        imgfeat.Index(table.set_column(table.schema.get_field_index("arithmetic"), "arithmetic", pa.array(made, pa.string())))
        print(json.dumps({{"one": one, "two": stream.getvalue(), "other": made[first]}}))
    """)
    assert "precisions" not in logged["one"], "one precision is no warning"
    assert "imgfeat.search: the table's rows were made in 2 precisions" in logged["two"], logged
    assert f"1 in {logged['other']}" in logged["two"], logged


def test_bad_settings_and_inputs_raise_clear_python_exceptions(local, tmp_path):
    cases = {
        "unknown field": "imgfeat.Pipeline({'scor_threshold': 0.4})",
        "bad value": "imgfeat.Pipeline({'codes': {'bits': 100}})",
        "missing model": "imgfeat.Pipeline({'model_dir': '/nonexistent/models'})",
        "not JSON": "imgfeat.Pipeline('{not json')",
        "not bytes": "imgfeat.Pipeline().process([123])",
        "bad threads": "imgfeat.Pipeline(threads=-1)",
        "missing folder": "imgfeat.extract('/nonexistent/photos', progress=False)",
        "not a table": "imgfeat.find_duplicates(imgfeat.Pipeline().process([b'x']).drop_columns(['code', 'whole_code']))",
    }
    code = f"""
        import json, imgfeat
        found = {{}}
        for name, statement in {cases!r}.items():
            try:
                eval(statement)
                found[name] = None
            except Exception as error:
                found[name] = [type(error).__name__, str(error)]
        print(json.dumps(found))
    """
    found = local(code)
    assert found["unknown field"][0] == "ValueError" and "scor_threshold" in found["unknown field"][1]
    assert found["bad value"][0] == "ValueError" and "codes.bits" in found["bad value"][1]
    assert found["missing model"][0] == "ImgfeatError" and "/nonexistent/models" in found["missing model"][1]
    assert found["not JSON"][0] == "ValueError"
    assert found["not bytes"][0] == "TypeError"
    assert found["bad threads"][0] == "ValueError"
    assert found["missing folder"][0] in ("OSError", "FileNotFoundError") and "/nonexistent/photos" in found["missing folder"][1]
    assert found["not a table"][0] == "ImgfeatError" and "not an imgfeat features table" in found["not a table"][1]


def test_the_gil_is_released_while_the_native_code_runs(local, photos):
    """Another Python thread keeps running while a batch is processed: with the GIL held it would not
    get a single turn until the call returned."""
    files = sorted(str(p) for p in photos.rglob("*.JPEG"))[:16] or sorted(str(p) for p in photos.rglob("*.jpg"))
    found = local(f"""
        import json, threading, time, imgfeat
        pipeline = imgfeat.Pipeline(threads=1)
        images = [open(f, "rb").read() for f in {files!r}]
        done = threading.Event()
        def work():
            pipeline.process(images)
            done.set()
        ticks = 0
        worker = threading.Thread(target=work)
        started = time.perf_counter()
        worker.start()
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)
        print(json.dumps({{"ticks": ticks, "seconds": time.perf_counter() - started}}))
    """)
    # Each tick sleeps 1 ms; with the GIL released the loop ticks through the whole call.
    assert found["ticks"] >= 0.2 * found["seconds"] * 1000, found


def test_models_unpack_once_from_the_jar_into_the_cache(local, cache_dir):
    found = local("""
        import json, imgfeat
        from imgfeat import _bundled
        first, second = _bundled.model_dir(), _bundled.model_dir()
        print(json.dumps({"dir": str(first), "same": first == second, "models": sorted(p.name for p in first.iterdir()),
                          "config": imgfeat.Pipeline().config["model_dir"]}))
    """)
    assert found["same"] and found["dir"].startswith(str(cache_dir)) and found["config"] == found["dir"]
    assert {"ssd_mobilenetv2_coco_float.onnx", "efficientnet_lite0_embed.onnx", "codes_itq_256.safetensors"} <= set(found["models"])


def test_the_readmes_python_set_up_and_example_run_verbatim(readme_workdir, cache_dir):
    """docs/python.md's set-up (its wheel build is scripts/test.sh's own step), then the README's Python example
    as the example.py it runs."""
    set_up = readme_block("tests/python runs this block in a fresh folder", "bash", page="docs/python.md").strip().splitlines()
    assert set_up[0].startswith("scripts/build-wheel.sh"), set_up
    (readme_workdir / "example.py").write_text(readme_block("tests/python runs this block as example.py", "python"))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(set_up[1:])], cwd=readme_workdir,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "IMGFEAT_CACHE": str(cache_dir)})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    nearest, groups, errors = result.stdout.strip().splitlines()[-1].split(" ", 2)
    assert nearest == "tests/fixtures/photos/coffee.jpg", "a photo's nearest row is its own"
    assert groups == "0", "the four fixture photos are not near-duplicates"
    assert errors.startswith("[None, '") and errors != "[None, None]", "the text is an error row, the photo is not"


def test_the_pyspark_classes_without_pyspark_say_what_to_install(local):
    found = local("""
        import json, imgfeat
        try:
            imgfeat.ImageFeatureExtractor
            print(json.dumps(None))
        except ImportError as error:
            print(json.dumps(str(error)))
    """)
    assert found and "imgfeat[spark]" in found
