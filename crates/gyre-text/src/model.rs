//! A sentence-transformers text encoder from a Hugging Face Hub model (all-MiniLM-L6-v2 by
//! default): the Hub's tokenizer.json through `tokenizers`, candle-transformers' BERT, mean pooling
//! over the real tokens, L2 normalisation. Frozen: outputs are detached.

use crate::bert_tail::BertTail;
use crate::error::TextError;
use candle_transformers::models::bert::{BertModel, Config};
use gyre_data::text_assets;
use gyre_encoders::hub::{self, HubOptions};
use gyre_kernels::candle::{DType, Device, Tensor, D};
use gyre_kernels::nn::VarBuilder;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokenizers::{
    PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// Where a text model comes from and how long its inputs may be.
#[derive(Clone, Debug)]
pub struct TextSpec {
    /// A Hub id (`sentence-transformers/all-MiniLM-L6-v2`, read from `hub_cache`, never the
    /// network) or a folder holding the model's files.
    pub model: String,
    /// The Hub cache (`…/hub`); `None`: `data/hf/hub` (`cargo xtask data minilm`).
    pub hub_cache: Option<PathBuf>,
    /// Tokens per text, `[CLS]` and `[SEP]` included; longer texts are truncated (counted).
    /// `None`: the model's `sentence_bert_config.json` (256 for MiniLM).
    pub max_seq_length: Option<usize>,
}

impl Default for TextSpec {
    fn default() -> Self {
        TextSpec {
            model: text_assets::MINILM_ID.into(),
            hub_cache: None,
            max_seq_length: None,
        }
    }
}

/// A loaded text encoder.
pub struct TextModel {
    bert: BertModel,
    tokenizer: Tokenizer,
    vocab_size: usize,
    max_len: usize,
    dim: usize,
    revision: String,
    device: Device,
}

/// The output of [`TextModel::embed`].
pub struct Embedded {
    /// `[n, dim]`, unit rows, detached.
    pub embeddings: Tensor,
    /// How many texts were cut to `max_len` tokens.
    pub truncated: usize,
    /// Tokens fed to the model (real ones, padding not counted).
    pub tokens: usize,
}

#[derive(Deserialize)]
struct Pooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

const FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

impl TextModel {
    /// Loads the model's files (offline), checks that they agree, and builds the encoder.
    pub fn load(spec: &TextSpec, device: &Device) -> Result<TextModel, TextError> {
        Ok(Self::load_split(spec, device, 0)?.0)
    }

    /// The model with its last `train_layers` BERT layers split off as a trainable [`BertTail`]
    /// (`None` for 0): the returned model runs the first `L − train_layers` layers (frozen), and
    /// `tail.forward` then [`pool`] finish the embedding.
    pub fn load_split(
        spec: &TextSpec,
        device: &Device,
        train_layers: usize,
    ) -> Result<(TextModel, Option<BertTail>), TextError> {
        let (files, revision) = resolve(spec)?;
        let [config, tokenizer, weights, sentence, pooling] = files;
        let mut cfg: Config = read_json(&config)?;
        if train_layers > cfg.num_hidden_layers {
            return Err(TextError::Setting {
                field: "text.train_layers",
                problem: format!(
                    "{train_layers} is more than the model's {} layers ({})",
                    cfg.num_hidden_layers,
                    config.display()
                ),
            });
        }
        let pool: Pooling = read_json(&pooling)?;
        if !pool.pooling_mode_mean_tokens
            || pool.pooling_mode_cls_token
            || pool.pooling_mode_max_tokens
            || pool.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(TextError::file(
                &pooling,
                "only mean pooling (pooling_mode_mean_tokens alone) is supported",
            ));
        }
        let sentence: SentenceConfig = read_json(&sentence)?;
        let max_len = spec.max_seq_length.unwrap_or(sentence.max_seq_length);
        if max_len < 2 || max_len > cfg.max_position_embeddings {
            return Err(TextError::Setting {
                field: "text.max_seq_length",
                problem: format!(
                    "{max_len} must be in 2..={} (the model's max_position_embeddings, {})",
                    cfg.max_position_embeddings,
                    config.display()
                ),
            });
        }
        let mut tok = Tokenizer::from_file(&tokenizer)
            .map_err(|e| TextError::file(&tokenizer, format!("not a tokenizer.json: {e}")))?;
        let vocab = tok.get_vocab_size(true);
        if vocab != cfg.vocab_size {
            return Err(TextError::file(
                &tokenizer,
                format!(
                    "tokenizer vocabulary {vocab} ≠ config vocab_size {} ({}): not this model's \
                     tokenizer",
                    cfg.vocab_size,
                    config.display()
                ),
            ));
        }
        for special in ["[CLS]", "[SEP]", "[PAD]"] {
            match tok.token_to_id(special) {
                Some(id) if (id as usize) < cfg.vocab_size => {}
                _ => {
                    return Err(TextError::file(
                        &tokenizer,
                        format!("no {special} token below vocab_size {}", cfg.vocab_size),
                    ))
                }
            }
        }
        let pad_id = tok.token_to_id("[PAD]").expect("checked above");
        // The Hub's file pads every text to 128 tokens and cuts at 128: replace both.
        tok.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| TextError::file(&tokenizer, format!("truncation: {e}")))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..PaddingParams::default()
        }));
        let tensors = gyre_encoders::weights::read_tensors(&weights, device)
            .map_err(|e| TextError::file(&weights, e.to_string()))?;
        let trunk = cfg.num_hidden_layers - train_layers;
        let tail = (train_layers > 0)
            .then(|| {
                BertTail::from_weights(
                    &tensors,
                    trunk,
                    train_layers,
                    cfg.num_attention_heads,
                    cfg.layer_norm_eps,
                )
                .map_err(|e| TextError::file(&weights, e))
            })
            .transpose()?;
        cfg.num_hidden_layers = trunk;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let bert = BertModel::load(vb, &cfg).map_err(|e| {
            TextError::file(
                &weights,
                format!("not a BERT with {}'s shapes: {e}", config.display()),
            )
        })?;
        let model = TextModel {
            bert,
            tokenizer: tok,
            vocab_size: cfg.vocab_size,
            max_len,
            dim: cfg.hidden_size,
            revision,
            device: device.clone(),
        };
        Ok((model, tail))
    }

    /// The embedding width (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens per text at most.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The Hub snapshot the files came from, or `local-<sha256 of the weights, 16 hex>` for a
    /// folder: the key of cached corpus embeddings.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Token counts of `texts` after truncation, `[CLS]` and `[SEP]` included (to batch them).
    pub fn token_lengths(&self, texts: &[&str]) -> Result<Vec<usize>, TextError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TextError::Model(format!("tokenising: {e}")))?;
        Ok(enc
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count())
            .collect())
    }

    /// Embeds `texts` in one batch (padded to its longest): unit rows `[n, dim]`.
    pub fn embed(&self, texts: &[&str]) -> Result<Embedded, TextError> {
        if texts.is_empty() {
            return Ok(Embedded {
                embeddings: Tensor::zeros((0, self.dim), DType::F32, &self.device)?,
                truncated: 0,
                tokens: 0,
            });
        }
        let h = self.hidden(texts)?;
        Ok(Embedded {
            embeddings: pool(&h.states, &h.mask)?.detach(),
            truncated: h.truncated,
            tokens: h.tokens,
        })
    }

    /// The model's last hidden states `[n, T, dim]` (detached) and the attention mask `[n, T]`
    /// of one padded batch (`texts` not empty).
    pub fn hidden(&self, texts: &[&str]) -> Result<Hidden, TextError> {
        let n = texts.len();
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TextError::Model(format!("tokenising: {e}")))?;
        let t = enc[0].get_ids().len();
        let mut ids = Vec::with_capacity(n * t);
        let mut mask = Vec::with_capacity(n * t);
        let mut truncated = 0;
        for e in &enc {
            if let Some(&bad) = e.get_ids().iter().find(|&&i| i as usize >= self.vocab_size) {
                return Err(TextError::Model(format!(
                    "token id {bad} ≥ vocab_size {}: the tokenizer does not match the model",
                    self.vocab_size
                )));
            }
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            truncated += usize::from(!e.get_overflowing().is_empty());
        }
        let tokens = mask.iter().filter(|&&m| m == 1).count();
        let ids = Tensor::from_vec(ids, (n, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, t), &self.device)?;
        let states = self
            .bert
            .forward(&ids, &ids.zeros_like()?, Some(&mask))?
            .detach();
        Ok(Hidden {
            states,
            mask,
            truncated,
            tokens,
        })
    }
}

