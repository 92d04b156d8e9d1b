//! The one pass over a study folder that both [`read_study_dir`](super::read_study_dir) and
//! [`validate_study_dir`](super::validate_study_dir) run: read `schema.toml`, match every CSV
//! header against it, parse every cell, turn every row's ratings into a label distribution, and
//! report each problem at its file, row and column. The reader stops at the first error; the
//! validator collects them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::problem::{Collector, Problem};
use super::schema_file::{
    self, ColumnRole, LabelOutcome, LabelRule, MissingPolicy, SCHEMA_FILE, StudySchema,
    TIME_COLUMN, TRIAL_COLUMN, feature_column,
};
use crate::{LoadReport, ReadError, Sample, label_problem};

/// What one subject file held.
#[derive(Clone, Debug)]
pub(super) struct FileStats {
    /// The CSV file.
    pub path: PathBuf,
    /// The subject id (the file stem).
    pub subject: String,
    /// Data rows (the header not counted).
    pub rows: usize,
    /// Rows that became samples.
    pub samples: usize,
    /// Rows dropped (missing values under `drop-row`, all-minimum ratings).
    pub dropped: usize,
    /// Trial ids of the rows not dropped (rows with errors included: they count once fixed).
    pub trials: BTreeSet<u32>,
}

/// Everything the pass found besides the problems.
pub(super) struct Scan {
    /// The schema, if `schema.toml` is usable.
    pub schema: Option<StudySchema>,
    /// The samples of every row without problems, file by file (files in name order).
    pub samples: Vec<Sample>,
    /// Dropped rows and other remarks.
    pub report: LoadReport,
    /// One entry per subject CSV file, in name order.
    pub files: Vec<FileStats>,
}

/// Scans the study folder `dir`, reporting problems to `sink`.
pub(super) fn scan(dir: &Path, sink: &mut Collector) -> Scan {
    let mut out = Scan {
        schema: None,
        samples: Vec::new(),
        report: LoadReport::new(dir.display().to_string()),
        files: Vec::new(),
    };
    sink.begin_file();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            sink.io_error(dir, source);
            return out;
        }
    };
    let mut csv_files: Vec<PathBuf> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                sink.io_error(dir, source);
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv && path.is_file() {
            csv_files.push(path);
        } else if name != SCHEMA_FILE && !name.starts_with('.') {
            ignored.push(name);
        }
    }
    csv_files.sort();
    ignored.sort();
    if !ignored.is_empty() {
        out.report.note(format!(
            "ignored what is not a subject CSV file: {}",
            ignored.join(", ")
        ));
    }

    let schema_path = dir.join(SCHEMA_FILE);
    if schema_path.is_file() {
        out.schema = schema_file::load(dir, sink);
    } else {
        sink.io_error(
            &schema_path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a study folder needs a schema.toml describing emotions, modalities and labels \
                 (see docs/dataset-format.md)",
            ),
        );
    }

    if csv_files.is_empty() {
        let reason = "no subject CSV files (`<subject>.csv`) in the folder";
        sink.push_with(
            Problem::error(dir, None, None, reason),
            ReadError::NoData {
                path: dir.to_path_buf(),
                reason: reason.into(),
            },
        );
    }
    let mut stems: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in &csv_files {
        let subject = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = stems.get(&subject) {
            sink.push(Problem::error(
                path,
                None,
                None,
                format!(
                    "subject `{subject}` already has a file, {}",
                    first.display()
                ),
            ));
            continue;
        }
        stems.insert(subject.clone(), path.clone());
        out.files.push(FileStats {
            path: path.clone(),
            subject,
            rows: 0,
            samples: 0,
            dropped: 0,
            trials: BTreeSet::new(),
        });
    }
    sink.end_file(dir);

    let Some(study) = out.schema.clone() else {
        return out;
    };
    let columns = study.columns();
    for index in 0..out.files.len() {
        if sink.stopped() {
            break;
        }
        sink.begin_file();
        let mut stats = out.files[index].clone();
        scan_file(&study, &columns, &mut stats, sink, &mut out);
        sink.end_file(&stats.path);
        out.files[index] = stats;
    }
    out
}

