//! `mpcl completions SHELL` and `mpcl man`: shell completions (clap_complete) and man pages
//! (clap_mangen), both generated from the same command definition as `--help`, so they cannot
//! disagree with it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Print a shell completion script.
///
/// bash: `mpcl completions bash > ~/.local/share/bash-completion/completions/mpcl`;
/// zsh: `mpcl completions zsh > ~/.zfunc/_mpcl` (with `fpath+=~/.zfunc` before `compinit`);
/// fish: `mpcl completions fish > ~/.config/fish/completions/mpcl.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mpcl", &mut script);
    script
}

/// The man page of `mpcl` itself (roff).
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    Ok(page)
}

impl CompletionsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        use std::io::Write;
        std::io::stdout()
            .write_all(&completions(self.shell))
            .context("cannot write the completions")
    }
}

/// Print the man page of mpcl (roff), or write one page per subcommand to a folder.
///
/// `mpcl man | man -l -` shows it; `mpcl man --out DIR` writes DIR/mpcl.1 and
/// DIR/mpcl-SUBCOMMAND.1 (install them under a man1 folder of your MANPATH).
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write mpcl.1 and one page per subcommand into this folder instead of printing mpcl.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl ManArgs {
    pub fn run(self) -> anyhow::Result<()> {
        match self.out {
            None => {
                use std::io::Write;
                std::io::stdout()
                    .write_all(&man_page()?)
                    .context("cannot write the man page")
            }
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                clap_mangen::generate_to(Cli::command(), &dir)
                    .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
                println!("man pages written to {}", dir.display());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBCOMMANDS: [&str; 6] = [
        "simulate",
        "train",
        "coordinator",
        "client",
        "status",
        "init",
    ];

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for name in SUBCOMMANDS {
                assert!(script.contains(name), "{shell}: no `{name}`");
            }
            assert!(script.contains("log-format"), "{shell}");
        }
    }

    #[test]
    fn the_man_pages_describe_the_commands() -> anyhow::Result<()> {
        let page = String::from_utf8(man_page()?)?;
        assert!(page.contains(".TH mpcl 1"), "{page}");
        for name in SUBCOMMANDS {
            assert!(page.contains(name), "no `{name}` in the man page");
        }
        let dir = tempfile::tempdir()?;
        ManArgs {
            out: Some(dir.path().to_path_buf()),
        }
        .run()?;
        let simulate = std::fs::read_to_string(dir.path().join("mpcl-simulate.1"))?;
        assert!(simulate.contains("\\-\\-force"), "{simulate}");
        Ok(())
    }
}
