//! Reader for WESAD (Schmidt et al., ICMI 2018) from the files its users download: one folder
//! `SX/` per subject with `SX_quest.csv` and `SX_E4_Data.zip`. The wrist (Empatica E4) signals are
//! cut into 5 s windows with a 1 s hop inside each study condition and summarised by
//! [`features::window_statistics`](super::features::window_statistics).
//!
//! **`SX_quest.csv`** (semicolon-separated; layout as in the WESAD readme and checked against
//! public parsers of the real files):
//!
//! ```text
//! # Subj;S2;;;
//! # ORDER;Base;TSST;Medi 1;Fun;Medi 2;sRead;fRead;;
//! # START;7.08;39.55;70.19;81.25;93.38;54.42;89.51;;
//! # END;26.32;50.3;77.1;87.47;100.15;56.07;91.15;;
//! # PANAS;1;2;...      (one row per questionnaire, in ORDER order)
//! # STAI;... # DIM;... # SSSQ;...   (ignored)
//! ```
//!
//! - START/END are `minutes.seconds`: `7.08` is 7 min 8 s, and `50.3` is 50 min 30 s (a trailing
//!   zero lost by a spreadsheet). They are taken as seconds after the start of the E4 recording,
//!   that is the earliest start time among the four E4 files. (The WESAD authors measured them on
//!   the chest device's clock and synchronised the two devices by hand; where the two clocks
//!   differ, shift the START/END rows before reading.)
//! - The `i`-th `# PANAS` row belongs to the `i`-th condition of ORDER; conditions after the last
//!   PANAS row (the reading tasks `sRead`, `fRead`) have no self-report and are skipped with a
//!   reason in the [`LoadReport`].
//! - A PANAS row has 24 items (1..5, 1 = not at all): Active, Distressed, Interested, Inspired,
//!   Annoyed, Strong, Guilty, Scared, Hostile, Excited, Proud, Irritable, Enthusiastic, Ashamed,
//!   Alert, Nervous, Determined, Attentive, Jittery, Afraid, Stressed, Frustrated, Happy, Sad. The
//!   row after the stress condition has 26: Angry and Irritated come between Happy and Sad. They
//!   were asked only once, so they are dropped and the label ranges over the 24 common items.
//! - Label: `p_k = (r_k - 1) / sum (r - 1)`, as for Larwood, so that "not at all" carries no mass;
//!   a condition rated 1 on every item, or with an unanswered item (an empty or `NaN` cell), is
//!   skipped and reported; a score outside 1..5 is an error.
//!
//! **`SX_E4_Data.zip`**: `EDA.csv` (4 Hz), `BVP.csv` (64 Hz), `TEMP.csv` (4 Hz) and `ACC.csv`
//! (32 Hz, three columns, raw units of 1/64 g). In each, the first row is the start time (unix
//! seconds), the second the sample rate, then one sample per row; the rates in the files are used.
//!
//! Samples: trial = the condition's index in ORDER, time = the window index within the condition.
//! Modalities: `eda`, `bvp`, `temp` (physiological, 1 token of the 20 statistics each) and `acc`
//! (behavioral, 4 tokens of 20: x, y, z and the magnitude). A window must lie wholly inside the
//! recording of every signal; windows that do not are left out and counted in a report note.
//! The chest RespiBAN file (`SX_respiban.txt`), if present, is not read; a note says so.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::features::{STAT_HOP_SECONDS, STAT_WINDOW_SECONDS, STATISTICS_WIDTH, Spectra};
use super::larwood::ONE_TO_FIVE_SCALE;
use super::{Dataset, LoadReport, Modality, ModalityGroup, ReadError, Sample, Schema};

/// The 24 PANAS items asked after every condition, in file (and schema) order.
pub const EMOTIONS: [&str; 24] = [
    "active",
    "distressed",
    "interested",
    "inspired",
    "annoyed",
    "strong",
    "guilty",
    "scared",
    "hostile",
    "excited",
    "proud",
    "irritable",
    "enthusiastic",
    "ashamed",
    "alert",
    "nervous",
    "determined",
    "attentive",
    "jittery",
    "afraid",
    "stressed",
    "frustrated",
    "happy",
    "sad",
];