/// Where each schema column sits in one file's header.
struct Layout {
    trial: Option<usize>,
    time: Option<usize>,
    stimulus: Option<usize>,
    /// Per modality, per value: the header position.
    features: Vec<Vec<Option<usize>>>,
    /// Per emotion: the header position.
    emotions: Vec<Option<usize>>,
}

impl Layout {
    /// Whether every column needed to build a sample is present.
    fn complete(&self) -> bool {
        self.trial.is_some()
            && self.features.iter().flatten().all(Option::is_some)
            && self.emotions.iter().all(Option::is_some)
    }
}

/// Matches a header against the schema, reporting missing, unknown and repeated columns.
fn layout(
    study: &StudySchema,
    columns: &BTreeMap<String, ColumnRole>,
    headers: &csv::StringRecord,
    path: &Path,
    sink: &mut Collector,
) -> Layout {
    let schema = &study.schema;
    let mut layout = Layout {
        trial: None,
        time: None,
        stimulus: None,
        features: schema
            .modalities
            .iter()
            .map(|m| vec![None; m.width()])
            .collect(),
        emotions: vec![None; schema.emotions.len()],
    };
    let header_problem = |sink: &mut Collector, column: &str, message: String| {
        sink.push(Problem::error(path, Some(1), Some(column), message));
    };
    if headers.len() == 1 && (headers[0].contains(';') || headers[0].contains('\t')) {
        header_problem(
            sink,
            &headers[0],
            "the header is a single column; study files are comma-separated (this one looks \
             separated by semicolons or tabs)"
                .into(),
        );
        return layout;
    }
    // Feature columns beyond a modality's width, per modality.
    let mut beyond: Vec<Vec<String>> = vec![Vec::new(); schema.modalities.len()];
    let mut first_position: HashMap<&str, usize> = HashMap::new();
    for (position, name) in headers.iter().enumerate() {
        if let Some(first) = first_position.insert(name, position) {
            header_problem(
                sink,
                name,
                format!(
                    "column `{name}` appears twice in the header (columns {} and {})",
                    first + 1,
                    position + 1
                ),
            );
            continue;
        }
        match columns.get(name) {
            Some(ColumnRole::Trial) => layout.trial = Some(position),
            Some(ColumnRole::Time) => layout.time = Some(position),
            Some(ColumnRole::Stimulus) => layout.stimulus = Some(position),
            Some(ColumnRole::Feature { modality, index }) => {
                layout.features[*modality][*index] = Some(position)
            }
            Some(ColumnRole::Emotion(e)) => layout.emotions[*e] = Some(position),
            Some(ColumnRole::Ignored) => {}
            None => {
                // `<modality>_<n>` that is not a known column: past the width, or spelt
                // differently (`face_07`).
                let feature = name.rsplit_once('_').and_then(|(m, i)| {
                    let m = schema.modalities.iter().position(|x| x.name == m)?;
                    i.parse::<usize>().ok().map(|n| (m, n))
                });
                let respelt = match feature {
                    Some((m, n)) if n >= schema.modalities[m].width() => {
                        beyond[m].push(name.to_string());
                        continue;
                    }
                    Some((m, n)) => Some(feature_column(&schema.modalities[m].name, n)),
                    None => None,
                };
                let similar = respelt.as_ref().or_else(|| {
                    columns
                        .keys()
                        .find(|known| known.eq_ignore_ascii_case(name.trim()))
                });
                let message = match similar {
                    Some(known) => format!(
                        "unknown column `{name}`; did you mean `{known}`? (names must match \
                         exactly)"
                    ),
                    None if name.is_empty() => format!(
                        "column {} has an empty name; name it, or remove it",
                        position + 1
                    ),
                    None => format!(
                        "unknown column `{name}`: not `trial`, `time`, a feature column \
                         `<modality>_<index>` or an emotion of schema.toml; list it in \
                         `ignore_columns` of schema.toml to skip it"
                    ),
                };
                header_problem(sink, name, message);
            }
        }
    }
    if layout.trial.is_none() {
        header_problem(
            sink,
            TRIAL_COLUMN,
            "the header has no `trial` column (the trial id of each row)".into(),
        );
    }
    for (m, modality) in schema.modalities.iter().enumerate() {
        let missing: Vec<String> = layout.features[m]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| feature_column(&modality.name, i))
            .collect();
        let extra = &beyond[m];
        if missing.is_empty() && extra.is_empty() {
            continue;
        }
        let width = modality.width();
        let found = width - missing.len() + extra.len();
        let mut message = format!(
            "schema.toml says modality `{}` has {} tokens x {} = {width} values (columns {}..{}), \
             the header has {found} feature column(s) for it",
            modality.name,
            modality.token_count,
            modality.token_width,
            feature_column(&modality.name, 0),
            feature_column(&modality.name, width - 1),
        );
        if !missing.is_empty() {
            message.push_str(&format!("; missing: {}", list(&missing)));
        }
        if !extra.is_empty() {
            message.push_str(&format!("; beyond the width: {}", list(extra)));
        }
        if missing.first() == Some(&feature_column(&modality.name, 0))
            && extra.contains(&feature_column(&modality.name, width))
        {
            message.push_str(" (feature columns are numbered from 0)");
        }
        let column = missing
            .first()
            .or(extra.first())
            .cloned()
            .unwrap_or_default();
        header_problem(sink, &column, message);
    }
    for (e, emotion) in schema.emotions.iter().enumerate() {
        if layout.emotions[e].is_none() {
            header_problem(
                sink,
                emotion,
                format!(
                    "emotion `{emotion}` of schema.toml has no column in the header (emotion \
                     columns are named exactly as in `emotions`)"
                ),
            );
        }
    }
    layout
}

