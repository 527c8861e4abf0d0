//! `cargo xtask cuda-build`: the `gyre` binary for NVIDIA GPUs, built on a machine without a GPU
//! or a CUDA toolkit (docs/gpu.md; the recipe is checked in `shared/spec/gpu.md`).
//!
//! Everything it fetches lives in a cache folder outside the repo (`--cache`, else
//! `$GYRE_CUDA_CACHE`, else `~/.cache/gyre/cuda`), made once:
//! - `venv/`: the CUDA 13.0 compiler and headers from PyPI, pinned (a newer nvcc emits PTX too new
//!   for driver 580);
//! - `candle-core-<v>-<hash>-dynamic-loading/`: gyre's candle-core (`third_party/candle-core`)
//!   with cudarc switched from `dynamic-linking` to `dynamic-loading`, so the binary opens the
//!   CUDA libraries on first use and still runs on a machine that has none (the default,
//!   `--link loading`); `static-cudart/` makes candle-kernels' `-lcudart` link the static CUDA
//!   runtime;
//! - for `--link linking` (cudarc as candle publishes it: every CUDA library resolved at
//!   start-up): the library wheels, a link-time stub of `libcuda.so.1` and a folder of
//!   unversioned links.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// CUDA 13.0 compiler, headers and runtime (pinned: driver 580 on the target machine).
const TOOLKIT: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
];

/// The libraries a `--link linking` build links against (cuDNN only with `--cudnn`).
const LINK_LIBS: &[&str] = &[
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",
];
const CUDNN_WHEEL: &str = "nvidia-cudnn-cu13==9.13.0.50";

/// The stub's source: every driver entry point cudarc binds, each returning
/// CUDA_ERROR_NO_DEVICE. Only linked against, never loaded where a real driver is installed.
const LIBCUDA_STUB_C: &str = include_str!("../cuda/libcuda_stub.c");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Link {
    /// Open the CUDA libraries on first use (cudarc `dynamic-loading`, candle-core patched): one
    /// binary for GPU and CPU-only machines.
    Loading,
    /// Link them at build time (candle as published): the binary needs them to start at all.
    Linking,
}

#[derive(clap::Args)]
pub struct CudaBuild {
    /// How the binary finds the CUDA libraries.
    #[arg(long, value_enum, default_value_t = Link::Loading)]
    link: Link,
    /// Also use cuDNN (candle uses it for the convolution forward).
    #[arg(long)]
    cudnn: bool,
    /// GPU compute capability the kernels are compiled for (90: H100/H200).
    #[arg(long, default_value_t = 90)]
    compute_cap: u32,
    /// Cache folder for the toolkit, the patched candle-core and the libraries.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Also write what a GPU machine without Rust needs into this folder (git-ignored, e.g.
    /// `gpu-carry`): `gyre.xz`, the kernel test binaries (`*.xz`) and `run.sh`.
    #[arg(long)]
    pack: Option<PathBuf>,
}

fn cache_dir(c: &CudaBuild) -> Result<PathBuf> {
    if let Some(d) = &c.cache {
        return Ok(d.clone());
    }
    if let Ok(d) = std::env::var("GYRE_CUDA_CACHE") {
        return Ok(d.into());
    }
    let home = std::env::var("HOME").context("HOME is not set: pass --cache")?;
    Ok(Path::new(&home).join(".cache/gyre/cuda"))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The toolkit venv (made once); returns `CUDA_HOME` (`.../site-packages/nvidia/cu13`).
fn toolkit(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("venv");
    if let Some(home) = find_cuda_home(&venv) {
        return Ok(home);
    }
    println!(
        "xtask: installing the CUDA 13.0 compiler into {}",
        venv.display()
    );
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(TOOLKIT),
        "pip install (CUDA toolkit wheels)",
    )?;
    find_cuda_home(&venv)
        .with_context(|| format!("no nvidia/cu13/bin/nvcc under {}", venv.display()))
}

fn find_cuda_home(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| e.path().join("site-packages/nvidia/cu13"))
        .find(|h| h.join("bin/nvcc").is_file())
}

/// The version of `name` in the workspace's Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let key = format!("name = \"{name}\"\nversion = \"");
    let at = lock.find(&key)? + key.len();
    Some(lock[at..].split('"').next()?.to_string())
}

