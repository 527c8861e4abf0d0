//! The Vision Transformer (Dosovitskiy et al., ICLR 2021) in timm's layout and parameter names:
//! `cls_token`, `pos_embed`, `patch_embed.proj.{weight,bias}`, `blocks.{i}.norm1`,
//! `blocks.{i}.attn.qkv`, `blocks.{i}.attn.proj`, `blocks.{i}.norm2`, `blocks.{i}.mlp.fc{1,2}`,
//! `norm` (timm's `VisionTransformer` with a class token, learned absolute position embeddings,
//! pre-norm blocks, LayerNorm eps 1e-6, exact GELU, no classifier). The feature is the class
//! token after the final norm (timm's `global_pool = "token"`, DINO's output).
//!
//! Presets: `vit-tiny-16` (192 wide, 12 blocks, 3 heads) and `vit-small-16` (384, 12, 6) for 224
//! px, and their patch-4 variants `vit-tiny-4` / `vit-small-4` for 28–32 px images (7×7 or 8×8
//! patches); `vit-micro-4` (64 wide, 4 blocks, 2 heads, patch 4), gyre's own, for CI-sized runs
//! and CPU budgets. Another input size takes the position embeddings resampled bicubically
//! ([`resample_pos_embed`], timm's `resample_abs_pos_embed`). Stochastic depth (`drop_path`) drops
//! each sample's residual branches with the rate rising linearly over the blocks, keyed so that
//! runs repeat: on a caller's key ([`ViT::forward_drop`]), or in training on the step key the
//! trainer arms ([`ViT::arm_drop_path`]) and the forward's rank within the step
//! ([`ViT::forward_t`]).

use crate::error::EncoderError;
use crate::init::Init;
use crate::params::{ParamKind, ParamStore};
use gyre_kernels::{candle::bail, DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Architecture of a ViT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Side of the square input the position embeddings are laid out for.
    pub img_size: usize,
    pub patch_size: usize,
    pub in_channels: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// Hidden width of each MLP as a multiple of `embed_dim` (4).
    pub mlp_ratio: f64,
    /// The stochastic-depth rate of the last block (0: off).
    #[serde(default)]
    pub drop_path_rate: f64,
}

impl VitConfig {
    /// A named preset for `img_size`-pixel inputs of `in_channels` channels.
    pub fn preset(
        name: &str,
        img_size: usize,
        in_channels: usize,
    ) -> std::result::Result<Self, EncoderError> {
        let (embed_dim, depth, num_heads, patch_size) = match name {
            "vit-tiny-16" => (192, 12, 3, 16),
            "vit-small-16" => (384, 12, 6, 16),
            "vit-tiny-4" => (192, 12, 3, 4),
            "vit-small-4" => (384, 12, 6, 4),
            "vit-micro-4" => (64, 4, 2, 4),
            _ => {
                return Err(EncoderError::Config(format!(
                    "unknown ViT `{name}`: expected vit-tiny-16, vit-small-16, vit-tiny-4, vit-small-4 or vit-micro-4"
                )))
            }
        };
        let cfg = Self {
            img_size,
            patch_size,
            in_channels,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            drop_path_rate: 0.0,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The shape checks: the patch divides the image, the heads divide the width.
    pub fn check(&self) -> std::result::Result<(), EncoderError> {
        let bad = |m: String| Err(EncoderError::Config(m));
        if self.patch_size == 0
            || self.img_size == 0
            || !self.img_size.is_multiple_of(self.patch_size)
        {
            return bad(format!(
                "patch size {} does not divide the {}-pixel images",
                self.patch_size, self.img_size
            ));
        }
        if self.num_heads == 0
            || self.embed_dim == 0
            || !self.embed_dim.is_multiple_of(self.num_heads)
        {
            return bad(format!(
                "{} heads do not divide the width {}",
                self.num_heads, self.embed_dim
            ));
        }
        if self.depth == 0
            || self.in_channels == 0
            || self.mlp_ratio.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad(format!(
                "depth, channels and mlp_ratio must be positive: {self:?}"
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!(
                "drop_path_rate must be in [0, 1), got {}",
                self.drop_path_rate
            ));
        }
        Ok(())
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
}

struct Linear {
    w: Var,
    b: Var,
}

impl Linear {
    fn new(
        store: &mut ParamStore,
        init: &Init,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        let wn = format!("{name}.weight");
        let w = store.add(
            &wn,
            init.trunc_normal(&wn, &[d_out, d_in], 0.02)?,
            ParamKind::Weight,
        )?;
        let b = store.add(
            format!("{name}.bias"),
            init.constant(&[d_out], 0.0)?,
            ParamKind::Bias,
        )?;
        Ok(Self { w, b })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())
    }
}

struct LayerNorm {
    w: Var,
    b: Var,
}

impl LayerNorm {
    fn new(store: &mut ParamStore, init: &Init, name: &str, d: usize) -> Result<Self> {
        let w = store.add(
            format!("{name}.weight"),
            init.constant(&[d], 1.0)?,
            ParamKind::NormWeight,
        )?;
        let b = store.add(
            format!("{name}.bias"),
            init.constant(&[d], 0.0)?,
            ParamKind::NormBias,
        )?;
        Ok(Self { w, b })
    }

    /// timm's LayerNorm (eps 1e-6, biased variance), from differentiable ops.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        c.broadcast_div(&(var + 1e-6)?.sqrt()?)?
            .broadcast_mul(self.w.as_tensor())?
            .broadcast_add(self.b.as_tensor())
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    /// This block's stochastic-depth rate.
    drop: f64,
}

impl Block {
    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let h = self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, h, d / h))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / ((d / h) as f64).sqrt();
        let a = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let a = gyre_kernels::nn::ops::softmax(&a, D::Minus1)?;
        let o = a
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, d))?;
        self.proj.forward(&o)
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }

    /// `x + a(norm1 x)`, then `+ m(norm2 ·)`; each branch scaled by `keep[i]` (0 or
    /// `1/(1 − rate)` per sample) when given.
    fn forward(&self, x: &Tensor, keep: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let a = self.attention(&self.norm1.forward(x)?)?;
        let a = match keep {
            Some((k, _)) => a.broadcast_mul(k)?,
            None => a,
        };
        let x = (x + a)?;
        let m = self.mlp(&self.norm2.forward(&x)?)?;
        let m = match keep {
            Some((_, k)) => m.broadcast_mul(k)?,
            None => m,
        };
        x + m
    }
}