/// Positions of the two stress-only items (Angry, Irritated) in a 26-item PANAS row.
const STRESS_ONLY_ITEMS: [usize; 2] = [23, 24];

/// The E4 members read, with the number of columns each holds.
const E4_MEMBERS: [(&str, usize); 4] = [
    ("EDA.csv", 1),
    ("BVP.csv", 1),
    ("TEMP.csv", 1),
    ("ACC.csv", 3),
];

/// The schema of WESAD as read here.
pub fn schema() -> Schema {
    Schema {
        emotions: EMOTIONS.iter().map(|e| e.to_string()).collect(),
        modalities: vec![
            Modality::new("eda", ModalityGroup::Physiological, 1, STATISTICS_WIDTH),
            Modality::new("bvp", ModalityGroup::Physiological, 1, STATISTICS_WIDTH),
            Modality::new("temp", ModalityGroup::Physiological, 1, STATISTICS_WIDTH),
            Modality::new("acc", ModalityGroup::Behavioral, 4, STATISTICS_WIDTH),
        ],
    }
}

/// One study condition from the questionnaire file.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// Name as in the ORDER row (`Base`, `TSST`, `Medi 1`, ...).
    pub name: String,
    /// Start, in seconds after the start of the recording.
    pub start_s: f64,
    /// End, in seconds after the start of the recording.
    pub end_s: f64,
    /// The 24 common PANAS item scores, if the condition has a questionnaire; an unanswered item
    /// (an empty or `NaN` cell) is NaN here.
    pub panas: Option<Vec<f64>>,
}

/// Parses `SX_quest.csv`.
pub fn read_quest(path: &Path) -> Result<Vec<Condition>, ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| super::larwood::csv_error(path, e, None))?;
    let mut order: Option<Vec<String>> = None;
    let mut start: Option<(usize, Vec<String>)> = None;
    let mut end: Option<(usize, Vec<String>)> = None;
    let mut panas: Vec<(usize, Vec<String>)> = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| super::larwood::csv_error(path, e, None))?;
        let row = index + 1;
        let Some(tag) = record.get(0) else { continue };
        let values: Vec<String> = record
            .iter()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>();
        // Trailing empty cells are padding from the spreadsheet export.
        let trimmed = |mut v: Vec<String>| {
            while v.last().is_some_and(|s| s.is_empty()) {
                v.pop();
            }
            v
        };
        match tag {
            "# ORDER" => order = Some(trimmed(values)),
            "# START" => start = Some((row, trimmed(values))),
            "# END" => end = Some((row, trimmed(values))),
            "# PANAS" => panas.push((row, trimmed(values))),
            _ => {}
        }
    }
    let order = order.ok_or_else(|| ReadError::field(path, "# ORDER", "row is missing"))?;
    if order.is_empty() {
        return Err(ReadError::field(path, "# ORDER", "names no condition"));
    }
    let (start_row, start) =
        start.ok_or_else(|| ReadError::field(path, "# START", "row is missing"))?;
    let (end_row, end) = end.ok_or_else(|| ReadError::field(path, "# END", "row is missing"))?;
    if panas.len() > order.len() {
        return Err(ReadError::field(
            path,
            "# PANAS",
            format!(
                "{} questionnaire rows for {} conditions in ORDER",
                panas.len(),
                order.len()
            ),
        ));
    }
    let mut conditions = Vec::with_capacity(order.len());
    for (i, name) in order.iter().enumerate() {
        let column = format!("{name} (condition {})", i + 1);
        let time = |row: usize, cells: &[String]| -> Result<f64, ReadError> {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            minutes_seconds(cell).ok_or_else(|| {
                ReadError::value(
                    path,
                    row,
                    column.clone(),
                    format!("`{cell}` is not a time in minutes.seconds"),
                )
            })
        };
        let start_s = time(start_row, &start)?;
        let end_s = time(end_row, &end)?;
        if end_s <= start_s {
            return Err(ReadError::value(
                path,
                end_row,
                column,
                format!("ends at {end_s} s, not after its start at {start_s} s"),
            ));
        }
        let panas = match panas.get(i) {
            Some((row, cells)) => Some(panas_scores(path, *row, cells)?),
            None => None,
        };
        conditions.push(Condition {
            name: name.clone(),
            start_s,
            end_s,
            panas,
        });
    }
    Ok(conditions)
}

