//! The `imgfeat` binary as a user runs it: a folder in, a Parquet file out, one row per file.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::{fixture_folder, fixtures, imgfeat, near_duplicate_photos, temp_dir};
use imgfeat::{Config, Pipeline};

fn read_parquet(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn extract_writes_one_row_per_file_with_errors_for_bad_ones() {
    let dir = temp_dir("cli-extract");
    let photos = dir.join("photos/nested");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["chelsea.jpg", "coffee.jpg", "rocket.jpg"] {
        std::fs::copy(fixtures().join(name), photos.join(name)).unwrap();
    }
    // A JPEG cut in half and a text file: both must be rows with an error.
    let coffee = std::fs::read(fixtures().join("coffee.jpg")).unwrap();
    std::fs::write(dir.join("photos/truncated.jpg"), &coffee[..coffee.len() / 3]).unwrap();
    std::fs::write(dir.join("photos/notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("photos/.hidden"), "skipped").unwrap();
    let output = dir.join("features.parquet");

    let run = imgfeat()
        .args(["extract", "--threads", "2", "--batch-size", "2", "-o"])
        .arg(&output)
        .arg(dir.join("photos"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("5 images: 3 ok (2 with a detected object), 2 failed"), "{stdout}");

    let batch = read_parquet(&output);
    assert_eq!(batch.num_rows(), 5);
    let paths: Vec<String> = batch.column_by_name("path").unwrap().as_string::<i32>().iter().map(|p| p.unwrap().to_string()).collect();
    let names: Vec<&str> = paths.iter().map(|p| p.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "notes.txt", "truncated.jpg"]);
    let errors = batch.column_by_name("error").unwrap().as_string::<i32>();
    assert!(errors.is_null(0) && errors.is_null(1) && errors.is_null(2));
    assert!(errors.value(3).contains("unrecognised image format"), "{}", errors.value(3));
    assert!(errors.value(4).contains("JPEG"), "{}", errors.value(4));
    let classes = batch.column_by_name("class_name").unwrap().as_string::<i32>();
    assert_eq!((classes.value(0), classes.value(1)), ("cat", "cup"));
    assert!(classes.is_null(2), "rocket has no object");
    assert_eq!(batch.column_by_name("code").unwrap().data_type(), &DataType::FixedSizeBinary(32));

    // The CLI's rows are the library's rows.
    let pipeline = Pipeline::new(Config::from_json(r#"{"threads": 1}"#).unwrap()).unwrap();
    let record = pipeline.process_one(&coffee).unwrap();
    let features = batch.column_by_name("feature").unwrap().as_list::<i32>();
    let coffee_feature: Vec<f32> = features.value(1).as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(&coffee_feature, record.feature.as_ref().unwrap());
    let codes = batch.column_by_name("whole_code").unwrap().as_fixed_size_binary();
    assert_eq!(codes.value(1), record.whole_code.as_ref().unwrap().as_slice());
    assert!(codes.is_null(3) && features.is_null(4));
    let boxes = batch.column_by_name("box").unwrap().as_struct();
    assert!(boxes.is_valid(1) && boxes.is_null(2));
    let xmin = boxes.column_by_name("xmin").unwrap().as_primitive::<Float32Type>().value(1);
    assert_eq!(xmin, record.main_object.unwrap().bbox.xmin);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn show_prints_the_detection_and_codes() {
    let run = imgfeat().args(["show", "--threads", "1"]).arg(fixtures().join("chelsea.jpg")).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("main object: cat"), "{stdout}");
    let code_line = stdout.lines().find(|l| l.starts_with("code:")).unwrap();
    assert_eq!(code_line.split_whitespace().nth(1).unwrap().len(), 64, "256 bits in hex");
    // int8 (f32 on a CPU without AVX-512 VNNI, with a line saying so) finds the same cat.
    let run = imgfeat().args(["show", "--threads", "1", "--precision", "int8"]).arg(fixtures().join("chelsea.jpg")).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("main object: cat"));
}

/// Warnings only by default; `-v` says which executor runs each model (and nothing of tract's own
/// debug lines), `-vv` no fewer lines.
#[test]
fn verbose_flags_say_what_runs_where() {
    let stderr_of = |flags: &[&str]| {
        let run = imgfeat().args(["show", "--threads", "1"]).args(flags).arg(fixtures().join("coffee.jpg")).env_remove("RUST_LOG").output().unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let quiet = stderr_of(&[]);
    assert!(!quiet.contains("runs on the"), "{quiet}");
    let verbose = stderr_of(&["-v"]);
    assert_eq!(verbose.matches("imgfeat: info: ").count(), 2, "one line per model: {verbose}");
    assert!(verbose.contains("runs on the native executor") || verbose.contains("runs on the tract"), "{verbose}");
    let very = stderr_of(&["-vv"]);
    assert!(very.lines().count() >= verbose.lines().count() && very.lines().count() < 50, "{very}");
}

#[test]
fn bad_configuration_and_missing_inputs_fail_with_a_message() {
    let run = imgfeat().args(["extract", "--detector", "yolo", "x"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown detector preset \"yolo\""));
    let run = imgfeat().args(["extract", "--precision", "int4", "x"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("expected one of `auto`, `f32`, `int8`, `bf16`"));
    let run = imgfeat().args(["extract", "/nonexistent/photos"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/photos"));
}

/// Near-duplicates of two fixtures (a mirrored copy, a re-encoded half-size copy, a crop) among the
/// other fixtures: `dedup` groups each with its original and nothing else, and `search` with a copy
/// finds its original first, by Hamming distance and by cosine.
#[test]
fn dedup_groups_near_duplicates_and_search_finds_the_original() {
    let dir = temp_dir("cli-dedup");
    let photos = near_duplicate_photos(&dir);
    let chelsea = image::open(fixtures().join("chelsea.jpg")).unwrap().to_rgb8();
    let coffee = image::open(fixtures().join("coffee.jpg")).unwrap().to_rgb8();
    image::imageops::crop_imm(&coffee, 60, 20, 480, 360).to_image().save(photos.join("coffee-cropped.png")).unwrap();

    let features = dir.join("features.parquet");
    let out = imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&features).arg(&photos).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let groups_csv = dir.join("groups.csv");
    let out = imgfeat().args(["dedup", "--no-verify", "--max-distance", "40", "-o"]).arg(&groups_csv).arg(&features).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(&groups_csv).unwrap();
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let name = Path::new(fields[1]).file_name().unwrap().to_string_lossy().into_owned();
        groups.entry(fields[0].to_string()).or_default().push(name);
    }
    let mut found: Vec<Vec<String>> = groups.into_values().collect();
    found.iter_mut().for_each(|g| g.sort());
    found.sort();
    assert_eq!(
        found,
        vec![vec!["chelsea-mirrored.png", "chelsea.jpg"], vec!["coffee-cropped.png", "coffee-small.jpg", "coffee.jpg"]],
        "{csv}"
    );
    // The default rule (candidates within 47 bits, features verified) keeps these groups: every copy's
    // features agree with its original's.
    let verified_csv = dir.join("verified.csv");
    let out = imgfeat().args(["dedup", "-o"]).arg(&verified_csv).arg(&features).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max distance 47, features verified"));
    assert_eq!(std::fs::read_to_string(&verified_csv).unwrap(), csv);
    // The same groups as Parquet.
    let groups_parquet = dir.join("groups.parquet");
    assert!(imgfeat().args(["dedup", "-o"]).arg(&groups_parquet).arg(&features).status().unwrap().success());
    assert_eq!(read_parquet(&groups_parquet).num_rows(), 5);

    let out = imgfeat().args(["search", "-k", "3", "--index"]).arg(&features).arg(photos.join("chelsea-mirrored.png")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[1].ends_with("chelsea-mirrored.png") && lines[2].ends_with("chelsea.jpg"), "{stdout}");
    assert_eq!(lines.len(), 4, "a header and k rows: {stdout}");

    // By code: the hex `show` prints.
    let show = imgfeat().arg("show").arg(fixtures().join("rocket.jpg")).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    let code = show.lines().find_map(|l| l.strip_prefix("code:")).unwrap().trim().to_string();
    let out = imgfeat().args(["search", "-k", "1", "--code", &code, "--index"]).arg(&features).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().nth(1).is_some_and(|l| l.contains(" 0 ") && l.ends_with("rocket.jpg")), "{stdout}");
    let bad = imgfeat().args(["search", "--code", "abc", "--index"]).arg(&features).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("hex"));
    let short = imgfeat().args(["search", "--code", &code[..16], "--index"]).arg(&features).output().unwrap();
    let message = String::from_utf8_lossy(&short.stderr);
    assert!(!short.status.success() && message.contains("the code has 64 bits, the table's 256"), "{message}");

    // Several queries at once as JSON lines, a photo pasted onto another among them, and a query that
    // is not an image: its line says why, the others are answered, the exit code says one failed.
    let mut rocket = image::open(fixtures().join("rocket.jpg")).unwrap().to_rgb8();
    let small = image::imageops::resize(&chelsea, 200, 133, image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut rocket, &small, 380, 40);
    let pasted = dir.join("chelsea-on-rocket.png");
    rocket.save(&pasted).unwrap();
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"not a photo").unwrap();
    let out = imgfeat()
        .args(["search", "--json", "-k", "2", "--rerank", "0", "--index"])
        .arg(&features)
        .args([&pasted, &junk, &photos.join("coffee-small.jpg")])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("1 of 3 query images"));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    let first = |line: &serde_json::Value| line["hits"][0]["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert!(lines[0]["insets"].as_u64().unwrap() >= 1, "{}", lines[0]);
    assert!(first(&lines[0]).starts_with("chelsea"), "the pasted cat is found through its inset: {}", lines[0]);
    assert!(lines[1]["error"].as_str().unwrap().contains("junk.jpg"), "{}", lines[1]);
    assert_eq!(first(&lines[2]), "coffee-small.jpg");
    // Without insets the pasted photo is the rocket's near-duplicate.
    let out = imgfeat().args(["search", "--json", "-k", "1", "--insets", "0", "--index"]).arg(&features).arg(&pasted).output().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((line["insets"].as_u64(), first(&line).as_str()), (Some(0), "rocket.jpg"), "{line}");

    // A photo turned by 90° either way is found through the query turned back: its original first, at
    // a distance of a re-encoded copy (upright, its codes are 60+ bits from it).
    for (name, turned) in [("left", image::imageops::rotate270(&coffee)), ("right", image::imageops::rotate90(&coffee))] {
        let path = dir.join(format!("coffee-turned-{name}.png"));
        turned.save(&path).unwrap();
        let out = imgfeat().args(["search", "--json", "-k", "1", "--rerank", "0", "--index"]).arg(&features).arg(&path).output().unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(first(&line).starts_with("coffee"), "{line}");
        assert!(line["hits"][0]["distance"].as_u64().unwrap() <= 16, "{line}");
    }

    // The coffee photo as the bottom-right tile of a 2×2 collage (a red card with white "text", stripes,
    // a gradient): the four tiles (corners, with two sides on the image's border) are cut on the
    // collage's full-length seams, and the coffee tile finds the coffee photo itself, nearer than the
    // whole collage comes to any row (its detected cup finds the half-size copy, 24 bits away).
    let (w, h) = (coffee.width() / 2, coffee.height() / 2);
    let mut collage = image::RgbImage::from_fn(2 * w, 2 * h, |x, y| match (x >= w, y >= h) {
        (false, false) if (y / 12) % 3 == 1 && (x / 9) % 4 != 3 && x > 20 && x + 20 < w => image::Rgb([250, 250, 250]),
        (false, false) => image::Rgb([200, 30, 30]),
        (true, false) => image::Rgb([120 + ((x + y) / 15 % 2 * 90) as u8, 90, 160]),
        _ => image::Rgb([(x * 255 / (2 * w)) as u8, (y * 255 / (2 * h)) as u8, 90]),
    });
    let tile = image::imageops::resize(&coffee, w, h, image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut collage, &tile, w as i64, h as i64);
    let query = dir.join("coffee-in-collage.png");
    collage.save(&query).unwrap();
    let nearest = |insets: &str| -> serde_json::Value {
        let out = imgfeat().args(["search", "--json", "-k", "1", "--rerank", "0", "--insets", insets, "--index"]).arg(&features).arg(&query).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (tiled, whole) = (nearest("4"), nearest("0"));
    let distance = |line: &serde_json::Value| line["hits"][0]["distance"].as_u64().unwrap();
    assert_eq!((tiled["insets"].as_u64(), first(&tiled).as_str()), (Some(4), "coffee.jpg"), "{tiled}");
    assert!(distance(&tiled) < distance(&whole), "the tile is nearer than the whole collage: {tiled} / {whole}");
}

/// A group far larger than a page should show (60 copies of one photo) is cut to 50 members with a
/// note, and every copy is still in the gallery.
#[test]
fn the_report_cuts_a_huge_group() {
    let dir = temp_dir("cli-report");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let coffee = image::open(fixtures().join("coffee.jpg")).unwrap().to_rgb8();
    let small = image::imageops::resize(&coffee, 120, 80, image::imageops::FilterType::Triangle);
    for i in 0..60 {
        small.save(photos.join(format!("copy{i:02}.png"))).unwrap();
    }
    let features = dir.join("features.parquet");
    let out = imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&features).arg(&photos).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = dir.join("report.html");
    let out = imgfeat().args(["report", "-o"]).arg(&html).arg(&features).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("class=\"group\"").count(), 1);
    assert!(page.contains("Group 1 · 60 images") && page.contains("and 10 more"), "the group is cut");
    assert_eq!(page.matches("<figure class=\"member\">").count(), 50);
    assert_eq!(page.matches("<figure class=\"image\">").count(), 60, "every row in the gallery");
}

/// The resume and append commands of docs/cli.md ("Resume and append"), as written, from a folder laid out
/// like the repository:
/// an interrupted run's committed part is resumed (its photo is not processed again), and an append
/// with nothing new processes nothing and keeps every row.
#[test]
fn the_readme_resume_and_append_commands_work_as_written() {
    let dir = temp_dir("cli-readme-resume");
    let photos = dir.join("tests/fixtures/photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"] {
        std::fs::copy(fixtures().join(name), photos.join(name)).unwrap();
    }
    let extract = || imgfeat().current_dir(&dir).args(["extract", "tests/fixtures/photos", "-o", "features.parquet"]).output().unwrap();
    let first = extract();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // An interrupted run: the committed part of a first batch, as a killed run leaves it.
    let parts = dir.join("features.parquet.parts");
    std::fs::create_dir_all(&parts).unwrap();
    let one = imgfeat().current_dir(&dir).args(["extract", "tests/fixtures/photos/astronaut.jpg", "-o", "features.parquet.parts/part-0000-000000.parquet"]).output().unwrap();
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    std::fs::write(parts.join(".part-0000-000001.parquet.writing-1"), b"half a part").unwrap();
    let resumed = extract();
    let (stdout, stderr) = (String::from_utf8_lossy(&resumed.stdout), String::from_utf8_lossy(&resumed.stderr));
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming an interrupted run: 1 rows already committed"), "{stderr}");
    assert!(stdout.starts_with("3 images: 3 ok") && stdout.contains("(4 rows)"), "{stdout}");
    assert!(!parts.exists());
    let appended = imgfeat().current_dir(&dir).args(["extract", "--append", "tests/fixtures/photos", "-o", "features.parquet"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&appended.stdout);
    assert!(appended.status.success() && stdout.starts_with("0 images") && stdout.contains("(4 already in the table)") && stdout.contains("(4 rows)"), "{stdout}");
    assert_eq!(read_parquet(&dir.join("features.parquet")).num_rows(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `dedup` (its default rule, features verified) on real photos (photos 401–440 of ../shared/data, out of the set its thresholds were
/// calibrated on) and four hard edits of each of the first 20 (blur, grayscale, crop with a banner re-saved
/// as JPEG, a flat sticker, the same banner and sticker on every copy): it groups more copies with their
/// original than the codes alone do, and never puts rows of two photos in one group.
#[test]
fn verified_dedup_groups_more_edited_copies_and_never_two_photos() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/imagenet-sample");
    if !shared.is_dir() {
        common::skipped(format_args!("SKIPPED: {} is absent; verified dedup is checked on constructed pairs only", shared.display()));
        return;
    }
    let dir = temp_dir("cli-verified-dedup");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for (i, path) in names[400..440].iter().enumerate() {
        let photo = image::open(path).unwrap().to_rgb8();
        photo.save(photos.join(format!("{i:02}.png"))).unwrap();
        if i >= 20 {
            continue;
        }
        let (w, h) = photo.dimensions();
        image::imageops::blur(&photo, 3.0).save(photos.join(format!("{i:02}__blur.png"))).unwrap();
        image::DynamicImage::ImageRgb8(photo.clone()).grayscale().to_rgb8().save(photos.join(format!("{i:02}__grayscale.png"))).unwrap();
        let crop = image::imageops::crop_imm(&photo, w / 10, h / 10, w * 8 / 10, h * 8 / 10).to_image();
        let mut banner = image::RgbImage::from_pixel(crop.width(), crop.height() + h / 6, image::Rgb([200, 30, 30]));
        image::imageops::replace(&mut banner, &crop, 0, (h / 6) as i64);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 40).encode_image(&banner).unwrap();
        std::fs::write(photos.join(format!("{i:02}__banner.jpg")), jpeg).unwrap();
        let mut sticker = photo.clone();
        for y in h / 4..h * 3 / 4 {
            for x in w / 5..w * 4 / 5 {
                sticker.put_pixel(x, y, image::Rgb([240, 200, 20]));
            }
        }
        sticker.save(photos.join(format!("{i:02}__sticker.png"))).unwrap();
    }
    let features = dir.join("features.parquet");
    let out = imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&features).arg(&photos).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (copies in their original's group, originals sharing a group with another original)
    let grouped = |extra: &[&str]| -> (usize, usize) {
        let csv = dir.join("groups.csv");
        let out = imgfeat().arg("dedup").args(extra).arg("-o").arg(&csv).arg(&features).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut group_of = std::collections::HashMap::new();
        for line in std::fs::read_to_string(&csv).unwrap().lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let stem = Path::new(fields[1]).file_stem().unwrap().to_string_lossy().into_owned();
            group_of.insert(stem, fields[0].to_string());
        }
        let with_original = group_of.iter().filter(|(name, group)| {
            name.split_once("__").is_some_and(|(photo, _)| group_of.get(photo) == Some(group))
        });
        // Groups holding rows of two photos, originals or copies: every copy here carries the same
        // sticker or banner, content that rows of different photos share.
        let mut photos_per_group: std::collections::HashMap<&String, std::collections::BTreeSet<&str>> = Default::default();
        for (name, group) in &group_of {
            photos_per_group.entry(group).or_default().insert(name.split_once("__").map_or(name.as_str(), |(photo, _)| photo));
        }
        (with_original.count(), photos_per_group.values().filter(|photos| photos.len() > 1).count())
    };
    let (hamming_grouped, _) = grouped(&["--no-verify"]);
    let (verified_grouped, verified_mixed) = grouped(&[]);
    assert_eq!(verified_mixed, 0, "the verified rule put rows of different photos in one group");
    assert!(verified_grouped > hamming_grouped, "the verified rule grouped {verified_grouped} of 80 copies, the codes alone {hamming_grouped}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dedup_groups_a_photo_pasted_onto_another_through_the_inset_its_row_carries() {
    let dir = temp_dir("cli-inset-dedup");
    let photos = fixture_folder(&dir, &["chelsea.jpg", "coffee.jpg", "rocket.jpg"]);
    // The cat at 45 % of its size pasted onto the coffee photo: the whole image is mostly coffee, and
    // the object the detector picks is not the original's crop.
    let cat = image::open(photos.join("chelsea.jpg")).unwrap().to_rgb8();
    let mut pasted = image::imageops::resize(&image::open(photos.join("coffee.jpg")).unwrap().to_rgb8(), cat.width(), cat.height(), image::imageops::FilterType::Triangle);
    let small = image::imageops::resize(&cat, cat.width() * 45 / 100, cat.height() * 45 / 100, image::imageops::FilterType::Triangle);
    let (left, top) = (cat.width() * 3 / 10, cat.height() * 3 / 10);
    image::imageops::replace(&mut pasted, &small, left as i64, top as i64);
    pasted.save(photos.join("pasted-chelsea.png")).unwrap();
    let no_insets = dir.join("no-insets.json");
    std::fs::write(&no_insets, r#"{"insets": 0}"#).unwrap();

    let groups = |config: Option<&Path>, name: &str| -> (String, RecordBatch) {
        let features = dir.join(format!("{name}.parquet"));
        let mut extract = imgfeat();
        extract.args(["extract", "-o"]).arg(&features);
        if let Some(config) = config {
            extract.arg("--config").arg(config);
        }
        let out = extract.arg(&photos).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let csv = dir.join(format!("{name}.csv"));
        let out = imgfeat().args(["dedup", "-o"]).arg(&csv).arg(&features).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (std::fs::read_to_string(&csv).unwrap(), read_parquet(&features))
    };
    let (with_insets, table) = groups(None, "insets");
    let members: Vec<&str> = with_insets.lines().skip(1).map(|l| l.rsplit_once(',').unwrap().0.split_once(',').unwrap().1).collect();
    assert_eq!(members.len(), 2, "{with_insets}");
    assert!(members[0].ends_with("chelsea.jpg") && members[1].ends_with("pasted-chelsea.png"), "{with_insets}");
    // The row carries the pasted photo's rectangle (within a few pixels) and only that row has one.
    let paths = table.column_by_name("path").unwrap().as_string::<i32>();
    let insets = table.column_by_name("insets").unwrap().as_list::<i32>();
    for row in 0..table.num_rows() {
        let found = insets.value(row);
        let found = found.as_struct();
        if !paths.value(row).ends_with("pasted-chelsea.png") {
            assert_eq!(found.len(), 0, "{} has an inset", paths.value(row));
            continue;
        }
        assert_eq!(found.len(), 1);
        let side = |name: &str| found.column_by_name(name).unwrap().as_primitive::<arrow::datatypes::Int32Type>().value(0);
        let expected = [left, top, left + small.width(), top + small.height()].map(|v| v as i32);
        let got = [side("left"), side("top"), side("right"), side("bottom")];
        assert!(got.iter().zip(expected).all(|(g, e)| g.abs_diff(e) <= 2), "inset {got:?}, pasted at {expected:?}");
        assert_eq!(found.column_by_name("code").unwrap().as_fixed_size_binary().value(0).len(), 32);
    }
    // Without insets in the rows, nothing groups the pasted copy with its original.
    let (without, _) = groups(Some(&no_insets), "no-insets");
    assert_eq!(without.lines().count(), 1, "{without}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A projection file like the shipped 64-bit one but with its bits in reverse order: valid, and
/// making codes that cannot be compared with the shipped projection's.
fn reversed_projection(path: &Path) {
    let shipped = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/codes_itq_64.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&shipped).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&shipped).unwrap();
    let rotation = tensors.tensor("rotation").unwrap();
    let k = rotation.shape()[0];
    // Row-major [k, k]: reversing each row's columns reverses the bits.
    let reversed: Vec<u8> = rotation.data().chunks_exact(4 * k).flat_map(|row| row.chunks_exact(4).rev().flatten().copied().collect::<Vec<u8>>()).collect();
    let view = |name: &str| tensors.tensor(name).unwrap();
    let (mean, pca) = (view("mean"), view("pca"));
    let rotation = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![k, k], &reversed).unwrap();
    let bytes = safetensors::serialize(vec![("mean", mean), ("pca", pca), ("rotation", rotation)], header.metadata().clone()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Codes from another projection or of another length are refused with a clear error, never ranked:
/// a search with settings other than the table's, and a folder holding the part files of two runs.
#[test]
fn codes_from_another_projection_are_refused_not_compared() {
    let dir = temp_dir("cli-projection");
    let photos = fixture_folder(&dir, &["chelsea.jpg", "coffee.jpg"]);
    let other = dir.join("reversed_64.safetensors");
    reversed_projection(&other);
    let config = dir.join("other.json");
    std::fs::write(&config, serde_json::json!({"codes": {"bits": 64, "projection": other}}).to_string()).unwrap();

    let parts = dir.join("table");
    std::fs::create_dir_all(&parts).unwrap();
    let shipped = parts.join("part-00000.parquet");
    let out = imgfeat().args(["extract", "--bits", "64", "-o"]).arg(&shipped).arg(&photos).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let query = photos.join("coffee.jpg");
    let search = |extra: &[&str], table: &Path| imgfeat().arg("search").args(extra).arg("--index").arg(table).arg(&query).output().unwrap();
    let found = search(&["--bits", "64"], &shipped);
    assert!(found.status.success() && String::from_utf8_lossy(&found.stdout).contains("coffee.jpg"), "{}", String::from_utf8_lossy(&found.stderr));

    let refused = search(&["--config", config.to_str().unwrap()], &shipped);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && message.contains("from projection") && message.contains("codes.projection"), "{message}");
    assert!(refused.stdout.is_empty(), "nothing ranked: {}", String::from_utf8_lossy(&refused.stdout));
    let refused = search(&[], &shipped);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && message.contains("256 bits, the table's 64"), "{message}");

    // A second run's part file made with the other projection, beside the first: dedup refuses the folder.
    let out = imgfeat().args(["extract", "--config"]).arg(&config).arg("-o").arg(parts.join("part-00001.parquet")).arg(&photos).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = imgfeat().args(["dedup", "-o"]).arg(dir.join("groups.csv")).arg(&parts).output().unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && message.contains("part-00001.parquet") && message.contains("cannot be compared"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}