/// A Vision Transformer.
pub struct ViT {
    cfg: VitConfig,
    cls_token: Var,
    pos_embed: Var,
    patch_w: Var,
    patch_b: Var,
    blocks: Vec<Block>,
    norm: LayerNorm,
    store: ParamStore,
    /// Training's stochastic-depth key: the step key [`Self::arm_drop_path`] set, and how many
    /// training-mode forwards have drawn from it since.
    drop_step: Mutex<Option<(u64, u64)>>,
}

impl ViT {
    /// `seed` keys the initial values (timm's: truncated normal 0.02 for the linear layers and the
    /// position embeddings, 1e-6 for the class token, zeros for biases, ones for norms).
    pub fn new(
        cfg: VitConfig,
        seed: u64,
        device: &Device,
    ) -> std::result::Result<Self, EncoderError> {
        cfg.check()?;
        Ok(Self::build(cfg, seed, device)?)
    }

    fn build(cfg: VitConfig, seed: u64, device: &Device) -> Result<Self> {
        let init = Init::new(seed, device);
        let mut store = ParamStore::new();
        let d = cfg.embed_dim;
        let n = cfg.grid() * cfg.grid();
        let cls_token = store.add(
            "cls_token",
            init.trunc_normal("cls_token", &[1, 1, d], 1e-6)?,
            ParamKind::Embedding,
        )?;
        let pos_embed = store.add(
            "pos_embed",
            init.trunc_normal("pos_embed", &[1, n + 1, d], 0.02)?,
            ParamKind::Embedding,
        )?;
        let (p, c) = (cfg.patch_size, cfg.in_channels);
        let fan_in = c * p * p;
        let patch_w = store.add(
            "patch_embed.proj.weight",
            init.linear_uniform("patch_embed.proj.weight", &[d, c, p, p], fan_in)?,
            ParamKind::Weight,
        )?;
        let patch_b = store.add(
            "patch_embed.proj.bias",
            init.linear_uniform("patch_embed.proj.bias", &[d], fan_in)?,
            ParamKind::Bias,
        )?;
        let mut blocks = Vec::new();
        for i in 0..cfg.depth {
            let pre = format!("blocks.{i}");
            let rate = if cfg.depth > 1 {
                cfg.drop_path_rate * i as f64 / (cfg.depth - 1) as f64
            } else {
                cfg.drop_path_rate
            };
            blocks.push(Block {
                norm1: LayerNorm::new(&mut store, &init, &format!("{pre}.norm1"), d)?,
                qkv: Linear::new(&mut store, &init, &format!("{pre}.attn.qkv"), d, 3 * d)?,
                proj: Linear::new(&mut store, &init, &format!("{pre}.attn.proj"), d, d)?,
                norm2: LayerNorm::new(&mut store, &init, &format!("{pre}.norm2"), d)?,
                fc1: Linear::new(
                    &mut store,
                    &init,
                    &format!("{pre}.mlp.fc1"),
                    d,
                    cfg.mlp_hidden(),
                )?,
                fc2: Linear::new(
                    &mut store,
                    &init,
                    &format!("{pre}.mlp.fc2"),
                    cfg.mlp_hidden(),
                    d,
                )?,
                heads: cfg.num_heads,
                drop: rate,
            });
        }
        let norm = LayerNorm::new(&mut store, &init, "norm", d)?;
        Ok(Self {
            cfg,
            cls_token,
            pos_embed,
            patch_w,
            patch_b,
            blocks,
            norm,
            store,
            drop_step: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The width of the class-token feature.
    pub fn feature_dim(&self) -> usize {
        self.cfg.embed_dim
    }

    /// Parameters under timm's names.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// The tokens after the final norm, `[B, 1 + N, D]` (timm's `forward_features`), for inputs
    /// `[B, C, H, W]` with `H`, `W` multiples of the patch; another grid than the configured one
    /// resamples the position embeddings.
    pub fn tokens(&self, x: &Tensor, drop_key: Option<u64>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if c != self.cfg.in_channels || h % p != 0 || w % p != 0 {
            bail!(
                "vit: input [{b}, {c}, {h}, {w}] does not fit {} channels in {p}-pixel patches",
                self.cfg.in_channels
            );
        }
        let (gh, gw) = (h / p, w / p);
        let d = self.cfg.embed_dim;
        // Patchify as the stride-p convolution: [B, C, gh, p, gw, p] → [B, gh·gw, C·p·p].
        let patches = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * p * p))?;
        let wp = self.patch_w.as_tensor().reshape((d, c * p * p))?;
        let t = patches
            .broadcast_matmul(&wp.t()?)?
            .broadcast_add(self.patch_b.as_tensor())?;
        let cls = self.cls_token.as_tensor().broadcast_as((b, 1, d))?;
        let t = Tensor::cat(&[&cls, &t], 1)?;
        let g = self.cfg.grid();
        let pos = if (gh, gw) == (g, g) {
            self.pos_embed.as_tensor().clone()
        } else {
            resample_pos_embed(self.pos_embed.as_tensor(), (g, g), (gh, gw))?
        };
        let mut t = t.broadcast_add(&pos)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let keep = match drop_key {
                Some(key) if blk.drop > 0.0 => Some([
                    keep_mask(b, blk.drop, [key, i as u64, 0], x.device(), x.dtype())?,
                    keep_mask(b, blk.drop, [key, i as u64, 1], x.device(), x.dtype())?,
                ]),
                _ => None,
            };
            t = blk.forward(&t, keep.as_ref().map(|[a, m]| (a, m)))?;
        }
        self.norm.forward(&t)
    }

