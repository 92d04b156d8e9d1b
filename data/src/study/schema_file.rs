//! `schema.toml`, the description of a user's study: its emotions, its modalities with their token
//! layout, how a row's ratings become a label distribution, and what to do with missing values.
//! Parsed with `toml` (keeping the position of every value), then checked as a whole so that every
//! mistake is reported with its line and key, not just the first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::problem::{Collector, Problem};
use crate::{Modality, ModalityGroup, ReadError, Schema};

/// The file name of the schema inside a study folder.
pub const SCHEMA_FILE: &str = "schema.toml";

/// The column holding the trial id.
pub const TRIAL_COLUMN: &str = "trial";
/// The column holding the time index within the trial (optional: 0 when absent).
pub const TIME_COLUMN: &str = "time";
/// Optional column: what the subject was exposed to in the row's trial (a clip, a song, a
/// condition). The stimulus-independent protocols hold out whole stimuli.
pub const STIMULUS_COLUMN: &str = "stimulus";

/// The most values one modality may have (a guard against typos such as `tokens = 1000000`,
/// which would otherwise ask for a million columns).
pub const MAX_MODALITY_WIDTH: usize = 100_000;

/// The name of the CSV column holding value `index` (0-based, token-major) of `modality`.
pub fn feature_column(modality: &str, index: usize) -> String {
    format!("{modality}_{index}")
}

/// How the emotion columns of a row become a label distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelRule {
    /// `p_k = r_k / sum_j r_j`; values must be non-negative and not all zero. For probabilities,
    /// or intensities where 0 means "not at all".
    Normalize,
    /// `p_k = (r_k - minimum) / sum_j (r_j - minimum)`; values must be at least `minimum`. For
    /// rating scales whose lowest point means "not at all" (1 on a 1..5 scale). A row at the
    /// minimum on every emotion carries no distribution: it is dropped and reported.
    SubtractMinimum {
        /// The lowest point of the rating scale.
        minimum: f64,
    },
    /// `p_k = exp(r_k / T) / sum_j exp(r_j / T)`: any finite scores (logits, z-scores).
    Softmax {
        /// The temperature T (> 0); larger spreads the distribution.
        temperature: f64,
    },
}

impl LabelRule {
    /// The rule as written in `schema.toml`, with its parameter.
    pub fn describe(&self) -> String {
        match self {
            LabelRule::Normalize => "normalize".into(),
            LabelRule::SubtractMinimum { minimum } => {
                format!("subtract-minimum (minimum {minimum})")
            }
            LabelRule::Softmax { temperature } => format!("softmax (temperature {temperature})"),
        }
    }
}

/// The `[labels]` table: the rule and an optional top of the rating scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    /// How ratings become a distribution.
    pub rule: LabelRule,
    /// Ratings above this are errors (catches typos such as 55 on a 1..5 scale).
    pub maximum: Option<f64>,
}

/// What a row's ratings give under the [`Labels`].
#[derive(Clone, Debug, PartialEq)]
pub enum LabelOutcome {
    /// A distribution over the emotions.
    Distribution(Vec<f32>),
    /// Every rating at the scale minimum (`subtract-minimum`): no distribution; the row is
    /// dropped and reported.
    AllMinimum,
    /// Every value zero (`normalize`): no distribution; an error.
    AllZero,
}

impl Labels {
    /// Why one rating is out of range for the rule, if it is.
    pub fn rating_problem(&self, rating: f64) -> Option<String> {
        match self.rule {
            LabelRule::Normalize if rating < 0.0 => Some(format!(
                "value {rating} is negative; rule `normalize` needs values >= 0"
            )),
            LabelRule::SubtractMinimum { minimum } if rating < minimum => Some(format!(
                "rating {rating} is below the scale minimum {minimum} (labels.minimum)"
            )),
            _ => match self.maximum {
                Some(maximum) if rating > maximum => Some(format!(
                    "rating {rating} is above the scale maximum {maximum} (labels.maximum)"
                )),
                _ => None,
            },
        }
    }

