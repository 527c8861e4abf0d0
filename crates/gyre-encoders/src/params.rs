//! An ordered store of named parameters and buffers: the single place where a model's tensors
//! live, iterated in a stable (insertion) order for optimisers, checkpoints and exports.

use gyre_kernels::{Tensor, Var};

/// What a tensor is, which decides whether it trains and whether weight decay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A conv or linear weight: trained, decayed.
    Weight,
    /// A conv or linear bias: trained; decay excludable.
    Bias,
    /// A normalisation layer's scale: trained; decay excludable.
    NormWeight,
    /// A normalisation layer's shift: trained; decay excludable.
    NormBias,
    /// A learned class token or position embedding (a ViT's): trained; decay excludable, as
    /// timm's `no_weight_decay` (`pos_embed`, `cls_token`).
    Embedding,
    /// A running statistic or counter: saved, never trained.
    Buffer,
}

impl ParamKind {
    pub fn trains(self) -> bool {
        self != ParamKind::Buffer
    }
    /// Whether "exclude BatchNorm and bias from weight decay" exempts this tensor: biases,
    /// normalisation scales and shifts (BatchNorm, LayerNorm), and learned embeddings.
    pub fn is_bn_or_bias(self) -> bool {
        matches!(
            self,
            ParamKind::Bias | ParamKind::NormWeight | ParamKind::NormBias | ParamKind::Embedding
        )
    }
}

/// One named tensor.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
}

/// Parameters and buffers of a model, in the order they were created.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    entries: Vec<Param>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor under `name`; returns the `Var` the layer keeps.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        value: Tensor,
        kind: ParamKind,
    ) -> gyre_kernels::Result<Var> {
        let var = Var::from_tensor(&value)?;
        self.entries.push(Param {
            name: name.into(),
            var: var.clone(),
            kind,
        });
        Ok(var)
    }

    /// Every tensor, parameters and buffers, in creation order.
    pub fn all(&self) -> &[Param] {
        &self.entries
    }

    /// The trainable parameters, in creation order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.entries.iter().filter(|p| p.kind.trains())
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.entries.iter().find(|p| p.name == name)
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.trainable().map(|p| p.var.elem_count()).sum()
    }

    /// Appends an existing entry under a new name (shares the `Var`).
    pub fn push_renamed(&mut self, p: &Param, name: &str) {
        self.entries.push(Param {
            name: name.to_string(),
            var: p.var.clone(),
            kind: p.kind,
        });
    }

    /// Appends every entry of `other` under `prefix.` (used to combine backbone and head).
    pub fn extend_prefixed(&mut self, prefix: &str, other: &ParamStore) {
        for p in &other.entries {
            self.entries.push(Param {
                name: format!("{prefix}.{}", p.name),
                var: p.var.clone(),
                kind: p.kind,
            });
        }
    }
}
