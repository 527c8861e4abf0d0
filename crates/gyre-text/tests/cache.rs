//! WordNet glosses embedded by MiniLM and cached: batching by length changes no embedding, the
//! cache reloads bit for bit, and a cache that does not match or does not read is rebuilt.

use gyre_kernels::candle::Device;
use gyre_text::cache::{corpus_embeddings, embed_corpus, Batching, CacheMeta, CacheOutcome};
use gyre_text::{Corpus, TextModel, TextSpec};
use std::path::PathBuf;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(p)
}

fn minilm() -> TextModel {
    let spec = TextSpec {
        hub_cache: Some(data("hf/hub")),
        ..TextSpec::default()
    };
    TextModel::load(&spec, &Device::Cpu).expect("run `cargo xtask data minilm`")
}

fn fifty_glosses() -> Corpus {
    let wn = Corpus::wordnet(&data("wordnet")).expect("run `cargo xtask data wordnet`");
    assert_eq!(wn.len(), 117_659);
    wn.spread(50).unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batching_by_length_gives_each_text_its_own_embedding() {
    let m = minilm();
    let c = fifty_glosses();
    let small = Batching {
        batch_tokens: 400,
        max_batch: 8,
    };
    let mut calls = Vec::new();
    let (e, truncated, tokens) =
        embed_corpus(&m, &c, small, &mut |d, n| calls.push((d, n))).unwrap();
    assert_eq!(truncated, 0);
    assert!(calls.len() > 6, "{calls:?}");
    assert_eq!(*calls.last().unwrap(), (50, 50));
    let lengths = m
        .token_lengths(&c.texts().iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(tokens, lengths.iter().sum::<usize>());
    let batched: Vec<Vec<f32>> = e.to_vec2().unwrap();
    let alone: Vec<Vec<f32>> = c
        .texts()
        .iter()
        .map(|t| {
            m.embed(&[t.as_str()])
                .unwrap()
                .embeddings
                .to_vec2::<f32>()
                .unwrap()
                .remove(0)
        })
        .collect();
    let d = max_diff(&batched, &alone);
    assert!(d < 1e-5, "batched vs one by one: {d}");
}

#[test]
fn the_cache_round_trips_and_rebuilds_what_does_not_match() {
    let m = minilm();
    let c = fifty_glosses();
    let root = std::env::temp_dir().join(format!("gyre-text-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let id = "sentence-transformers/all-MiniLM-L6-v2";
    let b = Batching::default();
    let first = corpus_embeddings(id, &m, &c, &root, b, &mut |_, _| {}).unwrap();
    assert_eq!(first.outcome, CacheOutcome::Built);
    assert_eq!(first.meta.texts, 50);
    assert!(first.meta.texts_per_s > 0.0);
    assert!(first.folder.ends_with(format!("{}-L256", &c.key()[..16])));
    let want: Vec<Vec<f32>> = first.embeddings.to_vec2().unwrap();
    let again =
        corpus_embeddings(id, &m, &c, &root, b, &mut |_, _| panic!("embedded again")).unwrap();
    assert_eq!(again.outcome, CacheOutcome::Hit);
    assert_eq!(
        again.embeddings.to_vec2::<f32>().unwrap(),
        want,
        "bit for bit"
    );
    // What identifies the cache reads back exactly; the timings are floats through JSON, which
    // serde_json (without `float_roundtrip`, kept off so the golden records read as recorded)
    // parses to within an ulp.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    let identity = |m: &CacheMeta| CacheMeta {
        seconds: 0.0,
        texts_per_s: 0.0,
        tokens_per_s: 0.0,
        ..m.clone()
    };
    assert_eq!(identity(&again.meta), identity(&first.meta));
    for (a, b) in [
        (again.meta.seconds, first.meta.seconds),
        (again.meta.texts_per_s, first.meta.texts_per_s),
        (again.meta.tokens_per_s, first.meta.tokens_per_s),
    ] {
        assert!(close(a, b), "{a} vs {b}");
    }
    // A meta for another corpus: rebuilt, with the reason.
    let meta = first.folder.join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace(c.key(), &"0".repeat(64))).unwrap();
    let r = corpus_embeddings(id, &m, &c, &root, b, &mut |_, _| {}).unwrap();
    match &r.outcome {
        CacheOutcome::Rebuilt(why) => assert!(why.contains("meta.json: made for another"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(r.embeddings.to_vec2::<f32>().unwrap(), want);
    // A truncated embeddings file: rebuilt.
    let f = r.folder.join("embeddings.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let r = corpus_embeddings(id, &m, &c, &root, b, &mut |_, _| {}).unwrap();
    match &r.outcome {
        CacheOutcome::Rebuilt(why) => assert!(why.contains("embeddings.safetensors"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        corpus_embeddings(id, &m, &c, &root, b, &mut |_, _| {})
            .unwrap()
            .outcome,
        CacheOutcome::Hit
    );
    std::fs::remove_dir_all(&root).unwrap();
}