    /// The distribution `ratings` give; ratings are assumed to pass [`Self::rating_problem`].
    pub fn distribution(&self, ratings: &[f64]) -> LabelOutcome {
        match self.rule.distribution(ratings) {
            Some(distribution) => LabelOutcome::Distribution(distribution),
            None => match self.rule {
                LabelRule::SubtractMinimum { .. } => LabelOutcome::AllMinimum,
                _ => LabelOutcome::AllZero,
            },
        }
    }
}

impl LabelRule {
    /// The one rule that turns ratings into a label distribution, for study folders and the
    /// built-in readers alike (Larwood's and WESAD's 1..5 scales are `subtract-minimum` with
    /// minimum 1). `None` when the ratings carry no distribution (all at the minimum, all zero).
    pub fn distribution(&self, ratings: &[f64]) -> Option<Vec<f32>> {
        let weights: Vec<f64> = match *self {
            LabelRule::Normalize => ratings.iter().map(|r| r.max(0.0)).collect(),
            LabelRule::SubtractMinimum { minimum } => {
                ratings.iter().map(|r| (r - minimum).max(0.0)).collect()
            }
            LabelRule::Softmax { temperature } => {
                let top = ratings
                    .iter()
                    .map(|r| r / temperature)
                    .fold(f64::NEG_INFINITY, f64::max);
                ratings
                    .iter()
                    .map(|r| (r / temperature - top).exp())
                    .collect()
            }
        };
        let total: f64 = weights.iter().sum();
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        Some(weights.iter().map(|w| (w / total) as f32).collect())
    }
}

/// What to do with a missing (empty, `NA`, `NaN`) or non-finite (`inf`) feature or rating value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingPolicy {
    /// Every such value is an error (the default).
    Error,
    /// The row is dropped and reported.
    DropRow,
}

impl MissingPolicy {
    /// The policy as written in `schema.toml`.
    pub fn name(self) -> &'static str {
        match self {
            MissingPolicy::Error => "error",
            MissingPolicy::DropRow => "drop-row",
        }
    }
}

/// A parsed and checked `schema.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct StudySchema {
    /// The dataset name (`name`, or the folder's name when absent).
    pub name: String,
    /// Emotions and modalities.
    pub schema: Schema,
    /// How ratings become distributions.
    pub labels: Labels,
    /// What to do with missing values.
    pub missing: MissingPolicy,
    /// CSV columns to skip without complaint (`ignore_columns`).
    pub ignore_columns: Vec<String>,
}

/// What a CSV column of a study file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnRole {
    /// The trial id.
    Trial,
    /// The time index.
    Time,
    /// The stimulus id (optional column).
    Stimulus,
    /// Value `index` of modality `modality` (schema order).
    Feature {
        /// Index into `schema.modalities`.
        modality: usize,
        /// Index into the modality's feature vector.
        index: usize,
    },
    /// The rating of emotion `emotion` (schema order).
    Emotion(usize),
    /// Listed in `ignore_columns`.
    Ignored,
}

