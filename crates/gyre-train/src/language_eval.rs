//! The evaluations of IRC's language level (`gyre eval --language`), none of which uses an
//! image–text pair: zero-shot classification by class prompts in the learned shared space, the
//! same with the projections at their init, an unsupervised matching baseline (spherical k-means
//! of the image features, clusters named by a Hungarian assignment to the class prompts), the
//! label-Hungarian clustering accuracy as that baseline's ceiling, and the precision of each
//! test image's auto-paired text (a WordNet hyponym of its class's synsets, `gyre_text::prompts`).

use crate::checkpoint;
use crate::data_setup;
use crate::irc::language::{LanguageHeads, TextSide};
use crate::irc::IrcLevel;
use crate::matching::{hungarian_max, kmeans_cosine};
use crate::recipe::Recipe;
use anyhow::Context;
use gyre_data::wordnet::WordNet;
use gyre_kernels::{Device, Tensor, D};
use gyre_text::prompts::{classes_for, ClassText, PromptSet};
use serde_json::json;
use std::path::Path;

/// What `evaluate` reports besides its rows: a few test images and their top texts.
pub struct Example {
    /// Index in the test set.
    pub index: usize,
    pub class: String,
    /// The corpus's best texts for it in the shared space, with cosine.
    pub texts: Vec<(String, f32)>,
}

pub struct LanguageReport {
    /// JSON rows: `zero_shot`, `kmeans_hungarian`, `cluster_ceiling`, `auto_pair_precision`.
    pub rows: Vec<serde_json::Value>,
    pub examples: Vec<Example>,
    /// The test set the examples index.
    pub images: std::sync::Arc<gyre_data::ImageSet>,
}

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct LanguageEvalOptions {
    /// ρ of the precision: the share of test images (highest top-1 cosine) whose text is scored;
    /// default the run's `irc.keep_fraction`.
    pub keep_fraction: Option<f64>,
    /// Test images shown per class, and texts per image.
    pub examples_per_class: usize,
    pub texts_per_example: usize,
    pub kmeans_restarts: usize,
}

impl Default for LanguageEvalOptions {
    fn default() -> Self {
        Self {
            keep_fraction: None,
            examples_per_class: 2,
            texts_per_example: 3,
            kmeans_restarts: 10,
        }
    }
}

