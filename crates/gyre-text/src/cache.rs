//! A corpus embedded once by a text model and cached as safetensors, keyed by the model's
//! revision, the corpus's sha256 and the token limit: `<cache>/<model>@<revision>/<corpus
//! key, 16 hex>-L<max_len>/{embeddings.safetensors, meta.json}`. A cache whose meta does not match,
//! or whose file does not read, is rebuilt (and says why), never reused.

use crate::corpus::Corpus;
use crate::error::TextError;
use crate::model::TextModel;
use gyre_kernels::candle::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How texts are batched for embedding: sorted by token length, then cut so that a batch's
/// padded tokens stay within `batch_tokens` (attention memory grows with T² per text).
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    pub batch_tokens: usize,
    pub max_batch: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            batch_tokens: 16_384,
            max_batch: 256,
        }
    }
}

/// What the cache folder records about its embeddings (`meta.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheMeta {
    pub model: String,
    pub revision: String,
    pub max_len: usize,
    pub corpus_sha256: String,
    pub texts: usize,
    pub dim: usize,
    /// Texts cut to `max_len` tokens.
    pub truncated: usize,
    /// Real tokens embedded (padding not counted).
    pub tokens: usize,
    pub seconds: f64,
    pub texts_per_s: f64,
    pub tokens_per_s: f64,
}

impl CacheMeta {
    fn same_input(&self, other: &CacheMeta) -> bool {
        (
            &self.model,
            &self.revision,
            self.max_len,
            &self.corpus_sha256,
            self.texts,
            self.dim,
        ) == (
            &other.model,
            &other.revision,
            other.max_len,
            &other.corpus_sha256,
            other.texts,
            other.dim,
        )
    }
}

/// Whether the embeddings came from the cache.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheOutcome {
    Hit,
    Built,
    /// Rebuilt; the old folder's problem.
    Rebuilt(String),
}

/// A corpus's embeddings, in corpus order.
pub struct CorpusEmbeddings {
    /// `[N, dim]`, unit rows.
    pub embeddings: Tensor,
    pub meta: CacheMeta,
    pub folder: PathBuf,
    pub outcome: CacheOutcome,
}

/// The cache folder of `corpus` under `model` in `root`.
pub fn cache_folder(root: &Path, model_id: &str, model: &TextModel, corpus: &Corpus) -> PathBuf {
    root.join(format!(
        "{}@{}",
        model_id.replace(['/', '\\'], "--"),
        model.revision()
    ))
    .join(format!("{}-L{}", &corpus.key()[..16], model.max_len()))
}