/// gyre's candle-core (`third_party/candle-core`, the workspace's `[patch]`), copied into the cache
/// with cudarc's `dynamic-linking` feature replaced by `dynamic-loading`. The copy is named by a
/// hash of the vendored files, so a change there makes a fresh copy.
fn patched_candle_core(root: &Path, cache: &Path) -> Result<PathBuf> {
    let src = root.join("third_party/candle-core");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let v = locked_version(&lock, "candle-core").context("candle-core is not in Cargo.lock")?;
    let hash = tree_hash(&src).with_context(|| format!("reading {}", src.display()))?;
    let dest = cache.join(format!("candle-core-{v}-{hash:016x}-dynamic-loading"));
    if dest.join("Cargo.toml").is_file() {
        return Ok(dest);
    }
    let tmp = cache.join(format!("candle-core-{v}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    run(
        Command::new("cp").arg("-r").arg(&src).arg(&tmp),
        "copying candle-core",
    )?;
    let manifest = tmp.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    if text.matches("\"dynamic-linking\"").count() != 1 {
        bail!(
            "{}: expected cudarc's \"dynamic-linking\" feature exactly once",
            manifest.display()
        );
    }
    std::fs::write(
        &manifest,
        text.replace("\"dynamic-linking\"", "\"dynamic-loading\""),
    )?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// FNV-1a over the relative paths and bytes of every file under `dir`, in sorted order.
fn tree_hash(dir: &Path) -> Result<u64> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        for b in rel.bytes().chain(std::fs::read(&f)?) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(h)
}

/// The `--link linking` folder: the CUDA libraries from their wheels, the `libcuda.so.1` stub, and
/// unversioned links for the linker.
fn link_folder(cache: &Path, cudnn: bool) -> Result<PathBuf> {
    let libs = cache.join("lib");
    let link = cache.join(if cudnn { "link-cudnn" } else { "link" });
    if link.join("libcuda.so").exists() && (!cudnn || link.join("libcudnn.so").exists()) {
        return Ok(link);
    }
    let wheels = cache.join("wheels");
    let mut want: Vec<&str> = LINK_LIBS.to_vec();
    want.push("nvidia-cuda-runtime==13.0.96");
    if cudnn {
        want.push(CUDNN_WHEEL);
    }
    run(
        Command::new(cache.join("venv/bin/pip"))
            .args([
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .args(&want),
        "pip download (CUDA library wheels)",
    )?;
    std::fs::create_dir_all(&libs)?;
    // Every `lib*.so*` of every wheel, flattened into lib/.
    let unzip = "import sys, zipfile, os\n\
        for w in sys.argv[2:]:\n\
        \x20   z = zipfile.ZipFile(w)\n\
        \x20   for n in z.namelist():\n\
        \x20       b = os.path.basename(n)\n\
        \x20       if b.startswith('lib') and '.so' in b:\n\
        \x20           open(os.path.join(sys.argv[1], b), 'wb').write(z.read(n))\n";
    let whl: Vec<PathBuf> = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    run(
        Command::new("python3")
            .args(["-c", unzip])
            .arg(&libs)
            .args(&whl),
        "unpacking the library wheels",
    )?;
    let stub_c = cache.join("libcuda_stub.c");
    std::fs::write(&stub_c, LIBCUDA_STUB_C)?;
    run(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(libs.join("libcuda.so.1"))
            .arg(&stub_c),
        "gcc (libcuda.so.1 stub)",
    )?;
    let _ = std::fs::remove_dir_all(&link);
    std::fs::create_dir_all(&link)?;
    let mut names = vec!["cuda", "cudart", "cublas", "cublasLt", "curand", "nvrtc"];
    if cudnn {
        names.push("cudnn");
    }
    for n in names {
        let prefix = format!("lib{n}.so.");
        let target = std::fs::read_dir(&libs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&prefix))
            })
            .with_context(|| format!("no {prefix}* in {}", libs.display()))?;
        std::os::unix::fs::symlink(&target, link.join(format!("lib{n}.so")))?;
    }
    Ok(link)
}

/// Restores a file's bytes when dropped (the patched build rewrites Cargo.lock).
struct Restore(PathBuf, Vec<u8>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.0, &self.1) {
            eprintln!("xtask: could not restore {}: {e}", self.0.display());
        }
    }
}