impl StudySchema {
    /// Every column name the schema knows, with its role.
    pub fn columns(&self) -> BTreeMap<String, ColumnRole> {
        let mut columns = BTreeMap::new();
        columns.insert(TRIAL_COLUMN.to_string(), ColumnRole::Trial);
        columns.insert(TIME_COLUMN.to_string(), ColumnRole::Time);
        columns.insert(STIMULUS_COLUMN.to_string(), ColumnRole::Stimulus);
        for (m, modality) in self.schema.modalities.iter().enumerate() {
            for index in 0..modality.width() {
                columns.insert(
                    feature_column(&modality.name, index),
                    ColumnRole::Feature { modality: m, index },
                );
            }
        }
        for (e, emotion) in self.schema.emotions.iter().enumerate() {
            columns.insert(emotion.clone(), ColumnRole::Emotion(e));
        }
        for ignored in &self.ignore_columns {
            columns.insert(ignored.clone(), ColumnRole::Ignored);
        }
        columns
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    name: Option<Spanned<String>>,
    emotions: Spanned<Vec<Spanned<String>>>,
    #[serde(default, rename = "modality")]
    modalities: Vec<RawModality>,
    labels: Option<Spanned<RawLabels>>,
    missing: Option<RawMissing>,
    #[serde(default)]
    ignore_columns: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModality {
    name: Spanned<String>,
    group: Spanned<String>,
    tokens: Spanned<i64>,
    token_width: Spanned<i64>,
    width: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabels {
    rule: Spanned<String>,
    minimum: Option<Spanned<f64>>,
    maximum: Option<Spanned<f64>>,
    temperature: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMissing {
    policy: Spanned<String>,
}

/// Reads and checks `dir/schema.toml`; the error names the line and key of the first problem.
pub fn read_schema_file(dir: &Path) -> Result<StudySchema, ReadError> {
    let mut sink = Collector::new(true);
    match load(dir, &mut sink) {
        Some(schema) => Ok(schema),
        None => Err(sink.first_error.unwrap_or_else(|| {
            ReadError::field(dir.join(SCHEMA_FILE), "schema", "unusable schema")
        })),
    }
}

/// Reads and checks `dir/schema.toml`, reporting every problem to `sink`; `None` if any is an
/// error.
pub(super) fn load(dir: &Path, sink: &mut Collector) -> Option<StudySchema> {
    let path = dir.join(SCHEMA_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => {
            sink.io_error(&path, source);
            return None;
        }
    };
    let default_name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "study".into());
    parse(&text, &path, &default_name, sink)
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Why `name` cannot be a CSV column name, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.trim() != name {
        Some("starts or ends with a space")
    } else if name.contains([',', '"', '\n', '\r']) {
        Some("contains a comma, quote or line break")
    } else {
        None
    }
}

/// Parses and checks the text of a `schema.toml`.
pub(super) fn parse(
    text: &str,
    path: &Path,
    default_name: &str,
    sink: &mut Collector,
) -> Option<StudySchema> {
    let raw: RawSchema = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            sink.push(Problem::error(
                path,
                line,
                None,
                format!("not a valid schema: {}", e.message().trim()),
            ));
            return None;
        }
    };
    let before = sink.problems.len();
    let at = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
    let mut error = |line: Option<usize>, key: &str, message: String| {
        sink.push(Problem::error(path, line, Some(key), message));
    };

    // Emotions.
    let emotions_span = raw.emotions.span();
    let emotions: Vec<Spanned<String>> = raw.emotions.into_inner();
    if emotions.len() < 2 {
        error(
            at(emotions_span),
            "emotions",
            format!(
                "{} emotion(s); a label distribution needs at least 2",
                emotions.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, emotion) in emotions.iter().enumerate() {
        let key = format!("emotions[{i}]");
        if let Some(why) = name_problem(emotion.get_ref()) {
            error(
                at(emotion.span()),
                &key,
                format!("emotion name `{}` {why}", emotion.get_ref()),
            );
        } else if !seen.insert(emotion.get_ref().clone()) {
            error(
                at(emotion.span()),
                &key,
                format!("emotion `{}` is listed twice", emotion.get_ref()),
            );
        } else if [TRIAL_COLUMN, TIME_COLUMN].contains(&emotion.get_ref().as_str()) {
            error(
                at(emotion.span()),
                &key,
                format!(
                    "`{}` is a reserved column name and cannot be an emotion",
                    emotion.get_ref()
                ),
            );
        }
    }

    // Modalities.
    if raw.modalities.is_empty() {
        error(
            None,
            "modality",
            "no [[modality]] table: describe at least one modality (name, group, tokens, \
             token_width)"
                .into(),
        );
    }
    let mut modalities = Vec::new();
    let mut modality_names = BTreeSet::new();
    for (i, m) in raw.modalities.iter().enumerate() {
        let key = |k: &str| format!("modality[{i}].{k}");
        let name = m.name.get_ref();
        if let Some(why) = name_problem(name) {
            error(
                at(m.name.span()),
                &key("name"),
                format!("modality name `{name}` {why}"),
            );
        } else if !modality_names.insert(name.clone()) {
            error(
                at(m.name.span()),
                &key("name"),
                format!("modality `{name}` is listed twice"),
            );
        }
        let group = match m.group.get_ref().parse::<ModalityGroup>() {
            Ok(group) => Some(group),
            Err(_) => {
                error(
                    at(m.group.span()),
                    &key("group"),
                    format!(
                        "group `{}` is neither `physiological` nor `behavioral`",
                        m.group.get_ref()
                    ),
                );
                None
            }
        };
        let mut positive = |value: &Spanned<i64>, k: &str| match usize::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                error(
                    at(value.span()),
                    &key(k),
                    format!("{k} = {} must be a whole number >= 1", value.get_ref()),
                );
                None
            }
        };
        let tokens = positive(&m.tokens, "tokens");
        let token_width = positive(&m.token_width, "token_width");
        let (Some(tokens), Some(token_width)) = (tokens, token_width) else {
            continue;
        };
        let width = match tokens.checked_mul(token_width) {
            Some(width) if width <= MAX_MODALITY_WIDTH => width,
            _ => {
                error(
                    at(m.tokens.span()),
                    &key("tokens"),
                    format!(
                        "tokens x token_width = {tokens} x {token_width} is more than the \
                         {MAX_MODALITY_WIDTH} values a modality may have"
                    ),
                );
                continue;
            }
        };
        if let Some(stated) = &m.width
            && i64::try_from(width).ok() != Some(*stated.get_ref())
        {
            error(
                at(stated.span()),
                &key("width"),
                format!(
                    "width = {} but tokens x token_width = {tokens} x {token_width} = {width}",
                    stated.get_ref(),
                ),
            );
        }
        if let Some(group) = group {
            modalities.push(Modality::new(name, group, tokens, token_width));
        }
    }

    // Labels.
    let labels = match &raw.labels {
        None => {
            error(
                None,
                "labels",
                "no [labels] table: say how ratings become a distribution, e.g. \
                 `[labels]` with `rule = \"subtract-minimum\"` and `minimum = 1`"
                    .into(),
            );
            None
        }
        Some(table) => {
            let l = table.get_ref();
            let rule = match l.rule.get_ref().as_str() {
                "normalize" | "normalise" => Some(LabelRule::Normalize),
                "subtract-minimum" => match &l.minimum {
                    Some(minimum) if minimum.get_ref().is_finite() => {
                        Some(LabelRule::SubtractMinimum {
                            minimum: *minimum.get_ref(),
                        })
                    }
                    Some(minimum) => {
                        error(
                            at(minimum.span()),
                            "labels.minimum",
                            "minimum must be a finite number".into(),
                        );
                        None
                    }
                    None => {
                        error(
                            at(l.rule.span()),
                            "labels.minimum",
                            "rule `subtract-minimum` needs `minimum` (the lowest point of the \
                             rating scale, e.g. `minimum = 1`)"
                                .into(),
                        );
                        None
                    }
                },
                "softmax" => {
                    let temperature = l.temperature.as_ref().map(|t| (*t.get_ref(), t.span()));
                    match temperature {
                        None => Some(LabelRule::Softmax { temperature: 1.0 }),
                        Some((t, _)) if t.is_finite() && t > 0.0 => {
                            Some(LabelRule::Softmax { temperature: t })
                        }
                        Some((t, span)) => {
                            error(
                                at(span),
                                "labels.temperature",
                                format!("temperature {t} must be a finite number > 0"),
                            );
                            None
                        }
                    }
                }
                other => {
                    error(
                        at(l.rule.span()),
                        "labels.rule",
                        format!(
                            "unknown rule `{other}`; expected `normalize`, `subtract-minimum` \
                             or `softmax`"
                        ),
                    );
                    None
                }
            };
            if let Some(minimum) = &l.minimum
                && l.rule.get_ref() != "subtract-minimum"
            {
                error(
                    at(minimum.span()),
                    "labels.minimum",
                    format!(
                        "`minimum` is only used by rule `subtract-minimum`, not `{}`",
                        l.rule.get_ref()
                    ),
                );
            }
            if let Some(temperature) = &l.temperature
                && l.rule.get_ref() != "softmax"
            {
                error(
                    at(temperature.span()),
                    "labels.temperature",
                    format!(
                        "`temperature` is only used by rule `softmax`, not `{}`",
                        l.rule.get_ref()
                    ),
                );
            }
            let maximum = match &l.maximum {
                Some(maximum) if !maximum.get_ref().is_finite() => {
                    error(
                        at(maximum.span()),
                        "labels.maximum",
                        "maximum must be a finite number".into(),
                    );
                    None
                }
                Some(maximum) => {
                    if let (Some(LabelRule::SubtractMinimum { minimum }), m) =
                        (&rule, *maximum.get_ref())
                        && m <= *minimum
                    {
                        error(
                            at(maximum.span()),
                            "labels.maximum",
                            format!("maximum {m} is not above minimum {minimum}"),
                        );
                    }
                    Some(*maximum.get_ref())
                }
                None => None,
            };
            rule.map(|rule| Labels { rule, maximum })
        }
    };

    // Missing values.
    let missing = match &raw.missing {
        None => Some(MissingPolicy::Error),
        Some(m) => match m.policy.get_ref().as_str() {
            "error" => Some(MissingPolicy::Error),
            "drop-row" => Some(MissingPolicy::DropRow),
            other => {
                error(
                    at(m.policy.span()),
                    "missing.policy",
                    format!("unknown policy `{other}`; expected `error` or `drop-row`"),
                );
                None
            }
        },
    };

    // Column names must be unambiguous.
    let mut features = BTreeSet::new();
    for m in &modalities {
        for index in 0..m.width() {
            features.insert(feature_column(&m.name, index));
        }
    }
    for (i, emotion) in emotions.iter().enumerate() {
        if features.contains(emotion.get_ref()) {
            error(
                at(emotion.span()),
                &format!("emotions[{i}]"),
                format!(
                    "emotion `{}` has the name of a feature column",
                    emotion.get_ref()
                ),
            );
        }
    }
    for (i, ignored) in raw.ignore_columns.iter().enumerate() {
        let name = ignored.get_ref();
        if [TRIAL_COLUMN, TIME_COLUMN].contains(&name.as_str())
            || features.contains(name)
            || seen.contains(name)
        {
            error(
                at(ignored.span()),
                &format!("ignore_columns[{i}]"),
                format!("`{name}` is a column the schema uses; it cannot be ignored"),
            );
        }
    }

    let name = match &raw.name {
        Some(name) if name.get_ref().trim().is_empty() => {
            error(at(name.span()), "name", "name is empty".into());
            String::new()
        }
        Some(name) => name.get_ref().clone(),
        None => default_name.to_string(),
    };
    if sink.problems[before..].iter().any(Problem::is_error) {
        return None;
    }
    let schema = Schema {
        emotions: emotions.into_iter().map(Spanned::into_inner).collect(),
        modalities,
    };
    if let Err(e) = schema.validate() {
        // Every case is caught above with a line number; this is a backstop.
        sink.push(Problem::error(path, None, None, e.to_string()));
        return None;
    }
    Some(StudySchema {
        name,
        schema,
        labels: labels?,
        missing: missing?,
        ignore_columns: raw
            .ignore_columns
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
emotions = ["happy", "sad", "calm"]

[[modality]]
name = "eeg"
group = "physiological"
tokens = 2
token_width = 3

[[modality]]
name = "face"
group = "behavioral"
tokens = 4
token_width = 2
width = 8

[labels]
rule = "subtract-minimum"
minimum = 1
maximum = 5

[missing]
policy = "drop-row"
"#;

    fn parse_all(text: &str) -> (Option<StudySchema>, Vec<Problem>) {
        let mut sink = Collector::new(false);
        let schema = parse(text, Path::new("s/schema.toml"), "dir", &mut sink);
        (schema, sink.problems)
    }

    #[test]
    fn a_good_schema_parses() {
        let (schema, problems) = parse_all(GOOD);
        assert!(problems.is_empty(), "{problems:?}");
        let schema = schema.expect("schema");
        assert_eq!(schema.name, "demo");
        assert_eq!(schema.schema.emotions, ["happy", "sad", "calm"]);
        assert_eq!(schema.schema.modalities[1].width(), 8);
        assert_eq!(
            schema.labels,
            Labels {
                rule: LabelRule::SubtractMinimum { minimum: 1.0 },
                maximum: Some(5.0)
            }
        );
        assert_eq!(schema.missing, MissingPolicy::DropRow);
        assert_eq!(
            schema.columns().get("face_7"),
            Some(&ColumnRole::Feature {
                modality: 1,
                index: 7
            })
        );
    }

    #[test]
    fn every_schema_mistake_is_named_with_line_and_key() {
        let text = GOOD
            .replace("\"sad\", \"calm\"", "\"sad\", \"happy\"")
            .replace("group = \"behavioral\"", "group = \"facial\"")
            .replace("width = 8", "width = 7")
            .replace("tokens = 2\n", "tokens = 0\n")
            .replace("policy = \"drop-row\"", "policy = \"skip\"");
        let (schema, problems) = parse_all(&text);
        assert!(schema.is_none());
        let keys: Vec<(Option<usize>, Option<&str>)> = problems
            .iter()
            .map(|p| (p.row, p.column.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                (Some(3), Some("emotions[2]")),
                (Some(8), Some("modality[0].tokens")),
                (Some(13), Some("modality[1].group")),
                (Some(16), Some("modality[1].width")),
                (Some(24), Some("missing.policy")),
            ],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("listed twice"));
    }

    #[test]
    fn syntax_errors_and_unknown_keys_have_a_line() {
        let (_, problems) = parse_all(&GOOD.replace("token_width = 3", "tokn_width = 3"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("tokn_width"), "{problems:?}");
        assert!(problems[0].row.is_some());
        let (_, problems) = parse_all("emotions = [\"a\",");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].row, Some(1));
    }

    #[test]
    fn absurd_widths_are_refused_without_overflow() {
        let text = GOOD.replace("tokens = 2\n", "tokens = 9223372036854775807\n");
        let (schema, problems) = parse_all(&text);
        assert!(schema.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].column.as_deref(), Some("modality[0].tokens"));
        assert!(problems[0].message.contains("more than the 100000 values"));
    }

    #[test]
    fn rule_parameters_are_checked() {
        let text = GOOD.replace("minimum = 1\n", "");
        let (_, problems) = parse_all(&text);
        assert_eq!(problems[0].column.as_deref(), Some("labels.minimum"));
        let text = GOOD.replace("rule = \"subtract-minimum\"", "rule = \"softmax\"");
        let (_, problems) = parse_all(&text);
        assert!(
            problems[0]
                .message
                .contains("only used by rule `subtract-minimum`")
        );
        let text = GOOD
            .replace(
                "rule = \"subtract-minimum\"\nminimum = 1",
                "rule = \"softmax\"",
            )
            .replace("maximum = 5", "temperature = 0.5");
        let (schema, problems) = parse_all(&text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            schema.expect("schema").labels.rule,
            LabelRule::Softmax { temperature: 0.5 }
        );
    }

    #[test]
    fn rules_give_distributions() {
        let labels = |rule| Labels {
            rule,
            maximum: None,
        };
        let d = labels(LabelRule::Normalize).distribution(&[1.0, 3.0]);
        assert_eq!(d, LabelOutcome::Distribution(vec![0.25, 0.75]));
        let d = labels(LabelRule::Normalize).distribution(&[0.0, 0.0]);
        assert_eq!(d, LabelOutcome::AllZero);
        let rule = LabelRule::SubtractMinimum { minimum: 1.0 };
        assert_eq!(
            labels(rule.clone()).distribution(&[1.0, 3.0]),
            LabelOutcome::Distribution(vec![0.0, 1.0])
        );
        assert_eq!(
            labels(rule).distribution(&[1.0, 1.0]),
            LabelOutcome::AllMinimum
        );
        let LabelOutcome::Distribution(p) =
            labels(LabelRule::Softmax { temperature: 1.0 }).distribution(&[0.0, 2f64.ln()])
        else {
            panic!("softmax gives a distribution")
        };
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
        let capped = Labels {
            rule: LabelRule::SubtractMinimum { minimum: 1.0 },
            maximum: Some(5.0),
        };
        assert!(capped.rating_problem(0.0).expect("below").contains("below"));
        assert!(capped.rating_problem(6.0).expect("above").contains("above"));
        assert_eq!(capped.rating_problem(5.0), None);
    }
}