/// The corpus's embeddings from the cache in `root`, or embedded now (`progress(done, total)`
/// after every batch) and cached.
pub fn corpus_embeddings(
    model_id: &str,
    model: &TextModel,
    corpus: &Corpus,
    root: &Path,
    batching: Batching,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CorpusEmbeddings, TextError> {
    let folder = cache_folder(root, model_id, model, corpus);
    let want = CacheMeta {
        model: model_id.to_string(),
        revision: model.revision().to_string(),
        max_len: model.max_len(),
        corpus_sha256: corpus.key().to_string(),
        texts: corpus.len(),
        dim: model.dim(),
        truncated: 0,
        tokens: 0,
        seconds: 0.0,
        texts_per_s: 0.0,
        tokens_per_s: 0.0,
    };
    let outcome = match read_cache(&folder, &want) {
        Ok(Some((embeddings, meta))) => {
            return Ok(CorpusEmbeddings {
                embeddings,
                meta,
                folder,
                outcome: CacheOutcome::Hit,
            })
        }
        Ok(None) => CacheOutcome::Built,
        Err(problem) => CacheOutcome::Rebuilt(problem),
    };
    let start = Instant::now();
    let (embeddings, truncated, tokens) = embed_corpus(model, corpus, batching, progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let meta = CacheMeta {
        truncated,
        tokens,
        seconds,
        texts_per_s: corpus.len() as f64 / seconds.max(1e-9),
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        ..want
    };
    write_cache(&folder, &embeddings, &meta)?;
    Ok(CorpusEmbeddings {
        embeddings,
        meta,
        folder,
        outcome,
    })
}

/// Embeds every text, batched by length; rows in corpus order. Returns (embeddings, truncated,
/// tokens).
pub fn embed_corpus(
    model: &TextModel,
    corpus: &Corpus,
    batching: Batching,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Tensor, usize, usize), TextError> {
    let texts: Vec<&str> = corpus.texts().iter().map(String::as_str).collect();
    let lengths = model.token_lengths(&texts)?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let (mut rows, mut truncated, mut tokens) = (Vec::new(), 0, 0);
    let mut start = 0;
    while start < order.len() {
        // Sorted ascending, so the batch's last text is its longest.
        let mut end = start + 1;
        while end < order.len()
            && end - start < batching.max_batch
            && (end + 1 - start) * lengths[order[end]] <= batching.batch_tokens
        {
            end += 1;
        }
        let batch: Vec<&str> = order[start..end].iter().map(|&i| texts[i]).collect();
        let e = model.embed(&batch)?;
        truncated += e.truncated;
        tokens += e.tokens;
        rows.push(e.embeddings);
        start = end;
        progress(start, order.len());
    }
    let sorted = Tensor::cat(&rows, 0)?;
    // Row r of `sorted` is text order[r]: invert the permutation.
    let mut inverse = vec![0u32; order.len()];
    for (r, &i) in order.iter().enumerate() {
        inverse[i] = r as u32;
    }
    let idx = Tensor::from_vec(inverse, order.len(), sorted.device())?;
    Ok((sorted.index_select(&idx, 0)?, truncated, tokens))
}

fn read_cache(folder: &Path, want: &CacheMeta) -> Result<Option<(Tensor, CacheMeta)>, String> {
    let meta_path = folder.join("meta.json");
    if !meta_path.exists() {
        return Ok(None);
    }
    let meta: CacheMeta = std::fs::read_to_string(&meta_path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", meta_path.display()))?;
    if !meta.same_input(want) {
        return Err(format!(
            "{}: made for another model, corpus or length",
            meta_path.display()
        ));
    }
    let path = folder.join("embeddings.safetensors");
    let mut map =
        gyre_encoders::weights::read_tensors(&path, &Device::Cpu).map_err(|e| e.to_string())?;
    let t = map
        .remove("embeddings")
        .ok_or_else(|| format!("{}: no tensor 'embeddings'", path.display()))?;
    if t.dims() != [want.texts, want.dim] {
        return Err(format!(
            "{}: shape {:?}, not [{}, {}]",
            path.display(),
            t.dims(),
            want.texts,
            want.dim
        ));
    }
    Ok(Some((t, meta)))
}

/// Writes the folder whole or not at all: into a sibling temp folder, then renamed over.
fn write_cache(folder: &Path, embeddings: &Tensor, meta: &CacheMeta) -> Result<(), TextError> {
    let parent = folder.parent().expect("a cache folder has a parent");
    std::fs::create_dir_all(parent).map_err(|e| TextError::file(parent, e.to_string()))?;
    let tmp = folder.with_extension(format!("part-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TextError::file(&tmp, e.to_string()))?;
    let map = HashMap::from([("embeddings".to_string(), embeddings.clone())]);
    gyre_encoders::weights::save_tensors_atomic(&map, &tmp.join("embeddings.safetensors"))
        .map_err(|e| TextError::Model(e.to_string()))?;
    let json = serde_json::to_string_pretty(meta).expect("plain fields");
    std::fs::write(tmp.join("meta.json"), json)
        .map_err(|e| TextError::file(tmp.join("meta.json"), e.to_string()))?;
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(|e| TextError::file(folder, e.to_string()))?;
    }
    std::fs::rename(&tmp, folder).map_err(|e| TextError::file(folder, e.to_string()))?;
    Ok(())
}