/// At most the first few names, then a count.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// What a cell holds.
enum Cell<T> {
    Number(T),
    /// Empty, `NA`, `N/A` or `NaN`.
    Missing,
    /// `inf`, or too large for the type.
    NonFinite,
    /// Text that is not a number.
    Text,
}

fn cell<T: std::str::FromStr + Into<f64> + Copy>(text: &str) -> Cell<T> {
    let text = text.trim();
    if text.is_empty()
        || ["na", "n/a", "nan"]
            .iter()
            .any(|m| text.eq_ignore_ascii_case(m))
    {
        return Cell::Missing;
    }
    match text.parse::<T>() {
        Ok(v) if v.into().is_finite() => Cell::Number(v),
        Ok(_) => Cell::NonFinite,
        Err(_) => Cell::Text,
    }
}

/// A trial or time id: a whole number.
fn id(text: &str, column: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the {column} id is missing"));
    }
    text.parse::<u32>()
        .map_err(|_| format!("`{text}` is not a {column} id (a whole number 0..=4294967295)"))
}

/// The state of one row while its cells are read.
struct RowCheck<'a> {
    path: &'a Path,
    row: usize,
    policy: MissingPolicy,
    errors: usize,
    /// The first missing cell under `drop-row`: column and what it held.
    drop: Option<(String, &'static str)>,
}

