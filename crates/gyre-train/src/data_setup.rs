//! Turns a recipe's `[data]` section into the pretraining set, the kNN bank and the kNN queries.

use crate::recipe::{DataKind, KnnBank, Recipe};
use anyhow::Context;
use gyre_data::{fashion_mnist, ImageSet};
use std::sync::Arc;

/// The three image sets a run needs.
pub struct RunData {
    pub pretrain: Arc<ImageSet>,
    pub bank: Arc<ImageSet>,
    pub queries: Arc<ImageSet>,
    /// One line for the summary: what was used for what.
    pub description: String,
    pub dataset: String,
}

/// Images 0..8000 of the embedded split pretrain (and form the bank), 8000..10000 are queries.
pub const EMBEDDED_PRETRAIN: usize = 8000;

pub fn load(recipe: &Recipe) -> anyhow::Result<RunData> {
    let d = &recipe.data;
    let (train, test, dataset) = match d.kind {
        DataKind::FashionMnistEmbedded => {
            let all = fashion_mnist::embedded()?;
            let train = all.select(
                "fashion-mnist-embedded[0:8000]",
                &(0..EMBEDDED_PRETRAIN).collect::<Vec<_>>(),
            );
            let test = all.select(
                "fashion-mnist-embedded[8000:10000]",
                &(EMBEDDED_PRETRAIN..all.len()).collect::<Vec<_>>(),
            );
            (train, test, "fashion-mnist-embedded")
        }
        DataKind::FashionMnist => {
            let dir = fashion_mnist::locate(d.root.as_deref())?;
            let train = fashion_mnist::load_split(&dir, "train")
                .with_context(|| format!("loading Fashion-MNIST from {}", dir.display()))?;
            let test = fashion_mnist::load_split(&dir, "t10k")?;
            (train, test, "fashion-mnist")
        }
    };
    let train = Arc::new(train);
    let pretrain = match d.subset {
        Some(n) if n < train.len() => Arc::new(train.head(n)),
        Some(n) => anyhow::bail!(
            "data.subset: {n} is more than the {} training images",
            train.len()
        ),
        None => train.clone(),
    };
    let bank = match d.knn_bank {
        KnnBank::Pretrain => pretrain.clone(),
        KnnBank::Train => train.clone(),
    };
    let description = format!(
        "pretrain on {} ({} images); kNN bank {} ({} images); kNN queries {} ({} images)",
        pretrain.name,
        pretrain.len(),
        bank.name,
        bank.len(),
        test.name,
        test.len()
    );
    Ok(RunData {
        pretrain,
        bank,
        queries: Arc::new(test),
        description,
        dataset: dataset.to_string(),
    })
}