    /// The class-token feature `[B, D]`, without stochastic depth.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        class_token(&self.tokens(x, None)?)
    }

    /// [`Self::forward`] with stochastic depth, its draws keyed on `key` (say, the seed and the
    /// step): the same key, the same dropped branches.
    pub fn forward_drop(&self, x: &Tensor, key: u64) -> Result<Tensor> {
        class_token(&self.tokens(x, Some(key))?)
    }

    /// Arms (`Some(step key)`) or disarms (`None`) stochastic depth in training-mode forwards
    /// ([`Self::forward_t`], [`Self::tokens_t`]); the trainer arms it before each step with a key
    /// of the seed and the step, so that a run repeats and resumes exactly. Unarmed, or at
    /// `drop_path_rate = 0`, nothing is dropped; a momentum teacher, never armed, never drops.
    pub fn arm_drop_path(&self, step_key: Option<u64>) {
        *self.drop_step.lock().unwrap_or_else(|e| e.into_inner()) = step_key.map(|k| (k, 0));
    }

    /// The key of the next training-mode forward: the armed step key and the forward's rank in
    /// the step (the views of a step drop different branches), or `None` (nothing to drop).
    fn next_drop_key(&self) -> Option<u64> {
        if self.cfg.drop_path_rate == 0.0 {
            return None;
        }
        let mut state = self.drop_step.lock().unwrap_or_else(|e| e.into_inner());
        let (key, calls) = state.as_mut()?;
        *calls += 1;
        use rand::RngCore;
        Some(gyre_rng::stream([*key, *calls, gyre_rng::tag(b"dropcall"), 0]).next_u64())
    }

    /// [`Self::tokens`] in training (`train`: stochastic depth when armed) or evaluation mode.
    pub fn tokens_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let key = if train { self.next_drop_key() } else { None };
        self.tokens(x, key)
    }

    /// The class-token feature in training (`train`: stochastic depth when armed) or evaluation
    /// mode (as [`Self::forward`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        class_token(&self.tokens_t(x, train)?)
    }
}