/// `7.08` -> 428 s; `50.3` -> 3030 s (seconds written with their trailing zero dropped).
fn minutes_seconds(text: &str) -> Option<f64> {
    let (minutes, seconds) = text.split_once('.').unwrap_or((text, "0"));
    let minutes: u32 = minutes.parse().ok()?;
    let seconds: u32 = match seconds.len() {
        1 => seconds.parse::<u32>().ok()? * 10,
        2 => seconds.parse().ok()?,
        _ => return None,
    };
    if seconds >= 60 {
        return None;
    }
    Some(f64::from(minutes * 60 + seconds))
}

fn panas_scores(path: &Path, row: usize, cells: &[String]) -> Result<Vec<f64>, ReadError> {
    let keep: Vec<usize> = match cells.len() {
        24 => (0..24).collect(),
        26 => (0..26).filter(|i| !STRESS_ONLY_ITEMS.contains(i)).collect(),
        n => {
            return Err(ReadError::value(
                path,
                row,
                "# PANAS",
                format!("{n} items, expected 24 (or 26 after the stress condition)"),
            ));
        }
    };
    keep.iter()
        .zip(EMOTIONS)
        .map(|(&i, item)| {
            let cell = &cells[i];
            if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
                return Ok(f64::NAN);
            }
            match cell.parse::<f64>() {
                Ok(v) if (1.0..=5.0).contains(&v) => Ok(v),
                _ => Err(ReadError::value(
                    path,
                    row,
                    format!("# PANAS {item}"),
                    format!("`{cell}` is not a score in 1..5"),
                )),
            }
        })
        .collect()
}

/// One E4 signal channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Unix time of the first sample, in seconds.
    pub start: f64,
    /// Samples per second.
    pub rate: f64,
    /// The samples.
    pub samples: Vec<f32>,
}

/// The wrist signals of one subject.
#[derive(Clone, Debug, PartialEq)]
pub struct E4 {
    /// Electrodermal activity (microsiemens).
    pub eda: Signal,
    /// Blood volume pulse.
    pub bvp: Signal,
    /// Skin temperature (degrees Celsius).
    pub temp: Signal,
    /// Acceleration x, y, z (1/64 g).
    pub acc: [Signal; 3],
}

/// Reads the four E4 members of `SX_E4_Data.zip`.
pub fn read_e4_zip(path: &Path) -> Result<E4, ReadError> {
    let file = std::fs::File::open(path).map_err(|e| ReadError::io(path, e))?;
    let mut archive =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| ReadError::Format {
            path: path.to_path_buf(),
            format: "zip",
            reason: e.to_string(),
        })?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|n| n.into_owned())
        .collect();
    let mut channels: Vec<Vec<Signal>> = Vec::with_capacity(E4_MEMBERS.len());
    for (member, columns) in E4_MEMBERS {
        // Some exports put the files in a folder inside the zip: match on the file name.
        let name = names
            .iter()
            .find(|n| n.rsplit('/').next() == Some(member))
            .cloned()
            .ok_or_else(|| ReadError::field(path, member, "missing from the zip"))?;
        let mut text = String::new();
        archive
            .by_name(&name)
            .map_err(|e| ReadError::field(path, member, e.to_string()))?
            .read_to_string(&mut text)
            .map_err(|e| ReadError::field(path, member, format!("cannot be unpacked: {e}")))?;
        channels.push(parse_e4_csv(&path.join(member), &text, columns)?);
    }
    let mut channels = channels.into_iter();
    let mut next = || channels.next().unwrap_or_default();
    let eda = next().pop();
    let bvp = next().pop();
    let temp = next().pop();
    let acc: Option<[Signal; 3]> = next().try_into().ok();
    match (eda, bvp, temp, acc) {
        (Some(eda), Some(bvp), Some(temp), Some(acc)) => Ok(E4 {
            eda,
            bvp,
            temp,
            acc,
        }),
        _ => Err(ReadError::Format {
            path: path.to_path_buf(),
            format: "zip",
            reason: "E4 members did not yield the expected channels".into(),
        }),
    }
}

