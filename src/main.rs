//! `imgfeat`: the pipeline on a folder of images, no cluster needed.

#[path = "cli/fit_codes.rs"]
mod fit_codes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use imgfeat::config::{DetectorSpec, EmbedMode, Precision};
use imgfeat::features::{ExtractOutput, FeaturesReader, Provenance};
use imgfeat::inputs::image_files;
use imgfeat::report::ReportOptions;
use imgfeat::search::{DuplicateRule, Index, Query};
use imgfeat::{Config, Error, ImageError, Pipeline, Record};

#[derive(Parser)]
#[command(name = "imgfeat", version, about = "Image features for similarity search and de-duplication")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Say more on stderr: -v what runs where (which executor and GEMM each model runs on), -vv
    /// debugging detail. Without it only warnings (RUST_LOG, if set, overrides both).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Extract a feature row for every file under the given folders (recursively) and files.
    Extract {
        /// Folders and image files; hidden files (names starting with '.') in folders are skipped,
        /// symlinks followed, and a file reached twice is one row.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output Parquet file. It is replaced only once the new table is complete; until then rows are
        /// committed batch by batch to OUTPUT.parts/, and a run killed part-way is resumed by running
        /// the same command again (only the batches in flight are redone).
        #[arg(short, long, default_value = "features.parquet")]
        output: PathBuf,
        /// Keep the rows of an existing output and add only the files it does not have yet (a
        /// catalogue that grows). The table must have been made with the same settings.
        #[arg(long)]
        append: bool,
        /// Images read and processed together (the granularity of the progress bar).
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        settings: Settings,
    },
    /// Fit binary-code projections on the features of the given images (PCA + ITQ), or with --edits N
    /// also on edited copies of them (edit-invariant codes).
    FitCodes {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Folder for the projection files [default: the model folder].
        #[arg(long)]
        output_dir: Option<PathBuf>,
        #[command(flatten)]
        fit: FitOptions,
        #[command(flatten)]
        settings: Settings,
    },
    /// Print the detections, crop and codes of one image (computed, or as a features table has it).
    Show {
        image: PathBuf,
        /// Print the image's row from this features table (a file, or a Spark job's output directory)
        /// instead of computing it.
        #[arg(long)]
        index: Option<PathBuf>,
        /// Print the whole record as JSON, features included.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Find the rows of a features file nearest to an image (or a code) by Hamming distance over both
    /// codes of each row, the best re-ranked by feature cosine.
    Search {
        /// Features table: the Parquet file `extract` writes, or a Spark job's output directory.
        #[arg(long)]
        index: PathBuf,
        /// Query images, each searched on its own (its object, whole-image and inset codes are all used).
        #[arg(required_unless_present = "code", conflicts_with = "code")]
        images: Vec<PathBuf>,
        /// Query with one code instead, as hex (as `show` prints it).
        #[arg(long)]
        code: Option<String>,
        /// Rows to print per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// How many of the nearest by Hamming distance are re-ranked by cosine (0: none).
        #[arg(long, default_value_t = 50)]
        rerank: usize,
        /// Photos pasted into a query image (found by their seams) that are embedded and searched
        /// too, at most this many per query (0: none; 16 at most). Each costs one embedding.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=16))]
        insets: u8,
        /// One JSON object per query on a line: {"query", "insets", "hits": [{"path", "distance",
        /// "cosine"}]} or {"query", "error"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Group near-duplicate rows of a features file: rows whose codes (object or whole image, any
    /// pair) are within --max-distance bits are candidates, joined (transitively) when their features
    /// agree too, or with --no-verify by the codes alone.
    Dedup {
        /// Features table: the Parquet file `extract` writes, or a Spark job's output directory.
        features: PathBuf,
        #[command(flatten)]
        rule: RuleArgs,
        /// Output: .parquet or .csv, one line per row in a group (group, path, representative).
        #[arg(short, long, default_value = "duplicates.csv")]
        output: PathBuf,
    },
    /// Write a static HTML page (no network, thumbnails inlined) showing each image with its detected
    /// box and class, the crop that was embedded, the near-duplicate groups and the failed rows.
    Report {
        /// Features table (`extract`'s file or a Spark job's directory); images are read again from its paths.
        features: PathBuf,
        /// Output HTML file.
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
        #[command(flatten)]
        rule: RuleArgs,
        /// Images shown in the gallery (the first, in the file's order).
        #[arg(long, default_value_t = ReportOptions::default().max_images)]
        max_images: usize,
        /// Near-duplicate groups shown (the largest).
        #[arg(long, default_value_t = ReportOptions::default().max_groups)]
        max_groups: usize,
        /// Longer side of the thumbnails, in pixels.
        #[arg(long, default_value_t = ReportOptions::default().thumbnail_side)]
        thumbnail_side: u32,
    },
    /// Print the effective configuration as JSON (a starting point for --config).
    Config {
        #[command(flatten)]
        settings: Settings,
    },
}

/// How `fit-codes` fits.
#[derive(Args)]
struct FitOptions {
    /// Code lengths to fit, each written to codes_itq_<bits>.safetensors.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    bits_list: Vec<usize>,
    /// Edited copies made of each photo (crop, JPEG, blur, grayscale, colour, mirror, quarter turn,
    /// sticker, pasted small) for the codes to learn to ignore, e.g. 8: edit-invariant codes, which rank
    /// edited copies better by Hamming distance and keep other photos farther away (EVALUATION.md). 0:
    /// PCA + ITQ on the photos alone, the kind of the shipped projections, which dedup's default
    /// distances were tuned on.
    #[arg(long, default_value_t = 0)]
    edits: usize,
    /// ITQ iterations.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Seed of the edits and of ITQ's random initial rotation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// When two rows are near-duplicates (`search::DuplicateRule`), for `dedup` and `report`.
#[derive(Args)]
struct RuleArgs {
    /// Largest Hamming distance between candidate codes (of 256 bits by default) [default: 47, or 24
    /// with --no-verify].
    #[arg(long)]
    max_distance: Option<u32>,
    /// Join candidates by their codes alone. By default a candidate pair is joined only when the
    /// cosine of the features behind its nearest codes reaches 0.68 for two whole images, 0.95 for two
    /// objects, 0.76 for one of each (calibrated in EVALUATION.md): that groups more edited copies
    /// with their original without joining different photos, and needs the table's feature columns.
    #[arg(long)]
    no_verify: bool,
}

impl RuleArgs {
    fn rule(&self) -> DuplicateRule {
        DuplicateRule::new(self.max_distance, !self.no_verify)
    }
}

/// Options every command shares; each overrides the same field of the --config file.
#[derive(Args)]
struct Settings {
    /// JSON configuration file (fields left out keep their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder with the models, labels and projections [default: IMGFEAT_MODEL_DIR, else the source tree's models/].
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Detector preset: coco or oidv4.
    #[arg(long)]
    detector: Option<String>,
    /// Compute threads (0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Binary code length: 64, 128 or 256.
    #[arg(long)]
    bits: Option<usize>,
    /// Which embeddings rows carry: object, whole or both.
    #[arg(long, value_parser = by_name::<EmbedMode>)]
    embed: Option<EmbedMode>,
    /// Minimum detection score.
    #[arg(long)]
    score_threshold: Option<f32>,
    /// Arithmetic of the models' 1x1 and dense convolutions: auto (the default: bf16 where the CPU has AVX-512
    /// BF16, else f32), f32, bf16 (features within 0.1 % of f32's), or int8 (about twice f32's speed on CPUs with
    /// AVX-512 VNNI, features within ~1 % of f32's, the same rows on every CPU).
    #[arg(long, value_parser = by_name::<Precision>)]
    precision: Option<Precision>,
}

/// A configuration enum from its name in the JSON configuration.
fn by_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

impl Settings {
    fn config(&self) -> Result<Config, Error> {
        let mut config = match &self.config {
            Some(path) => Config::from_json(&std::fs::read_to_string(path).map_err(|e| Error::io(path.clone(), e))?)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.model_dir {
            config.model_dir = dir.clone();
        }
        if let Some(name) = &self.detector {
            config.detector = DetectorSpec::preset(name)?;
        }
        if let Some(threads) = self.threads {
            config.threads = threads;
        }
        if let Some(bits) = self.bits {
            config.codes.bits = bits;
        }
        if let Some(embed) = self.embed {
            config.embed = embed;
        }
        if let Some(threshold) = self.score_threshold {
            config.score_threshold = threshold;
        }
        if let Some(precision) = self.precision {
            config.engine.precision = precision;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgfeat: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The library's log lines on stderr as `imgfeat: warning: …`, warnings by default.
fn init_logging(verbose: u8) {
    use std::io::Write;
    // The dependencies (tract logs each graph rewrite at debug level) stay at warnings.
    let level = match verbose {
        0 => "warn",
        1 => "warn,imgfeat=info",
        _ => "warn,imgfeat=debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(out, "imgfeat: {level}: {}", record.args())
        })
        .init();
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Extract { inputs, output, append, batch_size, settings } => {
            extract(&inputs, &output, append, batch_size.max(1), settings.config()?)
        }
        Command::FitCodes { inputs, output_dir, fit, settings } => {
            let config = settings.config()?;
            let output_dir = output_dir.unwrap_or_else(|| config.model_dir.clone());
            fit_codes::fit_codes(&inputs, &fit, &output_dir, config)
        }
        Command::Show { image, index: Some(table), json, .. } => show_row(&image, &table, json),
        Command::Show { image, index: None, json, settings } => show(&image, json, settings.config()?),
        Command::Search { index, images, code, k, rerank, insets, json, settings } => {
            search(&index, &images, code.as_deref(), &SearchOptions { k, rerank, insets: insets.into(), json }, settings)
        }
        Command::Dedup { features, rule, output } => dedup(&features, &rule.rule(), &output),
        Command::Report { features, output, rule, max_images, max_groups, thumbnail_side } => {
            report(&features, &output, &ReportOptions { rule: rule.rule(), max_images, max_groups, thumbnail_side: thumbnail_side.clamp(16, 4096) })
        }
        Command::Config { settings } => {
            println!("{}", settings.config()?.to_json());
            Ok(())
        }
    }
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} {{per_sec}} ETA {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Reads and processes `files` in batches, handing each batch's results to `consume`.
fn for_each_batch(
    pipeline: &Pipeline,
    files: &[PathBuf],
    batch_size: usize,
    bar: &ProgressBar,
    mut consume: impl FnMut(&[PathBuf], Vec<Result<Record, ImageError>>) -> Result<(), Error>,
) -> Result<(), Error> {
    for batch in files.chunks(batch_size) {
        consume(batch, pipeline.process_files(batch))?;
        bar.inc(batch.len() as u64);
    }
    Ok(())
}

fn extract(inputs: &[PathBuf], output: &Path, append: bool, batch_size: usize, config: Config) -> Result<(), Error> {
    let files = image_files(inputs)?;
    // The models first: the table records the arithmetic they run in as loaded on this CPU, and a
    // resume or append checks it.
    let started = Instant::now();
    let pipeline = Pipeline::new(config)?;
    let loaded = started.elapsed();
    let mut table = ExtractOutput::open(output, Provenance::of(pipeline.config(), pipeline.arithmetic())?, append)?;
    let todo: Vec<PathBuf> = files.iter().filter(|f| !table.is_done(f)).cloned().collect();
    if table.resumed() > 0 {
        eprintln!("resuming an interrupted run: {} rows already committed in {}.parts", table.resumed(), output.display());
    }
    if table.kept() > 0 {
        eprintln!("appending: {} rows kept from {}", table.kept(), output.display());
    }
    let bar = progress_bar(todo.len(), "images");
    let (mut ok, mut detected, mut failures) = (0usize, 0usize, Vec::new());
    let work_started = Instant::now();
    for_each_batch(&pipeline, &todo, batch_size, &bar, |batch, results| {
        let paths: Vec<String> = batch.iter().map(|p| p.display().to_string()).collect();
        for (path, result) in paths.iter().zip(&results) {
            match result {
                Ok(record) => {
                    ok += 1;
                    detected += record.main_object.is_some() as usize;
                }
                Err(e) => failures.push(format!("{path}: {e}")),
            }
        }
        let rows: Vec<_> = paths.iter().map(String::as_str).zip(&results).collect();
        table.commit(&rows)
    })?;
    bar.finish_and_clear();
    let seconds = work_started.elapsed().as_secs_f64();
    let total = table.finish()?;
    for failure in &failures {
        eprintln!("failed: {failure}");
    }
    let skipped = files.len() - todo.len();
    let skipped = match skipped {
        0 => String::new(),
        n => format!(" ({n} already in the table)"),
    };
    println!(
        "{} images: {ok} ok ({detected} with a detected object), {} failed{skipped}; {:.1} images/s on {} threads \
         ({seconds:.1} s, models loaded in {:.1} s) → {} ({total} rows)",
        todo.len(),
        failures.len(),
        todo.len() as f64 / seconds.max(1e-9),
        pipeline.threads(),
        loaded.as_secs_f64(),
        output.display()
    );
    Ok(())
}

fn show(image: &Path, json: bool, config: Config) -> Result<(), Error> {
    let bytes = std::fs::read(image).map_err(|e| Error::io(image, e))?;
    let pipeline = Pipeline::new(config)?;
    let record = match pipeline.process_one(&bytes) {
        Ok(record) => record,
        Err(source) => return Err(Error::Image { path: image.to_path_buf(), source }),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&record).expect("record serialises"));
        return Ok(());
    }
    println!("{}: {}x{}", image.display(), record.width, record.height);
    for d in &record.detections {
        println!(
            "  {:<16} id {:>3}  score {:.3}  box x {:.3}..{:.3} y {:.3}..{:.3}",
            d.class_name, d.class_id, d.score, d.bbox.xmin, d.bbox.xmax, d.bbox.ymin, d.bbox.ymax
        );
    }
    match &record.main_object {
        Some(object) => println!("main object: {} ({:.3})", object.class_name, object.score),
        None => println!("main object: none above the threshold; the whole image is embedded"),
    }
    let c = record.crop;
    println!("crop: x {}..{} y {}..{}", c.left, c.right, c.top, c.bottom);
    let hex = |code: &Option<Vec<u8>>| code.as_ref().map_or("-".into(), |c| c.iter().map(|b| format!("{b:02x}")).collect::<String>());
    println!("code:       {}", hex(&record.code));
    println!("whole_code: {}", hex(&record.whole_code));
    println!("made in:    {}", record.arithmetic);
    Ok(())
}

/// `show --index`: the row a features table holds for `image` (its path as written, or as a `file:` URI
/// as Spark writes it), printed as `show` prints a computed one.
fn show_row(image: &Path, table: &Path, json: bool) -> Result<(), Error> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float32Type, Int32Type};
    let wanted = image.display().to_string();
    let absolute = std::fs::canonicalize(image).map(|p| p.display().to_string()).unwrap_or_default();
    let matches = |path: &str| {
        let local = imgfeat::features::local_path(path);
        local == wanted || local == absolute
    };
    for batch in FeaturesReader::open(table)?.batches() {
        let batch = batch?;
        let column = |name: &str| batch.column_by_name(name).expect("the features schema has every column");
        let Some(r) = (0..batch.num_rows()).find(|&r| matches(column("path").as_string::<i32>().value(r))) else { continue };
        let text = |name: &str| Some(column(name).as_string::<i32>()).filter(|c| c.is_valid(r)).map(|c| c.value(r).to_string());
        let int = |name: &str| Some(column(name).as_primitive::<Int32Type>()).filter(|c| c.is_valid(r)).map(|c| c.value(r));
        let floats = |name: &str| {
            Some(column(name).as_list::<i32>()).filter(|c| c.is_valid(r)).map(|c| c.value(r).as_primitive::<Float32Type>().values().to_vec())
        };
        let hex = |name: &str| {
            Some(column(name).as_fixed_size_binary()).filter(|c| c.is_valid(r)).map(|c| c.value(r).iter().map(|b| format!("{b:02x}")).collect::<String>())
        };
        let fields = |name: &str, names: [&str; 4]| -> Option<serde_json::Value> {
            let parts = column(name).as_struct();
            parts.is_valid(r).then(|| {
                let values = (0..4).map(|i| match parts.column(i).data_type() {
                    arrow::datatypes::DataType::Float32 => serde_json::json!(parts.column(i).as_primitive::<Float32Type>().value(r)),
                    _ => serde_json::json!(parts.column(i).as_primitive::<Int32Type>().value(r)),
                });
                names.into_iter().map(String::from).zip(values).collect::<serde_json::Map<_, _>>().into()
            })
        };
        let score = Some(column("score").as_primitive::<Float32Type>()).filter(|c| c.is_valid(r)).map(|c| c.value(r));
        let mut row = serde_json::json!({
            "path": column("path").as_string::<i32>().value(r),
            "width": int("width"), "height": int("height"),
            "detected": Some(column("detected").as_boolean()).filter(|c| c.is_valid(r)).map(|c| c.value(r)),
            "class_id": int("class_id"), "class_name": text("class_name"), "score": score,
            "box": fields("box", ["xmin", "ymin", "xmax", "ymax"]),
            "crop": fields("crop", ["left", "top", "right", "bottom"]),
            "code": hex("code"), "whole_code": hex("whole_code"), "arithmetic": text("arithmetic"), "error": text("error"),
        });
        if json {
            row["feature"] = serde_json::json!(floats("feature"));
            row["whole_feature"] = serde_json::json!(floats("whole_feature"));
            println!("{}", serde_json::to_string_pretty(&row).expect("a row serialises"));
            return Ok(());
        }
        println!("{} (row of {})", row["path"].as_str().unwrap_or_default(), table.display());
        if let Some(error) = text("error") {
            println!("error: {error}");
            return Ok(());
        }
        println!("size: {}x{}", row["width"], row["height"]);
        match (text("class_name"), score) {
            (Some(name), Some(score)) => println!("main object: {name} ({score:.3}) box {}", row["box"]),
            _ => println!("main object: none above the threshold; the whole image is embedded"),
        }
        println!("crop: {}", row["crop"]);
        println!("code:       {}", hex("code").unwrap_or("-".into()));
        println!("whole_code: {}", hex("whole_code").unwrap_or("-".into()));
        println!("made in:    {}", text("arithmetic").unwrap_or("(not recorded)".into()));
        return Ok(());
    }
    Err(Error::Config(format!("{} has no row for {}", table.display(), image.display())))
}

struct SearchOptions {
    k: usize,
    rerank: usize,
    insets: usize,
    json: bool,
}

fn search(index: &Path, images: &[PathBuf], code: Option<&str>, options: &SearchOptions, settings: Settings) -> Result<(), Error> {
    let path = index;
    let index = Index::from_table(path)?;
    if index.rows.is_empty() {
        return Err(Error::Config(format!("{} has no rows with codes to search", path.display())));
    }
    let print = |name: &str, query: &Query, insets: usize| {
        let hits = index.search(query, options.k, options.rerank);
        if options.json {
            let hits: Vec<serde_json::Value> = hits
                .iter()
                .map(|hit| serde_json::json!({"path": index.rows[hit.row].path, "distance": hit.distance, "cosine": hit.cosine}))
                .collect();
            println!("{}", serde_json::json!({"query": name, "insets": insets, "hits": hits}));
            return;
        }
        if images.len() > 1 {
            println!("query {name} ({insets} insets)");
        }
        println!("{:>4}  {:>7}  {:>7}  path", "rank", "hamming", "cosine");
        for (rank, hit) in hits.iter().enumerate() {
            let cosine = hit.cosine.map_or("-".into(), |c| format!("{c:.4}"));
            println!("{:>4}  {:>7}  {:>7}  {}", rank + 1, hit.distance, cosine, index.rows[hit.row].path);
        }
    };
    if let Some(hex) = code {
        let code = imgfeat::search::parse_hex(hex)?;
        // A code typed in has no projection to check; its length is all there is.
        if code.len() * 8 != index.code_bits() {
            return Err(Error::Config(format!("the code has {} bits, the table's {}", code.len() * 8, index.code_bits())));
        }
        print(hex, &Query { codes: vec![code], ..Query::default() }, 0);
        return Ok(());
    }
    let config = settings.config()?;
    let bits = config.codes.bits;
    let pipeline = Pipeline::new(config)?;
    // Once for all queries: every query's codes come from this pipeline's projection.
    index.check_comparable(bits, pipeline.projection_fingerprint())?;
    let mut failed = 0;
    for image in images {
        let name = image.display().to_string();
        let result = std::fs::read(image)
            .map_err(|e| Error::io(image, e))
            .and_then(|bytes| pipeline.query(&bytes, options.insets).map_err(|source| Error::Image { path: image.clone(), source }))
            .map(|found| {
                let insets = found.insets.len();
                (Query::from(found), insets)
            });
        let (query, insets) = match result {
            Ok(found) => found,
            Err(e) => {
                failed += 1;
                match options.json {
                    true => println!("{}", serde_json::json!({"query": name, "error": e.to_string()})),
                    false => eprintln!("imgfeat: error: {e}"),
                }
                continue;
            }
        };
        print(&name, &query, insets);
    }
    match failed {
        0 => Ok(()),
        n => Err(Error::Config(format!("{n} of {} query images could not be searched", images.len()))),
    }
}

fn dedup(features: &Path, rule: &DuplicateRule, output: &Path) -> Result<(), Error> {
    let index = Index::from_table(features)?;
    let groups = index.duplicate_groups(rule)?;
    let mut csv = String::from("group,path,representative\n");
    for (g, members) in groups.iter().enumerate() {
        // The representative: the group's first path in sorted order, stable across runs.
        let representative = &index.rows[members[0]].path;
        for &m in members {
            csv.push_str(&format!("{g},{},{}\n", csv_field(&index.rows[m].path), csv_field(representative)));
        }
    }
    match output.extension().and_then(|e| e.to_str()) {
        Some("csv") => std::fs::write(output, csv).map_err(|e| Error::io(output, e))?,
        Some("parquet") => imgfeat::output::write_groups(output, &groups, &index.rows)?,
        _ => return Err(Error::Config(format!("--output must end in .csv or .parquet: {}", output.display()))),
    }
    let rows: usize = groups.iter().map(Vec::len).sum();
    eprintln!(
        "{} rows: {} near-duplicate groups ({rows} rows, max distance {}{}) → {}",
        index.rows.len(),
        groups.len(),
        rule.max_distance,
        if rule.verify.is_some() { ", features verified" } else { ", codes only" },
        output.display()
    );
    Ok(())
}

fn report(features: &Path, output: &Path, options: &ReportOptions) -> Result<(), Error> {
    let started = Instant::now();
    let bar = progress_bar(0, "thumbnails");
    let summary = imgfeat::report::write_report(features, output, options, &|total| {
        bar.set_length(total as u64);
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    let missing = match summary.thumbnails_missing {
        0 => String::new(),
        n => format!(", {n} images no longer readable"),
    };
    eprintln!(
        "{} rows ({} failed): {} of {} near-duplicate groups and {} images shown{missing} ({:.1} s) → {}",
        summary.rows,
        summary.failed,
        summary.groups_shown,
        summary.groups,
        summary.images_shown,
        started.elapsed().as_secs_f64(),
        output.display()
    );
    Ok(())
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}
