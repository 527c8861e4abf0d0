//! `cargo xtask`: builds the `gyre` binary in release and runs it (`train`, `eval`, `bench`), and
//! fetches datasets (`data`), builds the CUDA binary (`cuda-build`). Flags after the command pass through to `gyre` unchanged.

mod cuda;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use std::io::Read;
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
    /// Fetch a dataset into data/: `fashion-mnist`.
    Data { name: String },
    /// Build `gyre` for NVIDIA GPUs (CUDA 13.0 from PyPI; no GPU or CUDA toolkit needed here).
    CudaBuild(cuda::CudaBuild),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
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
    let bin = root.join("target/release/gyre");
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

/// sha256 of the decompressed Fashion-MNIST files (Debian's package and upstream agree): the one
/// table, gyre-data's, which also checks the files it reads.
const FMNIST: [(&str, &str); 4] = gyre_data::fashion_mnist::RAW_SHA256;
const FMNIST_UPSTREAM: &str = gyre_data::fashion_mnist::UPSTREAM_URL;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Gets the four .gz files into `dl`: Debian's package first (`apt-get download` + `dpkg-deb -x`,
/// no root needed), else the upstream URL with curl.
fn fetch_fmnist_gz(dl: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dl)?;
    let apt = Command::new("apt-get")
        .current_dir(dl)
        .args(["download", "dataset-fashion-mnist"])
        .status();
    if matches!(apt, Ok(s) if s.success()) {
        let deb = std::fs::read_dir(dl)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("dataset-fashion-mnist"))
            })
            .context("apt-get download left no .deb")?;
        let x = dl.join("deb");
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&x)
            .status()
            .context("running dpkg-deb")?;
        if !st.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
        return Ok(x.join("usr/share/datasets/fashion-mnist"));
    }
    eprintln!("xtask: apt-get download failed; trying {FMNIST_UPSTREAM}");
    let out = dl.join("upstream");
    std::fs::create_dir_all(&out)?;
    for (name, _) in FMNIST {
        let url = format!("{FMNIST_UPSTREAM}{name}.gz");
        let st = Command::new("curl")
            .args(["-fsSL", "-o"])
            .arg(out.join(format!("{name}.gz")))
            .arg(&url)
            .status()
            .context("running curl")?;
        if !st.success() {
            bail!("downloading {url} failed");
        }
    }
    Ok(out)
}

fn data(name: &str) -> Result<()> {
    if name != "fashion-mnist" {
        bail!("unknown dataset '{name}': expected fashion-mnist");
    }
    let dest = root().join("data/fashion-mnist");
    std::fs::create_dir_all(&dest)?;
    let all_there = FMNIST.iter().all(|(n, h)| {
        std::fs::read(dest.join(n))
            .map(|b| sha256(&b) == *h)
            .unwrap_or(false)
    });
    if all_there {
        println!(
            "xtask: {} already holds Fashion-MNIST (sha256 verified)",
            dest.display()
        );
        return Ok(());
    }
    let src = fetch_fmnist_gz(&root().join("data/.dl"))?;
    for (n, want) in FMNIST {
        let gz = src.join(format!("{n}.gz"));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(&gz).with_context(|| format!("{}: cannot open", gz.display()))?,
        )
        .read_to_end(&mut raw)
        .with_context(|| format!("{}: corrupt gzip", gz.display()))?;
        let got = sha256(&raw);
        if got != want {
            bail!(
                "{}: sha256 {got} does not match the pinned {want}",
                gz.display()
            );
        }
        std::fs::write(dest.join(n), &raw)?;
        println!("xtask: {n} ok ({} bytes, sha256 {got})", raw.len());
    }
    println!("xtask: Fashion-MNIST is in {}", dest.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Train { args } => run_gyre("train", &args),
        Cmd::Eval { args } => run_gyre("eval", &args),
        Cmd::Bench { args } => run_gyre("bench", &args),
        Cmd::Data { name } => data(&name),
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
}