impl RowCheck<'_> {
    fn error(&mut self, sink: &mut Collector, column: &str, message: String) {
        self.errors += 1;
        sink.push(Problem::error(
            self.path,
            Some(self.row),
            Some(column),
            message,
        ));
    }

    /// Reads one feature or rating cell; `None` when it holds no usable number.
    fn number<T: std::str::FromStr + Into<f64> + Copy>(
        &mut self,
        sink: &mut Collector,
        text: &str,
        column: &str,
    ) -> Option<T> {
        let what = match cell::<T>(text) {
            Cell::Number(v) => return Some(v),
            Cell::Text => {
                self.error(sink, column, format!("`{}` is not a number", text.trim()));
                return None;
            }
            Cell::Missing => "missing",
            Cell::NonFinite => "not finite",
        };
        match self.policy {
            MissingPolicy::Error => self.error(
                sink,
                column,
                format!(
                    "value {} ({}); set `policy = \"drop-row\"` under [missing] in \
                     schema.toml to drop such rows instead",
                    what,
                    if text.trim().is_empty() {
                        "empty cell".to_string()
                    } else {
                        format!("`{}`", text.trim())
                    }
                ),
            ),
            MissingPolicy::DropRow => {
                if self.drop.is_none() {
                    self.drop = Some((column.to_string(), what));
                }
            }
        }
        None
    }
}

