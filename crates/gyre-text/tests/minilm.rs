//! all-MiniLM-L6-v2 from the local Hub cache (`cargo xtask data minilm`, which `scripts/test.sh`
//! runs) reproduces sentence-transformers' published similarity matrix, and bad model folders are
//! one-line errors.

use gyre_kernels::candle::{Device, Tensor};
use gyre_text::{TextModel, TextSpec};
use std::path::PathBuf;

fn hub_cache() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/hf/hub");
    assert!(
        d.join("models--sentence-transformers--all-MiniLM-L6-v2")
            .is_dir(),
        "{} has no MiniLM: run `cargo xtask data minilm`",
        d.display()
    );
    d
}

fn minilm() -> TextModel {
    let spec = TextSpec {
        hub_cache: Some(hub_cache()),
        ..TextSpec::default()
    };
    TextModel::load(&spec, &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn reproduces_the_sentence_transformers_quickstart_matrix() {
    let m = minilm();
    assert_eq!(m.dim(), 384);
    assert_eq!(
        m.max_len(),
        256,
        "sentence_bert_config.json, not tokenizer.json's 128"
    );
    assert_eq!(m.revision(), gyre_data::text_assets::MINILM_REVISION);
    let e = m
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    assert_eq!(e.truncated, 0);
    let sim = rows(&e.embeddings.matmul(&e.embeddings.t().unwrap()).unwrap());
    let want = [
        [1.0, 0.6660, 0.1046],
        [0.6660, 1.0, 0.1411],
        [0.1046, 0.1411, 1.0],
    ];
    for i in 0..3 {
        for j in 0..3 {
            let tol = if i == j { 1e-5 } else { 1e-3 };
            assert!(
                (sim[i][j] - want[i][j]).abs() < tol,
                "sim[{i}][{j}] = {}",
                sim[i][j]
            );
        }
    }
    let first = &rows(&e.embeddings)[0][..5];
    for (g, w) in first
        .iter()
        .zip([0.019196, 0.120085, 0.159598, 0.067066, 0.050075])
    {
        assert!((g - w).abs() < 1e-5, "{first:?}");
    }
}

#[test]
fn padding_does_not_change_an_embedding_and_long_lines_are_truncated_and_counted() {
    let m = minilm();
    let short = "a cat";
    let long = "word ".repeat(600);
    let alone = m.embed(&[short]).unwrap();
    let batched = m.embed(&[short, &long]).unwrap();
    assert_eq!(batched.truncated, 1);
    assert_eq!(
        batched.tokens,
        4 + 256,
        "[CLS] a cat [SEP] + 256 of the long line"
    );
    let a = &rows(&alone.embeddings)[0];
    let b = &rows(&batched.embeddings)[0];
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "padding moved the short text's embedding by {diff}"
    );
    // The truncated line is the line cut to 254 wordpieces.
    let cut = "word ".repeat(254);
    let c = m.embed(&[&cut]).unwrap();
    assert_eq!(c.truncated, 0);
    let d = rows(&c.embeddings)[0]
        .iter()
        .zip(&rows(&batched.embeddings)[1])
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "{d}");
}

/// A copy of the model's files in a temp folder, for breaking them.
fn copy_model(tag: &str) -> PathBuf {
    let snap = hub_cache()
        .join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots")
        .join(gyre_data::text_assets::MINILM_REVISION);
    let dir = std::env::temp_dir().join(format!("gyre-minilm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(snap.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn load_err(dir: &std::path::Path) -> String {
    let spec = TextSpec {
        model: dir.to_string_lossy().into_owned(),
        ..TextSpec::default()
    };
    match TextModel::load(&spec, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_model_folder_loads_and_broken_ones_are_named() {
    let dir = copy_model("bad");
    let spec = TextSpec {
        model: dir.to_string_lossy().into_owned(),
        ..TextSpec::default()
    };
    let m = TextModel::load(&spec, &Device::Cpu).unwrap();
    assert!(
        m.revision().starts_with("local-53aa51172d142c89"),
        "{}",
        m.revision()
    );
    drop(m);
    // A truncated weights file.
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors: ") && e.contains("not a readable safetensors"),
        "{e}"
    );
    std::fs::write(&w, &bytes).unwrap();
    // A tokenizer of another vocabulary.
    let tj = dir.join("tokenizer.json");
    let good_tok = std::fs::read(&tj).unwrap();
    let vocab: String = (0..100)
        .map(|i| format!("\"t{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(
        &tj,
        format!(r#"{{"version":"1.0","model":{{"type":"WordLevel","vocab":{{{vocab}}},"unk_token":"t0"}}}}"#),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("tokenizer.json: tokenizer vocabulary 100 ≠ config vocab_size 30522"),
        "{e}"
    );
    std::fs::write(&tj, &good_tok).unwrap();
    // Another pooling.
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("1_Pooling/config.json: only mean pooling"),
        "{e}"
    );
    // A missing file.
    std::fs::remove_file(dir.join("1_Pooling/config.json")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("1_Pooling/config.json: no such file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_missing_from_the_hub_cache_says_how_to_fetch_it() {
    let spec = TextSpec {
        model: "sentence-transformers/not-here".into(),
        hub_cache: Some(hub_cache()),
        ..TextSpec::default()
    };
    let e = TextModel::load(&spec, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("sentence-transformers/not-here/config.json: "),
        "{e}"
    );
    assert!(e.contains("cargo xtask data minilm"), "{e}");
}
