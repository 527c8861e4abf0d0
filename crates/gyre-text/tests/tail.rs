//! `train_layers`: MiniLM's first layers frozen (candle-transformers) and its last ones as
//! gyre's trainable tail give the whole model's embeddings, and the tail's weights get the
//! gradient a finite difference measures (candle-nn's fused LayerNorm would give none).

use gyre_kernels::candle::{Device, Tensor};
use gyre_text::{pool, TextModel, TextSpec};
use std::path::PathBuf;

fn spec() -> TextSpec {
    TextSpec {
        hub_cache: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/hf/hub")),
        ..TextSpec::default()
    }
}

const TEXTS: [&str; 3] = [
    "The weather is lovely today.",
    "a sandal: a shoe consisting of a sole fastened by straps",
    "He drove to the stadium.",
];

#[test]
fn trunk_and_tail_give_the_whole_models_embeddings() {
    let whole = TextModel::load(&spec(), &Device::Cpu).expect("run `cargo xtask data minilm`");
    let want: Vec<Vec<f32>> = whole.embed(&TEXTS).unwrap().embeddings.to_vec2().unwrap();
    for k in [1, 2, 6] {
        let (trunk, tail) = TextModel::load_split(&spec(), &Device::Cpu, k).unwrap();
        let tail = tail.expect("k > 0");
        assert_eq!(tail.params().all().len(), 16 * k, "16 tensors per layer");
        let h = trunk.hidden(&TEXTS).unwrap();
        let got: Vec<Vec<f32>> = pool(&tail.forward(&h.states, &h.mask).unwrap(), &h.mask)
            .unwrap()
            .to_vec2()
            .unwrap();
        let d = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "k = {k}: {d}");
    }
    let e = TextModel::load_split(&spec(), &Device::Cpu, 7)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("text.train_layers") && e.contains("more than the model's 6 layers"),
        "{e}"
    );
}

#[test]
fn the_tail_gets_the_finite_difference_gradient() {
    let (trunk, tail) = TextModel::load_split(&spec(), &Device::Cpu, 1).unwrap();
    let tail = tail.unwrap();
    let h = trunk.hidden(&TEXTS).unwrap();
    // A scalar of the embeddings: their similarity to a fixed direction.
    let dir = Tensor::arange(0f32, 384f32, &Device::Cpu)
        .unwrap()
        .sin()
        .unwrap();
    let loss = |t: &gyre_text::bert_tail::BertTail| -> Tensor {
        pool(&t.forward(&h.states, &h.mask).unwrap(), &h.mask)
            .unwrap()
            .broadcast_mul(&dir)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss(&tail).backward().unwrap();
    for name in [
        "encoder.layer.5.output.LayerNorm.weight",
        "encoder.layer.5.attention.self.query.weight",
        "encoder.layer.5.intermediate.dense.bias",
    ] {
        let var = &tail
            .params()
            .all()
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .var;
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient")
            .flatten_all()
            .unwrap();
        let g: Vec<f32> = g.to_vec1().unwrap();
        // The largest entry, against a central difference.
        let (i, &gi) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert!(gi.abs() > 1e-4, "{name}: gradient {gi}");
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let eps = 1e-2f32;
        let at = |delta: f32| -> f32 {
            let mut v = orig.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss(&tail).to_scalar::<f32>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        at(0.0);
        assert!(
            (fd - gi).abs() <= 0.02 * gi.abs().max(1e-3),
            "{name}[{i}]: autograd {gi}, finite difference {fd}"
        );
    }
}