/// Parses one E4 CSV (`columns` channels): start times, rates, then samples.
fn parse_e4_csv(path: &Path, text: &str, columns: usize) -> Result<Vec<Signal>, ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut starts: Vec<f64> = Vec::new();
    let mut rates: Vec<f64> = Vec::new();
    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); columns];
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| super::larwood::csv_error(path, e, None))?;
        let row = index + 1;
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() < columns {
            return Err(ReadError::value(
                path,
                row,
                "*",
                format!("{} values, expected {columns}", record.len()),
            ));
        }
        let mut values = Vec::with_capacity(columns);
        for c in 0..columns {
            let cell = record.get(c).unwrap_or("");
            match cell.parse::<f64>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ => {
                    return Err(ReadError::value(
                        path,
                        row,
                        (c + 1).to_string(),
                        format!("`{cell}` is not a finite number"),
                    ));
                }
            }
        }
        match row {
            1 => starts = values,
            2 => {
                if let Some(bad) = values.iter().find(|r| **r <= 0.0) {
                    return Err(ReadError::value(
                        path,
                        row,
                        "1",
                        format!("sample rate {bad} is not positive"),
                    ));
                }
                rates = values;
            }
            _ => {
                for (channel, v) in samples.iter_mut().zip(values) {
                    channel.push(v as f32);
                }
            }
        }
    }
    if rates.is_empty() {
        return Err(ReadError::value(
            path,
            2,
            "1",
            "the start-time and sample-rate rows are missing",
        ));
    }
    Ok(samples
        .into_iter()
        .zip(starts.into_iter().zip(rates))
        .map(|(samples, (start, rate))| Signal {
            start,
            rate,
            samples,
        })
        .collect())
}

/// Reads every subject folder `SX/` of `dir` (sorted by the number in its name).
pub fn read_wesad_dir(dir: &Path) -> Result<(Dataset, LoadReport), ReadError> {
    let mut report = LoadReport::new(dir.display().to_string());
    let mut subjects: Vec<(u64, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ReadError::io(dir, e))? {
        let path = entry.map_err(|e| ReadError::io(dir, e))?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let number = name.strip_prefix('S').and_then(|n| n.parse::<u64>().ok());
        match number {
            Some(number) if path.is_dir() => subjects.push((number, name, path)),
            _ => {}
        }
    }
    if subjects.is_empty() {
        return Err(ReadError::NoData {
            path: dir.to_path_buf(),
            reason: "no subject folders named SX".into(),
        });
    }
    subjects.sort();
    let mut samples = Vec::new();
    for (_, name, folder) in &subjects {
        samples.extend(read_subject(folder, name, &mut report)?);
    }
    let dataset = Dataset {
        name: "wesad".into(),
        schema: schema(),
        samples,
    };
    if dataset.samples.is_empty() {
        return Err(ReadError::NoData {
            path: dir.to_path_buf(),
            reason: "no condition produced a whole window with a self-report".into(),
        });
    }
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: dir.to_path_buf(),
        source,
    })?;
    tracing::info!(
        path = %dir.display(),
        subjects = subjects.len(),
        samples = dataset.samples.len(),
        "read WESAD"
    );
    Ok((dataset, report))
}

