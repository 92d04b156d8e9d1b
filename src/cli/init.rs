//! `mpcl init DIR`: the files a new study starts from, as `flwr new` gives a Flower project: a
//! run file listing every key with its default and meaning, an enrolment file skeleton and the
//! commands that make the keys.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

/// The commented run-file template (every key of `mpcl coordinator --config`, at its default).
pub const RUN_TEMPLATE: &str = include_str!("templates/run.toml");

/// File name of the run file `init` writes.
const RUN_FILE: &str = "run.toml";
/// File name of the enrolment file `init` writes.
const ENROLMENT_FILE: &str = "enrolment.toml";

/// Start a study: write DIR/run.toml (every run-file key with its default and meaning) and
/// DIR/enrolment.toml (a skeleton), and print the commands that make the keys and start the run.
///
/// Refuses to overwrite either file.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The study's folder (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// The enrolment skeleton, with the keygen commands that fill it.
fn enrolment_template() -> String {
    "# Enrolment file of `mpcl coordinator --enrol enrolment.toml`: who may connect.
#
# Each participant runs `mpcl keygen --out keys --id NAME` on their own machine and sends the
# [[participant]] lines it prints; paste them here. Only these keys complete the TLS handshake.
#
# [[participant]]
# id = \"p01\"
# public_key = \"<64 hex digits from public_key.hex>\"
#
# An operator key may only ask `mpcl status` where the run stands: it never trains and its
# updates are never accepted. Make one with `mpcl keygen --out keys/operator --id operator
# --operator` and paste the [[operator]] lines it prints.
#
# [[operator]]
# id = \"operator\"
# public_key = \"<64 hex digits>\"
"
    .to_string()
}

/// What to do next, printed after the files are written.
fn next_steps(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "Next steps:
  1. the coordinator's key (participants pin its public key):
       mpcl keygen --out {d}/keys/coordinator --id coordinator
  2. each participant, on their own machine, then paste the printed lines into {d}/{ENROLMENT_FILE}:
       mpcl keygen --out keys --id p01
  3. an operator key for `mpcl status` (optional; paste its [[operator]] lines too):
       mpcl keygen --out {d}/keys/operator --id operator --operator
  4. edit {d}/{RUN_FILE} (schema, rounds, clients_per_round ...), then start:
       mpcl coordinator --config {d}/{RUN_FILE} --enrol {d}/{ENROLMENT_FILE} --key {d}/keys/coordinator --listen 0.0.0.0:4433 --out {d}/run
  5. each participant:
       mpcl client --coordinator HOST:4433 --coordinator-key coordinator_public_key.hex --key keys --data study:DIR
  6. watch it:
       mpcl status --watch --coordinator HOST:4433 --coordinator-key {d}/keys/coordinator/public_key.hex --key {d}/keys/operator"
    )
}

impl InitArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let files = [
            (self.dir.join(RUN_FILE), RUN_TEMPLATE.to_string()),
            (self.dir.join(ENROLMENT_FILE), enrolment_template()),
        ];
        for (path, _) in &files {
            if path.exists() {
                bail!(
                    "{} already exists; `mpcl init` never overwrites (choose another folder or \
                     move the file away)",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        for (path, text) in &files {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        println!();
        println!("{}", next_steps(&self.dir));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mpcl_coordinator::server::RunFile;

    use super::*;

    fn keys_of(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(table) = value {
            for (key, value) in table {
                let path = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(_) if key != "rule" => {
                        out.push(format!("[{path}]"));
                        keys_of(value, &format!("{path}."), out);
                    }
                    _ => out.push(path),
                }
            }
        }
    }

    /// The template cannot drift from the code: it parses into exactly the defaults of an empty
    /// run file, and it names every key the defaults serialise to.
    #[test]
    fn the_template_is_the_defaults() -> anyhow::Result<()> {
        let template = RunFile::parse(RUN_TEMPLATE, Path::new("run.toml"))?;
        let empty = RunFile::parse("", Path::new("empty.toml"))?;
        assert_eq!(template.coordinator, empty.coordinator);
        assert_eq!(template.schema, empty.schema);
        assert_eq!(template.network, empty.network);
        assert_eq!(template.model, empty.model);

        let mut keys = Vec::new();
        keys_of(&toml::Value::try_from(&empty.coordinator)?, "", &mut keys);
        keys_of(
            &toml::Value::try_from(&empty.network)?,
            "network.",
            &mut keys,
        );
        keys_of(&toml::Value::try_from(&empty.model)?, "model.", &mut keys);
        // Unset by default, so absent from the serialised defaults: listed commented out.
        for unset in [
            "clients_per_round",
            "fraction",
            "min_available_clients",
            "limits.max_update_norm",
            "privacy.clip_norm",
            "privacy.epsilon_budget",
        ] {
            keys.push(unset.to_string());
        }
        let mut section = String::new();
        let mut listed = Vec::new();
        for line in RUN_TEMPLATE.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = format!("{name}.");
                listed.push(format!("[{name}]"));
                continue;
            }
            let setting = line.strip_prefix("# ").unwrap_or(line);
            if let Some((key, _)) = setting.split_once(" = ")
                && !key.contains(' ')
            {
                listed.push(format!("{section}{key}"));
            }
        }
        let missing: Vec<&String> = keys.iter().filter(|k| !listed.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "keys missing from the template: {missing:?}"
        );
        Ok(())
    }

    #[test]
    fn init_writes_the_files_and_never_overwrites() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let study = dir.path().join("study");
        InitArgs { dir: study.clone() }.run()?;
        let run = std::fs::read_to_string(study.join(RUN_FILE))?;
        assert_eq!(run, RUN_TEMPLATE);
        let enrolment = std::fs::read_to_string(study.join(ENROLMENT_FILE))?;
        assert!(enrolment.contains("[[participant]]") && enrolment.contains("mpcl keygen"));
        std::fs::write(study.join(RUN_FILE), "rounds = 3\n")?;
        let error = InitArgs { dir: study.clone() }
            .run()
            .unwrap_err()
            .to_string();
        assert!(error.contains("already exists"), "{error}");
        assert_eq!(
            std::fs::read_to_string(study.join(RUN_FILE))?,
            "rounds = 3\n"
        );
        Ok(())
    }
}