/// The class token's row `[B, D]` of tokens `[B, 1 + N, D]`.
fn class_token(tokens: &Tensor) -> Result<Tensor> {
    tokens.narrow(1, 0, 1)?.squeeze(1)
}

/// Per-sample keep factors `[B, 1, 1]`: 0 with probability `rate`, else `1/(1 − rate)`.
fn keep_mask(b: usize, rate: f64, key: [u64; 3], dev: &Device, dtype: DType) -> Result<Tensor> {
    use rand::Rng;
    let mut rng = gyre_rng::stream([key[0], key[1], gyre_rng::tag(b"droppath"), key[2]]);
    let scale = 1.0 / (1.0 - rate);
    let v: Vec<f32> = (0..b)
        .map(|_| {
            if rng.gen::<f64>() < rate {
                0.0
            } else {
                scale as f32
            }
        })
        .collect();
    Tensor::from_vec(v, (b, 1, 1), dev)?.to_dtype(dtype)
}

/// The position embeddings `[1, 1 + gh·gw, D]` of a `from` grid resampled to a `to` grid by
/// bicubic interpolation (PyTorch's `F.interpolate(mode="bicubic", align_corners=False)`, A =
/// −0.75, edge pixels repeated), the class token's row kept: timm's `resample_abs_pos_embed`.
/// Not differentiable (a re-layout of learned values, as timm applies it when loading).
pub fn resample_pos_embed(
    pos: &Tensor,
    from: (usize, usize),
    to: (usize, usize),
) -> Result<Tensor> {
    let (_, n, d) = pos.dims3()?;
    if n != 1 + from.0 * from.1 {
        bail!(
            "vit: {n} position embeddings for a {}×{} grid and a class token",
            from.0,
            from.1
        );
    }
    let v = pos
        .detach()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let src = |y: usize, x: usize, c: usize| v[(1 + y * from.1 + x) * d + c];
    let cubic = |t: f64| -> [f64; 4] {
        let a = -0.75;
        let w1 = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        let w2 = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
        [w2(t + 1.0), w1(t), w1(1.0 - t), w2(2.0 - t)]
    };
    let taps = |o: usize, n_in: usize, n_out: usize| -> ([usize; 4], [f64; 4]) {
        let s = n_in as f64 / n_out as f64;
        let x = (o as f64 + 0.5) * s - 0.5;
        let f = x.floor();
        let w = cubic(x - f);
        let i = |k: i64| (f as i64 + k).clamp(0, n_in as i64 - 1) as usize;
        ([i(-1), i(0), i(1), i(2)], w)
    };
    let mut out = vec![0f32; (1 + to.0 * to.1) * d];
    out[..d].copy_from_slice(&v[..d]);
    for oy in 0..to.0 {
        let (ys, wy) = taps(oy, from.0, to.0);
        for ox in 0..to.1 {
            let (xs, wx) = taps(ox, from.1, to.1);
            for c in 0..d {
                let mut acc = 0f64;
                for (y, wyv) in ys.iter().zip(wy) {
                    for (x, wxv) in xs.iter().zip(wx) {
                        acc += wyv * wxv * src(*y, *x, c) as f64;
                    }
                }
                out[(1 + oy * to.1 + ox) * d + c] = acc as f32;
            }
        }
    }
    Tensor::from_vec(out, (1, 1 + to.0 * to.1, d), pos.device())?.to_dtype(pos.dtype())
}