/// Reads one subject file into `out`, reporting problems to `sink`.
fn scan_file(
    study: &StudySchema,
    columns: &BTreeMap<String, ColumnRole>,
    stats: &mut FileStats,
    sink: &mut Collector,
    out: &mut Scan,
) {
    let path = stats.path.clone();
    let path = path.as_path();
    let mut reader = match csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
    {
        Ok(reader) => reader,
        Err(e) => {
            csv_problem(path, e, sink);
            return;
        }
    };
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            csv_problem(path, e, sink);
            return;
        }
    };
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        sink.push(Problem::error(
            path,
            Some(1),
            None,
            "the file is empty: it needs a header row and one row per sample",
        ));
        return;
    }
    let layout = layout(study, columns, &headers, path, sink);
    let complete = layout.complete();
    let schema = &study.schema;
    let labels = &study.labels;
    let subject = stats.subject.clone();
    // Where each (trial, time) was first seen.
    let mut seen: HashMap<(u32, u32), usize> = HashMap::new();
    for record in reader.records() {
        if sink.stopped() {
            return;
        }
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                stats.rows += 1;
                let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                csv_problem(path, e, sink);
                if fatal {
                    return;
                }
                continue;
            }
        };
        stats.rows += 1;
        let row = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or_default();
        if record.len() != headers.len() {
            sink.push(Problem::error(
                path,
                Some(row),
                None,
                format!(
                    "the row has {} fields, the header has {}",
                    record.len(),
                    headers.len()
                ),
            ));
            continue;
        }
        let mut check = RowCheck {
            path,
            row,
            policy: study.missing,
            errors: 0,
            drop: None,
        };
        let trial = layout
            .trial
            .and_then(|i| match id(&record[i], TRIAL_COLUMN) {
                Ok(v) => Some(v),
                Err(message) => {
                    check.error(sink, TRIAL_COLUMN, message);
                    None
                }
            });
        let time = match layout.time {
            None => Some(0),
            Some(i) => match id(&record[i], TIME_COLUMN) {
                Ok(v) => Some(v),
                Err(message) => {
                    check.error(sink, TIME_COLUMN, message);
                    None
                }
            },
        };
        if let (Some(trial), Some(time)) = (trial, time)
            && let Some(first) = seen.insert((trial, time), row)
        {
            seen.insert((trial, time), first);
            let (column, message) = match layout.time {
                Some(_) => (
                    TIME_COLUMN,
                    format!("trial {trial}, time {time} already appears at row {first}"),
                ),
                None => (
                    TRIAL_COLUMN,
                    format!(
                        "trial {trial} already appears at row {first}; add a `time` column \
                         when a trial has several rows"
                    ),
                ),
            };
            check.error(sink, column, message);
        }

        let mut features: Vec<Vec<f32>> = schema
            .modalities
            .iter()
            .map(|m| vec![0.0; m.width()])
            .collect();
        for (m, positions) in layout.features.iter().enumerate() {
            for (index, position) in positions.iter().enumerate() {
                let Some(position) = position else { continue };
                if let Some(v) = check.number::<f32>(sink, &record[*position], &headers[*position])
                {
                    features[m][index] = v;
                }
            }
        }
        let mut ratings = vec![0.0f64; schema.emotions.len()];
        for (e, position) in layout.emotions.iter().enumerate() {
            let Some(position) = position else { continue };
            let column = &headers[*position];
            if let Some(v) = check.number::<f64>(sink, &record[*position], column) {
                match labels.rating_problem(v) {
                    Some(message) => check.error(sink, column, message),
                    None => ratings[e] = v,
                }
            }
        }

        let Some(trial) = trial else { continue };
        if let Some((column, what)) = check.drop.take() {
            let reason = format!("row {row}: value in column `{column}` is {what}");
            sink.push(Problem::warning(
                path,
                Some(row),
                Some(&column),
                format!("value {what}: row dropped (missing policy `drop-row`)"),
            ));
            out.report.skip(&subject, Some(trial), reason);
            stats.dropped += 1;
            continue;
        }
        if check.errors > 0 || !complete {
            stats.trials.insert(trial);
            continue;
        }
        let label = match labels.distribution(&ratings) {
            LabelOutcome::Distribution(label) => label,
            LabelOutcome::AllMinimum => {
                let minimum = match labels.rule {
                    LabelRule::SubtractMinimum { minimum } => minimum,
                    _ => 0.0,
                };
                sink.push(Problem::warning(
                    path,
                    Some(row),
                    None,
                    format!(
                        "every emotion rated at the scale minimum {minimum}: no label \
                         distribution; row dropped"
                    ),
                ));
                out.report.skip(
                    &subject,
                    Some(trial),
                    format!(
                        "row {row}: every emotion rated at the scale minimum {minimum}, so the \
                         row has no label distribution"
                    ),
                );
                stats.dropped += 1;
                continue;
            }
            LabelOutcome::AllZero => {
                stats.trials.insert(trial);
                sink.push(Problem::error(
                    path,
                    Some(row),
                    None,
                    "every emotion value is 0: rule `normalize` cannot make a distribution \
                     from it (remove the row, or rate at least one emotion above 0)",
                ));
                continue;
            }
        };
        stats.trials.insert(trial);
        if let Some(reason) = label_problem(&label, schema.emotion_count()) {
            sink.push(Problem::error(
                path,
                Some(row),
                None,
                format!("the ratings do not give a label distribution: {reason}"),
            ));
            continue;
        }
        let Some(time) = time else { continue };
        stats.samples += 1;
        out.samples.push(Sample {
            features,
            label,
            subject: subject.clone(),
            trial,
            time,
            stimulus: layout
                .stimulus
                .map(|i| record[i].trim().to_string())
                .filter(|s| !s.is_empty()),
        });
    }
    if stats.samples == 0 && !sink.stopped() {
        let reason = if stats.rows == 0 {
            "the file has a header but no data rows"
        } else if stats.dropped == stats.rows {
            "every row was dropped"
        } else {
            "no row without errors"
        };
        if stats.rows == 0 || stats.dropped == stats.rows {
            sink.push(Problem::warning(
                path,
                None,
                None,
                format!("subject `{subject}` has no samples: {reason}"),
            ));
            out.report.skip(&subject, None, reason);
        }
    }
}

/// Reports a `csv` error at its row.
fn csv_problem(path: &Path, error: csv::Error, sink: &mut Collector) {
    let row = error.position().map(|p| p.line() as usize);
    match error.into_kind() {
        csv::ErrorKind::Io(source) => sink.io_error(path, source),
        csv::ErrorKind::Utf8 { pos, err } => sink.push(Problem::error(
            path,
            pos.map(|p| p.line() as usize).or(row),
            None,
            format!(
                "field {} is not valid UTF-8 (save the file as UTF-8)",
                err.field() + 1
            ),
        )),
        other => sink.push(Problem::error(
            path,
            row,
            None,
            format!("not a readable CSV file: {other:?}"),
        )),
    }
}