/// One batch's hidden states, for a trainable tail.
pub struct Hidden {
    pub states: Tensor,
    /// `[n, T]` U32, 1 for a real token.
    pub mask: Tensor,
    pub truncated: usize,
    pub tokens: usize,
}

/// Mean over the real tokens of `h` `[n, T, H]` under `mask` `[n, T]`, then unit length
/// (sentence-transformers' Pooling and Normalize).
pub fn pool(h: &Tensor, mask: &Tensor) -> gyre_kernels::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = h.broadcast_mul(&m)?.sum(1)?;
    let mean = sum.broadcast_div(&m.sum(1)?)?;
    let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    mean.broadcast_div(&norm)
}

/// The five files of `spec.model`, from its folder or the Hub cache, and the revision name.
fn resolve(spec: &TextSpec) -> Result<([PathBuf; 5], String), TextError> {
    let folder = Path::new(&spec.model);
    if folder.is_dir() {
        let files = FILES.map(|f| folder.join(f));
        if let Some(missing) = files.iter().find(|p| !p.is_file()) {
            return Err(TextError::file(missing, "no such file in the model folder"));
        }
        let weights =
            std::fs::read(&files[2]).map_err(|e| TextError::file(&files[2], e.to_string()))?;
        let digest: String = Sha256::digest(&weights)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        return Ok((files, format!("local-{digest}")));
    }
    let opts = HubOptions {
        cache_dir: Some(
            spec.hub_cache
                .clone()
                .unwrap_or_else(text_assets::default_hub_cache),
        ),
        revision: "main".into(),
        local_files_only: true,
    };
    let mut out = Vec::with_capacity(FILES.len());
    for f in FILES {
        let p = hub::hub_file(&spec.model, f, &opts).map_err(|e| TextError::Missing {
            what: format!("{}/{f}", spec.model),
            problem: e.to_string(),
        })?;
        out.push(p);
    }
    // hf-hub returns snapshots/<revision>/<file>; the weights sit at the snapshot's top.
    let revision = out[2]
        .parent()
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
    Ok((out.try_into().expect("five files"), revision))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TextError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TextError::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| TextError::file(path, format!("{e}")))
}
