//! `cargo xtask`: builds the `gyre` binary in release and runs it (`train`, `eval`, `bench`), and
//! fetches datasets (`data`), builds the CUDA binary (`cuda-build`). Flags after the command pass through to `gyre` unchanged.

mod cuda;
mod data;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "gyre repository tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build gyre (release) and train; without flags, the default recipe on the embedded data.
    /// Every flag, `--help` included, goes to `gyre train`.
    #[command(disable_help_flag = true)]
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build gyre (release) and evaluate a run (flags, `--help` included, go to `gyre eval`).
    #[command(disable_help_flag = true)]
    Eval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build gyre (release) and run the step and data benchmarks (JSON lines; flags, `--help`
    /// included, go to `gyre bench`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch a dataset into data/: `fashion-mnist`, `opencv-video`, `dense-gt`, `wordnet`, `minilm`.
    Data { name: String },
    /// Build `gyre` for NVIDIA GPUs (CUDA 13.0 from PyPI; no GPU or CUDA toolkit needed here).
    CudaBuild(cuda::CudaBuild),
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Where `cargo build` in `root` puts its output: `CARGO_TARGET_DIR` (relative to `root`) when
/// set, as cargo reads it, else `root/target`.
fn target_dir(root: &Path) -> PathBuf {
    target_dir_from(root, std::env::var_os("CARGO_TARGET_DIR"))
}

fn target_dir_from(root: &Path, var: Option<std::ffi::OsString>) -> PathBuf {
    match var {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

fn run_gyre(cmd: &str, args: &[String]) -> Result<()> {
    let root = root();
    let status = Command::new(cargo())
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "gyre-cli",
            "--bin",
            "gyre",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let bin = target_dir(&root).join("release/gyre");
    if cmd != "train" {
        let status = Command::new(&bin)
            .current_dir(&root)
            .arg(cmd)
            .args(args)
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
    // Training: pass stdout through, then draw the run's charts (`gyre plot`) from the summary's
    // run folder.
    let mut child = Command::new(&bin)
        .current_dir(&root)
        .arg(cmd)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut last = String::new();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            last = line;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    if let Some(run_dir) = json_string_field(&last, "run_dir") {
        let plot = Command::new(&bin)
            .current_dir(&root)
            .args(["plot", &run_dir])
            .stdout(std::process::Stdio::null())
            .status()?;
        if plot.success() {
            eprintln!("xtask: charts in {run_dir}/plots (loss.png, knn.png, pca.png)");
        }
    }
    Ok(())
}

/// The string value of `"key":"…"` in a one-line JSON object (no escapes in run paths we write).
fn json_string_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Train { args } => run_gyre("train", &args),
        Cmd::Eval { args } => run_gyre("eval", &args),
        Cmd::Bench { args } => run_gyre("bench", &args),
        Cmd::Data { name } => data::fetch(&name),
        Cmd::CudaBuild(c) => cuda::cuda_build(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask train --help` reaches `gyre train --help` (issue 19): the flags after the
    /// command, `--help` included, pass through untouched.
    #[test]
    fn flags_after_a_gyre_command_pass_through() {
        for (cmd, flags) in [
            ("train", vec!["--help"]),
            ("eval", vec!["-h", "--k", "20"]),
            ("bench", vec!["--model", "none", "--help"]),
        ] {
            let argv: Vec<&str> = ["cargo xtask", cmd]
                .into_iter()
                .chain(flags.clone())
                .collect();
            let args = match Cli::try_parse_from(&argv).unwrap().cmd {
                Cmd::Train { args } | Cmd::Eval { args } | Cmd::Bench { args } => args,
                _ => panic!("{cmd}: parsed as another command"),
            };
            assert_eq!(args, flags, "{cmd}");
        }
    }

    /// The binary `cargo xtask train` runs is the one `cargo build` just wrote, wherever
    /// `CARGO_TARGET_DIR` puts it (relative paths from the repository root, as cargo reads them).
    #[test]
    fn the_gyre_binary_follows_cargo_target_dir() {
        let root = Path::new("/repo");
        assert_eq!(target_dir_from(root, None), Path::new("/repo/target"));
        assert_eq!(
            target_dir_from(root, Some("".into())),
            Path::new("/repo/target")
        );
        assert_eq!(
            target_dir_from(root, Some("build/t".into())),
            Path::new("/repo/build/t")
        );
        assert_eq!(
            target_dir_from(root, Some("/cache/t".into())),
            Path::new("/cache/t")
        );
    }
}