/// The samples of one subject folder.
fn read_subject(
    folder: &Path,
    subject: &str,
    report: &mut LoadReport,
) -> Result<Vec<Sample>, ReadError> {
    let quest_path = folder.join(format!("{subject}_quest.csv"));
    let zip_path = folder.join(format!("{subject}_E4_Data.zip"));
    let conditions = read_quest(&quest_path)?;
    let e4 = read_e4_zip(&zip_path)?;
    if folder.join(format!("{subject}_respiban.txt")).is_file() {
        report.note(format!(
            "subject {subject}: the chest RespiBAN recording is not read; only the wrist E4 signals are used"
        ));
    }
    let magnitude: Vec<f32> = e4.acc[0]
        .samples
        .iter()
        .zip(&e4.acc[1].samples)
        .zip(&e4.acc[2].samples)
        .map(|((x, y), z)| (x * x + y * y + z * z).sqrt())
        .collect();
    let acc_magnitude = Signal {
        start: e4.acc[0].start,
        rate: e4.acc[0].rate,
        samples: magnitude,
    };
    // Every channel summarised per window, in feature order: eda, bvp, temp, then the acc tokens
    // x, y, z, magnitude. The member name is for error messages.
    let channels: [(&str, &Signal); 7] = [
        ("EDA.csv", &e4.eda),
        ("BVP.csv", &e4.bvp),
        ("TEMP.csv", &e4.temp),
        ("ACC.csv", &e4.acc[0]),
        ("ACC.csv", &e4.acc[1]),
        ("ACC.csv", &e4.acc[2]),
        ("ACC.csv", &acc_magnitude),
    ];
    // Condition times count from the start of the E4 recording (the earliest file start).
    let origin = channels
        .iter()
        .map(|(_, s)| s.start)
        .fold(f64::INFINITY, f64::min);
    let mut spectra = Spectra::new();
    let mut samples = Vec::new();
    for (index, condition) in conditions.iter().enumerate() {
        let trial = index as u32;
        let Some(panas) = &condition.panas else {
            report.skip(
                subject,
                Some(trial),
                format!("condition `{}` has no PANAS self-report", condition.name),
            );
            continue;
        };
        if let Some(k) = panas.iter().position(|v| v.is_nan()) {
            report.skip(
                subject,
                Some(trial),
                format!(
                    "condition `{}`: PANAS item `{}` was not answered",
                    condition.name, EMOTIONS[k]
                ),
            );
            continue;
        }
        let Some(label) = ONE_TO_FIVE_SCALE.distribution(panas) else {
            report.skip(
                subject,
                Some(trial),
                format!(
                    "condition `{}`: every PANAS item rated 1 (not at all): no label distribution",
                    condition.name
                ),
            );
            continue;
        };
        let span = condition.end_s - condition.start_s;
        let count = if span >= STAT_WINDOW_SECONDS {
            ((span - STAT_WINDOW_SECONDS) / STAT_HOP_SECONDS).floor() as usize + 1
        } else {
            0
        };
        let mut outside = 0usize;
        let mut time = 0u32;
        for w in 0..count {
            let from = origin + condition.start_s + w as f64 * STAT_HOP_SECONDS;
            let windows: Option<Vec<&[f32]>> = channels
                .iter()
                .map(|(_, signal)| window_of(signal, from))
                .collect();
            let Some(windows) = windows else {
                outside += 1;
                continue;
            };
            let mut stats = Vec::with_capacity(windows.len());
            for (window, (member, signal)) in windows.iter().zip(&channels) {
                stats.push(
                    spectra
                        .window_statistics(window, signal.rate)
                        .map_err(|e| {
                            ReadError::field(
                                zip_path.clone(),
                                *member,
                                format!("condition `{}`, window {w}: {e}", condition.name),
                            )
                        })?,
                );
            }
            let mut stats = stats.into_iter();
            let mut take = || stats.next().unwrap_or_default();
            let (eda, bvp, temp) = (take(), take(), take());
            let acc: Vec<f32> = (0..4).flat_map(|_| take()).collect();
            samples.push(Sample {
                features: vec![eda, bvp, temp, acc],
                label: label.clone(),
                subject: subject.to_string(),
                trial,
                time,
                stimulus: Some(condition.name.clone()),
            });
            time += 1;
        }
        if outside > 0 {
            report.note(format!(
                "subject {subject}, condition `{}`: {outside} of {count} windows fall outside the E4 recording and were left out",
                condition.name
            ));
        }
        if time == 0 {
            report.skip(
                subject,
                Some(trial),
                format!(
                    "condition `{}` has no whole {STAT_WINDOW_SECONDS} s window inside the recording",
                    condition.name
                ),
            );
        }
    }
    Ok(samples)
}

