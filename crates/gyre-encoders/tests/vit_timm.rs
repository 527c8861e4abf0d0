//! The ViT against timm itself: a tiny `VisionTransformer` made by timm (fixture written by
//! `tests/vit_timm_fixture.py`) loads into gyre's `ViT` by timm's names, gives timm's
//! `forward_features` for the same input, and resamples its position embeddings as PyTorch's
//! bicubic interpolation does; the gradient reaches every parameter; bad shapes are refused.

use gyre_encoders::weights::{load_into, read_tensors};
use gyre_encoders::{resample_pos_embed, ViT, VitConfig};
use gyre_kernels::{Device, Tensor};
use std::path::PathBuf;

fn fixture() -> (PathBuf, std::collections::HashMap<String, Tensor>) {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit_tiny_timm.safetensors");
    let t = read_tensors(&p, &Device::Cpu).unwrap();
    (p, t)
}

fn tiny() -> VitConfig {
    VitConfig {
        img_size: 8,
        patch_size: 4,
        in_channels: 1,
        embed_dim: 16,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 4.0,
        drop_path_rate: 0.0,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn timms_weights_give_timms_tokens() {
    let (path, t) = fixture();
    let vit = ViT::new(tiny(), 0, &Device::Cpu).unwrap();
    // Every timm tensor has a gyre parameter of the same name and shape, and no other.
    load_into(vit.params(), &t, "model.", &path).unwrap();
    let n_timm = t.keys().filter(|k| k.starts_with("model.")).count();
    assert_eq!(vit.params().all().len(), n_timm);
    let got = vit.tokens(&t["input"], None).unwrap();
    let d = max_diff(&got, &t["tokens"]);
    assert!(d < 1e-5, "max |gyre − timm| = {d}");
    let cls = vit.forward(&t["input"]).unwrap();
    assert_eq!(cls.dims(), [2, 16]);
    let d = max_diff(
        &cls,
        &t["tokens"].narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
    );
    assert!(d < 1e-5, "{d}");
}

#[test]
fn position_embeddings_resample_as_pytorchs_bicubic() {
    let (_, t) = fixture();
    let got = resample_pos_embed(&t["model.pos_embed"], (2, 2), (3, 3)).unwrap();
    let d = max_diff(&got, &t["pos_3x3"]);
    assert!(d < 1e-6, "{d}");
    // The same grid is the identity.
    let same = resample_pos_embed(&t["model.pos_embed"], (2, 2), (2, 2)).unwrap();
    assert!(max_diff(&same, &t["model.pos_embed"]) < 1e-6);
    // A 12-pixel input (3×3 patches) runs on the resampled embeddings.
    let (path, t) = fixture();
    let vit = ViT::new(tiny(), 0, &Device::Cpu).unwrap();
    load_into(vit.params(), &t, "model.", &path).unwrap();
    let x = Tensor::zeros((1, 1, 12, 12), gyre_kernels::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(vit.tokens(&x, None).unwrap().dims(), [1, 10, 16]);
}

#[test]
fn the_gradient_reaches_every_parameter_and_drop_path_repeats() {
    let cfg = VitConfig {
        drop_path_rate: 0.5,
        ..tiny()
    };
    let vit = ViT::new(cfg, 3, &Device::Cpu).unwrap();
    let (_, t) = fixture();
    let loss = vit
        .forward(&t["input"])
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    for p in vit.params().all() {
        assert!(
            g.get(p.var.as_tensor()).is_some(),
            "no gradient for {}",
            p.name
        );
    }
    let a = vit.forward_drop(&t["input"], 7).unwrap();
    let b = vit.forward_drop(&t["input"], 7).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    // Another key drops other branches (rate 0.5 on the last block, 2 images, 2 branches).
    let differs = (0..8u64).any(|k| max_diff(&vit.forward_drop(&t["input"], k).unwrap(), &a) > 0.0);
    assert!(differs);
}

/// In training, stochastic depth draws from the step key the trainer arms and each forward's
/// rank in the step: re-armed with the same key, the same branches drop; the next forward of a
/// step drops others; evaluation-mode forwards and an unarmed model drop nothing.
#[test]
fn armed_training_forwards_drop_by_step_key_and_rank() {
    let vit = ViT::new(
        VitConfig {
            drop_path_rate: 0.5,
            ..tiny()
        },
        3,
        &Device::Cpu,
    )
    .unwrap();
    let (_, t) = fixture();
    let x = &t["input"];
    let plain = vit.forward(x).unwrap();
    assert_eq!(
        max_diff(&vit.forward_t(x, true).unwrap(), &plain),
        0.0,
        "unarmed"
    );
    let (mut dropped, mut ranks_differ) = (false, false);
    for key in 0..8u64 {
        vit.arm_drop_path(Some(key));
        // An evaluation-mode forward while armed: nothing dropped, no rank taken.
        assert_eq!(max_diff(&vit.forward_t(x, false).unwrap(), &plain), 0.0);
        let first = vit.forward_t(x, true).unwrap();
        let second = vit.forward_t(x, true).unwrap();
        vit.arm_drop_path(Some(key));
        assert_eq!(
            max_diff(&vit.forward_t(x, true).unwrap(), &first),
            0.0,
            "key {key}"
        );
        dropped |= max_diff(&first, &plain) > 0.0;
        ranks_differ |= max_diff(&first, &second) > 0.0;
    }
    assert!(dropped && ranks_differ, "{dropped} {ranks_differ}");
    vit.arm_drop_path(None);
    assert_eq!(
        max_diff(&vit.forward_t(x, true).unwrap(), &plain),
        0.0,
        "disarmed"
    );
}

/// timm's `no_weight_decay` set: the position embeddings and the class token are embeddings
/// (no decay with `optim.exclude_bn_bias`), norms and biases theirs, the rest weights.
#[test]
fn parameter_kinds_follow_timm() {
    use gyre_encoders::ParamKind;
    let vit = ViT::new(tiny(), 0, &Device::Cpu).unwrap();
    for p in vit.params().all() {
        let want = match p.name.as_str() {
            "cls_token" | "pos_embed" => ParamKind::Embedding,
            n if n.starts_with("norm") || n.contains(".norm") => {
                if n.ends_with(".weight") {
                    ParamKind::NormWeight
                } else {
                    ParamKind::NormBias
                }
            }
            n if n.ends_with(".bias") => ParamKind::Bias,
            _ => ParamKind::Weight,
        };
        assert_eq!(p.kind, want, "{}", p.name);
    }
}

#[test]
fn bad_shapes_are_refused_in_one_line() {
    let e = VitConfig {
        patch_size: 5,
        ..tiny()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "invalid encoder configuration: patch size 5 does not divide the 8-pixel images"
    );
    let e = VitConfig {
        num_heads: 3,
        ..tiny()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("3 heads do not divide the width 16"), "{e}");
    let e = VitConfig::preset("vit-huge-2", 28, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown ViT `vit-huge-2`"), "{e}");
    let small = VitConfig::preset("vit-small-4", 28, 1).unwrap();
    assert_eq!(
        (small.embed_dim, small.num_heads, small.grid()),
        (384, 6, 7)
    );
    assert!(VitConfig::preset("vit-tiny-16", 28, 3).is_err());
    let vit = ViT::new(tiny(), 0, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 10, 10), gyre_kernels::DType::F32, &Device::Cpu).unwrap();
    assert!(vit.tokens(&x, None).is_err());
}