pub fn cuda_build(c: CudaBuild) -> Result<()> {
    let t0 = Instant::now();
    let root = super::root();
    let cache = cache_dir(&c)?;
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let cuda_home = toolkit(&cache)?;
    println!("xtask: CUDA_HOME={}", cuda_home.display());

    let features = if c.cudnn { "cudnn" } else { "cuda" };
    let target_dir = root.join("target").join(format!(
        "cuda-{}{}",
        match c.link {
            Link::Loading => "loading",
            Link::Linking => "linking",
        },
        if c.cudnn { "-cudnn" } else { "" }
    ));
    let path = format!(
        "{}:{}",
        cuda_home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    let mut library_path = std::env::var("LIBRARY_PATH").unwrap_or_default();
    let mut patch = None;
    match c.link {
        Link::Loading => {
            patch = Some(patched_candle_core(&root, &cache)?);
            // candle-kernels links its MoE kernels against `cudart` (as a dylib, which would make
            // libcudart.so.13 a start-up dependency): a folder where `-lcudart` finds only the
            // static runtime links it in. cudart itself opens the driver with dlopen.
            let dir = cache.join("static-cudart");
            let lib = dir.join("libcudart.a");
            if !lib.exists() {
                std::fs::create_dir_all(&dir)?;
                std::os::unix::fs::symlink(cuda_home.join("lib/libcudart_static.a"), &lib)?;
            }
            // LIBRARY_PATH (read by the `cc` that links) rather than RUSTFLAGS, which would
            // rebuild every crate when it changes.
            library_path = format!("{}:{library_path}", dir.display());
        }
        Link::Linking => {
            let link = link_folder(&cache, c.cudnn)?;
            rustflags = format!("{rustflags} -L native={}", link.display())
                .trim()
                .to_string();
        }
    }
    let lock_path = root.join("Cargo.lock");
    let _restore = Restore(lock_path.clone(), std::fs::read(&lock_path)?);

    let build = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(super::cargo());
        cmd.current_dir(&root)
            .args(args)
            .args(["--release", "--features", features, "--target-dir"])
            .arg(&target_dir)
            .env("CUDA_HOME", &cuda_home)
            .env("CUDA_PATH", &cuda_home)
            .env("CUDA_COMPUTE_CAP", c.compute_cap.to_string())
            .env("PATH", &path)
            .env("RUSTFLAGS", &rustflags)
            .env("LIBRARY_PATH", &library_path);
        if let Some(p) = &patch {
            cmd.arg("--config").arg(format!(
                "patch.crates-io.candle-core.path={:?}",
                p.display().to_string()
            ));
        }
        run(&mut cmd, "cargo build (CUDA)")
    };
    build(&["build", "-p", "gyre-cli", "--bin", "gyre"])?;
    let bin = target_dir.join("release/gyre");
    let size = std::fs::metadata(&bin)?.len();
    println!(
        "xtask: built {} ({:.1} MB, link = {:?}, features = {features}, sm_{}) in {:.0} s",
        bin.display(),
        size as f64 / 1e6,
        c.link,
        c.compute_cap,
        t0.elapsed().as_secs_f64()
    );

    if let Some(dir) = &c.pack {
        // The kernel tests, built as binaries to run where there is no cargo.
        build(&[
            "test",
            "--no-run",
            "-p",
            "gyre-kernels",
            "-p",
            "gyre-losses",
        ])?;
        std::fs::create_dir_all(dir)?;
        let mut packed = vec![(bin.clone(), "gyre".to_string())];
        for e in std::fs::read_dir(target_dir.join("release/deps"))?.flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            let is_test = (name.starts_with("kernels-")
                || name.starts_with("gyre_kernels-")
                || name.starts_with("gyre_losses-"))
                && p.extension().is_none()
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            if is_test {
                let short = name.rsplit_once('-').map_or(name, |(a, _)| a);
                packed.push((p.clone(), format!("test-{short}")));
            }
        }
        for (src, name) in &packed {
            let tmp = dir.join(name);
            std::fs::copy(src, &tmp)?;
            run(Command::new("strip").arg(&tmp), "strip")?;
            let _ = std::fs::remove_file(dir.join(format!("{name}.xz")));
            run(Command::new("xz").args(["-T2", "-6"]).arg(&tmp), "xz")?;
            let xz = dir.join(format!("{name}.xz"));
            println!(
                "xtask: packed {} ({:.1} MB)",
                xz.display(),
                std::fs::metadata(&xz)?.len() as f64 / 1e6
            );
        }
        std::fs::copy(root.join("scripts/gpu/run.sh"), dir.join("run.sh"))?;
        println!(
            "xtask: on the GPU machine: bash {}/run.sh gyre --device cuda bench",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_follows_names_and_bytes() {
        let dir = std::env::temp_dir().join(format!("gyre-xtask-hash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("Cargo.toml"), "a").unwrap();
        std::fs::write(dir.join("src/lib.rs"), "b").unwrap();
        let h = tree_hash(&dir).unwrap();
        assert_eq!(tree_hash(&dir).unwrap(), h, "stable");
        std::fs::write(dir.join("src/lib.rs"), "c").unwrap();
        let h2 = tree_hash(&dir).unwrap();
        assert_ne!(h2, h, "a changed byte");
        std::fs::rename(dir.join("src/lib.rs"), dir.join("src/main.rs")).unwrap();
        assert_ne!(tree_hash(&dir).unwrap(), h2, "a renamed file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_a_locked_version() {
        let lock = "[[package]]\nname = \"candle-core\"\nversion = \"0.11.1\"\nsource = \"x\"\n";
        assert_eq!(
            locked_version(lock, "candle-core").as_deref(),
            Some("0.11.1")
        );
        assert_eq!(locked_version(lock, "candle-nn"), None);
    }
}