/// The samples of `signal` in the statistics window starting at unix time `from`, if the whole
/// window was recorded.
fn window_of(signal: &Signal, from: f64) -> Option<&[f32]> {
    let first = ((from - signal.start) * signal.rate).round();
    let len = (STAT_WINDOW_SECONDS * signal.rate).round() as usize;
    if first.is_nan() || first < 0.0 {
        return None;
    }
    let first = first as usize;
    signal.samples.get(first..first.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_dot_seconds() {
        assert_eq!(minutes_seconds("7.08"), Some(428.0));
        assert_eq!(minutes_seconds("50.3"), Some(3030.0));
        assert_eq!(minutes_seconds("12"), Some(720.0));
        assert_eq!(minutes_seconds("3.75"), None);
        assert_eq!(minutes_seconds(""), None);
        assert_eq!(minutes_seconds("a.10"), None);
    }

    fn write_quest(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("S1_quest.csv");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    const PANAS24: &str = "1;2;3;4;5;1;1;1;1;1;1;1;1;1;1;1;1;1;1;1;1;1;1;2";

    #[test]
    fn quest_rows_map_to_conditions() {
        let text = format!(
            "# Subj;S1;;\n# ORDER;Base;TSST;sRead;;\n# START;0.10;1.0;2.5;;\n# END;0.40;1.3;3.05;;\n;;;;\n# PANAS;{PANAS24};;\n# PANAS;{};;\n# STAI;1;2;3;;\n",
            PANAS24.replacen(";1;2", ";1;4;4;2", 1)
        );
        let (_dir, path) = write_quest(&text);
        let conditions = read_quest(&path).expect("quest");
        assert_eq!(conditions.len(), 3);
        assert_eq!((conditions[0].start_s, conditions[0].end_s), (10.0, 40.0));
        assert_eq!((conditions[1].start_s, conditions[1].end_s), (60.0, 90.0));
        assert_eq!(conditions[2].panas, None);
        let tsst = conditions[1].panas.as_ref().expect("panas");
        // Angry and Irritated (the two 4s) are dropped; Sad (2) is kept last.
        assert_eq!(tsst.len(), 24);
        assert_eq!(tsst[22..], [1.0, 2.0]);
    }

    #[test]
    fn bad_quest_files_name_row_and_field() {
        let (_d, path) = write_quest("# ORDER;Base;;\n# START;0.10;;\n");
        let text = read_quest(&path).unwrap_err().to_string();
        assert!(
            text.contains("S1_quest.csv") && text.contains("# END"),
            "{text}"
        );
        let (_d, path) = write_quest("# ORDER;Base;;\n# START;0.10;;\n# END;0.9x;;\n");
        let text = read_quest(&path).unwrap_err().to_string();
        assert!(text.contains("row 3") && text.contains("Base"), "{text}");
        let (_d, path) = write_quest(&format!(
            "# ORDER;Base;;\n# START;0.10;;\n# END;0.20;;\n# PANAS;{};;\n",
            PANAS24.replacen("5", "7", 1)
        ));
        let text = read_quest(&path).unwrap_err().to_string();
        assert!(text.contains("row 4") && text.contains("annoyed"), "{text}");
        let (_d, path) =
            write_quest("# ORDER;Base;;\n# START;0.10;;\n# END;0.20;;\n# PANAS;1;2;3;;\n");
        let text = read_quest(&path).unwrap_err().to_string();
        assert!(text.contains("3 items"), "{text}");
    }

    #[test]
    fn e4_csv_rows_are_start_rate_then_samples() {
        let path = Path::new("S1_E4_Data.zip/ACC.csv");
        let signals = parse_e4_csv(
            path,
            "100.0, 100.0, 100.0\n32.0, 32.0, 32.0\n1,2,3\n4,5,6\n",
            3,
        )
        .expect("parse");
        assert_eq!(signals.len(), 3);
        assert_eq!(signals[1].samples, vec![2.0, 5.0]);
        assert_eq!((signals[2].start, signals[2].rate), (100.0, 32.0));
        let text = parse_e4_csv(path, "100\n4\n1\nx\n", 1)
            .unwrap_err()
            .to_string();
        assert!(text.contains("ACC.csv") && text.contains("row 4"), "{text}");
        let text = parse_e4_csv(path, "100\n0\n1\n", 1)
            .unwrap_err()
            .to_string();
        assert!(text.contains("rate"), "{text}");
    }
}