/// Every evaluation of the language-level run in `run_dir` on its recipe's test set.
pub fn evaluate(
    run_dir: &Path,
    opts: &LanguageEvalOptions,
    device: &Device,
) -> anyhow::Result<LanguageReport> {
    let recipe = Recipe::load(&run_dir.join("recipe.toml"), &[])?;
    let irc = recipe
        .irc
        .as_ref()
        .filter(|i| i.level == IrcLevel::Language)
        .with_context(|| format!("{}: not an irc.level = \"language\" run", run_dir.display()))?;
    let text_cfg = recipe.text.as_ref().context("recipe.toml: no [text]")?;
    let data = data_setup::load(&recipe)?;
    let (_, queries) = data
        .eval
        .clone()
        .context("the run's data has no labelled test set")?;
    let classes = classes_for(&queries.classes).with_context(|| {
        format!(
            "{}: zero-shot needs Fashion-MNIST's or CIFAR-10's classes, got {:?}",
            queries.name, queries.classes
        )
    })?;
    let labels: Vec<u32> = queries.labels().context("unlabelled test set")?.to_vec();
    let loaded = checkpoint::load(run_dir, device)?;
    let wp = checkpoint::weights_path(run_dir);
    let net = checkpoint::backbone_from(&recipe, &loaded.tensors, &wp, device)?;
    let side = TextSide::load(text_cfg, &mut |_, _| {})?;
    if let Some(t) = &side.tail {
        // The trained last layers of the text model (`text.train_layers`).
        let mut store = gyre_encoders::ParamStore::new();
        store.extend_prefixed("text_tail", t.layers.params());
        checkpoint::restore_params(&store, &loaded.tensors, &wp)?;
    }
    // The corpus in the text model's space: the cache, or with a trained tail every text again.
    let corpus_embeddings = match &side.tail {
        None => side.embeddings.to_device(device)?,
        Some(_) => {
            let texts: Vec<&str> = side.corpus.texts().iter().map(String::as_str).collect();
            let parts = texts
                .chunks(256)
                .map(|c| Ok(side.embed_live(c, device)?.detach()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        }
    };
    let wn = WordNet::read(&text_cfg.wordnet)?;
    let text_dim = side.embeddings.dim(1)?;
    let trained = LanguageHeads::new(irc, net.feature_dim(), text_dim, recipe.seed, device)?;
    checkpoint::restore_params(&trained.params(), &loaded.tensors, &wp)?;
    let init = LanguageHeads::new(irc, net.feature_dim(), text_dim, recipe.seed, device)?;
    let raw = crate::eval::raw_backbone_features(&net, &queries, &data.mean, &data.std, device)?;
    let n = queries.len();
    let feats = Tensor::from_vec(raw, (n, net.feature_dim()), device)?;
    let unit = gyre_losses::l2_normalize(&feats)?;
    let (clusters, _) = kmeans_cosine(
        &unit.flatten_all()?.to_vec1::<f32>()?,
        net.feature_dim(),
        classes.len(),
        50,
        opts.kmeans_restarts,
        recipe.seed,
    );
    let k = classes.len();
    let mut rows = Vec::new();
    // The ceiling of any one-to-one naming of these clusters: labels used only to score.
    let mut counts = vec![0f64; k * k];
    for (&c, &l) in clusters.iter().zip(&labels) {
        counts[c * k + l as usize] += 1.0;
    }
    let best = hungarian_max(&counts, k);
    let ceiling: f64 = (0..k).map(|c| counts[c * k + best[c]]).sum::<f64>() / n as f64;
    rows.push(json!({"kind": "cluster_ceiling", "top1": ceiling, "clusters": k}));
    let keep = opts.keep_fraction.unwrap_or(irc.keep_fraction);
    let mut examples = Vec::new();
    for (heads, which) in [(&trained, "trained"), (&init, "init")] {
        let img = heads.images(&feats, false)?;
        // Each prompt set's class weights; templates + gloss also name the k-means clusters.
        let mut ensemble = None;
        for set in [
            PromptSet::TemplatesAndGloss,
            PromptSet::Templates,
            PromptSet::Gloss,
        ] {
            let w = class_weights(heads, &side, classes, set, &wn, device)?;
            let pred: Vec<u32> = img.matmul(&w.t()?)?.argmax(D::Minus1)?.to_vec1()?;
            rows.push(json!({
                "kind": "zero_shot", "heads": which, "prompts": set.name(),
                "top1": accuracy(&pred, &labels),
            }));
            if set == PromptSet::TemplatesAndGloss {
                ensemble = Some(w);
            }
        }
        // k-means clusters named by the Hungarian assignment of their mean embedding to the
        // class weights (templates + gloss).
        let w = ensemble.expect("the first prompt set");
        let img_rows: Vec<Vec<f32>> = img.to_vec2()?;
        let d = img_rows[0].len();
        let mut centre = vec![0f32; k * d];
        for (r, &c) in img_rows.iter().zip(&clusters) {
            for (s, v) in centre[c * d..(c + 1) * d].iter_mut().zip(r) {
                *s += v;
            }
        }
        let centre = gyre_losses::l2_normalize(&Tensor::from_vec(centre, (k, d), device)?)?;
        let sim: Vec<f64> = centre
            .matmul(&w.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let name = hungarian_max(&sim, k);
        let pred: Vec<u32> = clusters.iter().map(|&c| name[c] as u32).collect();
        rows.push(json!({
            "kind": "kmeans_hungarian", "heads": which, "top1": accuracy(&pred, &labels),
        }));
        let (mut row, ex) = precision(
            heads,
            &img,
            &side,
            &corpus_embeddings,
            classes,
            &labels,
            keep,
            &wn,
            opts,
        )?;
        row["heads"] = json!(which);
        rows.push(row);
        if which == "trained" {
            examples = ex;
        }
    }
    Ok(LanguageReport {
        rows,
        examples,
        images: queries,
    })
}

fn accuracy(pred: &[u32], labels: &[u32]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
}

/// Each class's prompts through the text model and `heads`, averaged and normalised: `[k, d]`.
fn class_weights(
    heads: &LanguageHeads,
    side: &TextSide,
    classes: &[ClassText],
    set: PromptSet,
    wn: &WordNet,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let mut rows = Vec::new();
    for c in classes {
        let prompts = c.prompts(set, wn);
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let e = side.embed_live(&refs, device)?.detach();
        let t = heads.texts(&e, false)?.mean(0)?;
        rows.push(t);
    }
    Ok(gyre_losses::l2_normalize(&Tensor::stack(&rows, 0)?)?)
}

/// Each test image's top-1 corpus text in the shared space; of the top ρ by cosine, the share
/// whose synset is in its class's closure (WordNet corpora only), beside chance.
#[allow(clippy::too_many_arguments)]
fn precision(
    heads: &LanguageHeads,
    img: &Tensor,
    side: &TextSide,
    corpus_embeddings: &Tensor,
    classes: &[ClassText],
    labels: &[u32],
    keep: f64,
    wn: &WordNet,
    opts: &LanguageEvalOptions,
) -> anyhow::Result<(serde_json::Value, Vec<Example>)> {
    let n = labels.len();
    let texts = heads.texts(corpus_embeddings, false)?;
    let (mut top, mut score) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let per = opts.texts_per_example.max(1);
    let mut shown: Vec<usize> = Vec::new();
    let mut per_class = vec![0usize; classes.len()];
    for (i, &l) in labels.iter().enumerate() {
        if per_class[l as usize] < opts.examples_per_class {
            per_class[l as usize] += 1;
            shown.push(i);
        }
    }
    let mut examples = Vec::new();
    for start in (0..n).step_by(256) {
        let len = (n - start).min(256);
        let sim = img.narrow(0, start, len)?.matmul(&texts.t()?)?;
        let (best, arg) = (sim.max(D::Minus1)?, sim.argmax(D::Minus1)?);
        top.extend(arg.to_vec1::<u32>()?);
        score.extend(best.to_vec1::<f32>()?);
        for &i in shown.iter().filter(|&&i| i >= start && i < start + len) {
            let row: Vec<f32> = sim.get(i - start)?.to_vec1()?;
            let mut order: Vec<usize> = (0..row.len()).collect();
            order
                .select_nth_unstable_by(per.min(row.len()) - 1, |a, b| row[*b].total_cmp(&row[*a]));
            order.truncate(per);
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            examples.push(Example {
                index: i,
                class: classes[labels[i] as usize].class.to_string(),
                texts: order
                    .into_iter()
                    .map(|j| (side.corpus.texts()[j].clone(), row[j]))
                    .collect(),
            });
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| score[*b].total_cmp(&score[*a]).then(a.cmp(b)));
    let kept = ((keep * n as f64).ceil() as usize).clamp(1, n);
    let closures: Vec<_> = classes.iter().map(|c| c.closure(wn)).collect();
    let ids = side.corpus.ids();
    let wordnet_ids = ids
        .iter()
        .all(|id| id.len() == 9 && id.as_bytes()[0].is_ascii_lowercase());
    // Chance: the share of the corpus's own texts that count for the class.
    let in_corpus: Vec<usize> = closures
        .iter()
        .map(|cl| {
            ids.iter()
                .filter(|id| {
                    id.starts_with('n') && id[1..].parse::<u32>().is_ok_and(|o| cl.contains(&o))
                })
                .count()
        })
        .collect();
    let (mut hit, mut chance) = (0usize, 0f64);
    let mut per_class_hit = vec![(0usize, 0usize); classes.len()];
    let mut distinct = std::collections::HashSet::new();
    for &i in &order[..kept] {
        let c = labels[i] as usize;
        let j = top[i] as usize;
        distinct.insert(j);
        let ok = wordnet_ids
            && ids[j].starts_with('n')
            && ids[j][1..]
                .parse::<u32>()
                .is_ok_and(|o| closures[c].contains(&o));
        hit += usize::from(ok);
        per_class_hit[c].1 += 1;
        per_class_hit[c].0 += usize::from(ok);
        chance += in_corpus[c] as f64 / ids.len() as f64;
    }
    let row = json!({
        "kind": "auto_pair_precision",
        "keep_fraction": keep,
        "images": kept,
        "precision": wordnet_ids.then_some(hit as f64 / kept as f64),
        "chance": wordnet_ids.then_some(chance / kept as f64),
        "distinct_texts": distinct.len(),
        "per_class": classes.iter().zip(&per_class_hit).map(|(c, (h, of))| json!({
            "class": c.class, "images": of,
            "precision": (*of > 0 && wordnet_ids).then(|| *h as f64 / *of as f64),
        })).collect::<Vec<_>>(),
    });
    Ok((row, examples))
}
