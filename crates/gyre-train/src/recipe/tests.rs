//! The recipe's tests: parsing, overrides, errors, composition, the docs' key table.

use super::*;
use gyre_encoders::Stem;

#[test]
fn default_recipe_parses_and_round_trips() {
    let r = Recipe::default_recipe(&[]).unwrap();
    assert_eq!(r.method.name(), "simclr");
    let again = Recipe::parse(&r.to_toml(), "resolved", &[]).unwrap();
    assert_eq!(again.to_toml(), r.to_toml());
}

#[test]
fn overrides_apply_and_are_validated() {
    let r = Recipe::default_recipe(&[
        "train.epochs=3".into(),
        "optim.lr = 0.5".into(),
        "name=x".into(),
    ])
    .unwrap();
    assert_eq!(r.train.epochs, 3);
    assert_eq!(r.optim.lr, 0.5);
    assert_eq!(r.name, "x");
    let e = Recipe::default_recipe(&["optim.lr=-0.1".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "<embedded>/recipes/default.toml: optim.lr: must be a positive number, got -0.1"
    );
    let e = Recipe::default_recipe(&["optim.lr2=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("optim.lr2: unknown field `lr2`"), "{e}");
    let e = Recipe::default_recipe(&["train".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected section.key=value"), "{e}");
}

#[test]
fn unknown_key_in_a_file_names_file_and_section() {
    let text = DEFAULT_RECIPE.replace("[train]", "[train]\nepochz = 3");
    let e = Recipe::parse(&text, "my.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("my.toml: train.epochz: unknown field `epochz`"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
}

/// Issue 19: an unknown section set from the command line is named as itself (it was
/// reported under `[augment.strong]`), a wrong type names its dotted path, and invalid TOML
/// names its line and column.
#[test]
fn errors_name_the_path_or_the_line_and_column() {
    let e = Recipe::default_recipe(&["bogus.x=3".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("<embedded>/recipes/default.toml: bogus: unknown field `bogus`"),
        "{e}"
    );
    assert!(!e.contains("[augment"), "{e}");
    let e = Recipe::default_recipe(&["augment.strong.size=\"big\"".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("augment.strong.size: invalid type: string \"big\""),
        "{e}"
    );
    let text = DEFAULT_RECIPE.replace("[train]\n", "[train]\nepochs = [1,\n");
    let line = text.lines().position(|l| l == "epochs = [1,").unwrap() + 1;
    let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("r.toml:{}:", line + 1)), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let e = Recipe::parse("name = \"a\"", "r.toml", &[])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "r.toml: missing field `method`");
}

/// Issue 19: without a name the run is named after what it trains, so changing the data from
/// the command line renames it; without `data.mean` / `data.std` the dataset's own are used.
#[test]
fn names_and_normalisation_default_to_the_data() {
    let r = Recipe::default_recipe(&[]).unwrap();
    assert_eq!(r.name, "simclr_resnet-mini_fashion-mnist-embedded");
    assert_eq!(r.data.mean, None);
    let r =
        Recipe::default_recipe(&["data.kind=image-folder".into(), "data.root=/x".into()]).unwrap();
    assert_eq!(r.name, "simclr_resnet-mini_image-folder");
    let e = Recipe::default_recipe(&["data.mean=[0.5]".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data.mean: set data.mean and data.std together"),
        "{e}"
    );
    let r = Recipe::default_recipe(&["name=mine".into()]).unwrap();
    assert_eq!(r.name, "mine");
}

#[test]
fn every_recipe_in_the_repo_parses_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut seen = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let r = Recipe::load(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
            let again = Recipe::parse(&r.to_toml(), "resolved", &[]).unwrap();
            assert_eq!(again.to_toml(), r.to_toml(), "{}", p.display());
            seen.insert(r.method.name().to_string());
        }
    }
    // Every registered method has a recipe.
    for m in crate::method::names() {
        assert!(seen.contains(m), "no recipe for {m}");
    }
}

/// Issue 19: docs/recipes.md names every key the parser accepts (it had left out six).
#[test]
fn docs_recipes_md_names_every_key() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes.md"),
    )
    .unwrap();
    // The default recipe with every optional key set; its leaf keys, plus every method key.
    let mut r = Recipe::default_recipe(&[]).unwrap();
    r.data.root = Some("x".into());
    r.data.subset = Some(1);
    r.data.image_size = Some(1);
    r.data.mean = Some(vec![0.5]);
    r.data.std = Some(vec![0.5]);
    r.encoder.stem = Some(Stem::Cifar);
    r.data.scenes = Some(Default::default());
    r.data.video = Some(Default::default());
    r.irc = Some(toml::from_str("").unwrap());
    fn leaves(v: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                if v.is_table() {
                    leaves(v, out);
                } else {
                    out.push(k.clone());
                }
            }
        }
    }
    let mut keys = Vec::new();
    leaves(
        &toml::Value::Table(toml::from_str(&r.to_toml()).unwrap()),
        &mut keys,
    );
    for m in crate::method::REGISTRY {
        keys.extend((m.keys)().iter().map(|k| k.to_string()));
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(missing.is_empty(), "docs/recipes.md lacks {missing:?}");
    assert!(keys.len() > 60, "{keys:?}");
}

#[test]
fn method_keys_are_checked_against_the_method() {
    let e = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::default_recipe(&sets).unwrap_err().to_string()
    };
    assert_eq!(
        e(&["method.queue=4096"]),
        "<embedded>/recipes/default.toml: method.queue: simclr does not use it (it reads: temperature)"
    );
    let moco = ["method.name=mocov2", "train.batch_size=128"];
    assert!(e(&[&moco[..], &["method.queue=1000"]].concat())
        .contains("method.queue: must be a positive multiple of the 128 keys enqueued per step"));
    assert!(
        e(&[&moco[..], &["method.queue=128", "method.symmetric=true"]].concat())
            .contains("multiple of the 256 keys")
    );
    assert!(e(&[&moco[..], &["method.momentum=1.5"]].concat())
        .contains("method.momentum: must be in [0, 1], got 1.5"));
    assert!(e(&["method.name=reco"]).contains(
        "method.views: reco needs 3 views (query (strong), key (strong), weak key), got 2"
    ));
    assert!(e(&["method.name=mae"])
        .contains("method.name: unknown method `mae`: expected one of simclr, mocov2"));
    assert!(e(&["encoder.bn_splits=3"]).contains("encoder.bn_splits: must divide"));
    assert!(e(&["method.name=byol", "method.temperature=0.1"])
        .contains("method.temperature: byol does not use it"));
    let ok = Recipe::default_recipe(&[
        "method.name=mocov2".into(),
        "method.queue=512".into(),
        "method.symmetric=true".into(),
    ])
    .unwrap();
    assert_eq!(ok.method.settings["queue"].as_integer(), Some(512));
}

/// Issue 20: validation sees the real defaults — a queue left at 4096 must still be a multiple
/// of the keys per step, and InterCLR's default 4096 negatives must fit a smaller pool.
#[test]
fn checks_hold_for_keys_left_at_their_defaults() {
    let e = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::default_recipe(&sets).unwrap_err().to_string()
    };
    // No queue key: the default 4096 is not a multiple of 100.
    assert!(e(&[
        "method.name=mocov2",
        "method.temperature=0.1",
        "train.batch_size=100"
    ])
    .contains(
        "method.queue: must be a positive multiple of the 100 keys enqueued per step, got 4096"
    ),);
    let inter = [
        "method.name=interclr",
        "method.temperature=0.2",
        "method.pool=1000",
    ];
    assert!(
        e(&inter).contains("method.negatives: 4096 negatives cannot be drawn from a pool of 1000")
    );
}

/// The resolved recipe holds every default of the method and the plug-in, and parses back to
/// itself.
#[test]
fn the_resolved_recipe_spells_out_the_defaults() {
    let r =
        Recipe::default_recipe(&["method.name=mocov2".into(), "irc.weight=0.5".into()]).unwrap();
    let t = r.to_toml();
    for line in [
        "queue = 4096",
        "momentum = 0.99",
        "symmetric = false",
        "temperature = 0.2",
        "memory = \"online\"",
        "memory_size = 4096",
        "weight = 0.5",
    ] {
        assert!(t.contains(line), "{line} in {t}");
    }
    let again = Recipe::parse(&t, "resolved", &[]).unwrap();
    assert_eq!(again.to_toml(), t);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gyre-recipe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("overlays")).unwrap();
    d
}

/// Recipes compose: `extends` (a name or a list, relative to the file) then the file itself,
/// then overlays in order, then `--set`; tables merge, values replace.
#[test]
fn extends_and_overlays_compose_with_later_winning() {
    let d = tmp("compose");
    std::fs::write(d.join("base.toml"), DEFAULT_RECIPE).unwrap();
    std::fs::write(
        d.join("overlays/irc.toml"),
        "[irc]\nweight = 0.5\nmemory = 256\n[train]\nepochs = 7\n",
    )
    .unwrap();
    std::fs::write(
        d.join("child.toml"),
        "extends = [\"base.toml\", \"overlays/irc.toml\"]\nname = \"child\"\n[train]\nepochs = 9\n",
    )
    .unwrap();
    let r = Recipe::load(&d.join("child.toml"), &[]).unwrap();
    assert_eq!(r.name, "child");
    // The child's own value beats what it extends; sibling keys of [train] survive the merge.
    assert_eq!(r.train.epochs, 9);
    assert_eq!(r.train.batch_size, 256);
    let irc = r.irc.as_ref().unwrap();
    assert_eq!((irc.weight, irc.memory_rows()), (0.5, 256));
    // An overlay on the command line beats the file; `--set` beats both.
    std::fs::write(d.join("overlays/long.toml"), "[train]\nepochs = 11\n").unwrap();
    let overlays = [d.join("overlays/long.toml")];
    let sets = ["train.batch_size=128".to_string()];
    let r = Recipe::load_with(
        &d.join("child.toml"),
        &Sources {
            overlays: &overlays,
            overrides: &sets,
        },
    )
    .unwrap();
    assert_eq!((r.train.epochs, r.train.batch_size), (11, 128));
    std::fs::remove_dir_all(&d).ok();
}

/// Bad composition: a misspelt key in an overlay, an `extends` cycle, a missing file — each one
/// line naming the file and the key.
#[test]
fn composition_errors_name_the_file_and_the_key() {
    let d = tmp("compose-bad");
    std::fs::write(d.join("base.toml"), DEFAULT_RECIPE).unwrap();
    std::fs::write(d.join("overlays/typo.toml"), "[irc]\nwieght = 0.5\n").unwrap();
    std::fs::write(
        d.join("child.toml"),
        "extends = [\"base.toml\", \"overlays/typo.toml\"]\n",
    )
    .unwrap();
    let e = Recipe::load(&d.join("child.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("overlays/typo.toml: irc.wieght: unknown field `wieght`"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    // A method key that belongs to another method, set in an overlay: that file is named.
    std::fs::write(d.join("overlays/queue.toml"), "[method]\nqueue = 1024\n").unwrap();
    let e = Recipe::load_with(
        &d.join("base.toml"),
        &Sources {
            overlays: &[d.join("overlays/queue.toml")],
            overrides: &[],
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("overlays/queue.toml: method.queue: simclr does not use it"),
        "{e}"
    );
    std::fs::write(d.join("a.toml"), "extends = \"b.toml\"\n").unwrap();
    std::fs::write(d.join("b.toml"), "extends = \"a.toml\"\n").unwrap();
    let e = Recipe::load(&d.join("a.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b.toml: extends: a cycle:") && e.contains("a.toml"),
        "{e}"
    );
    std::fs::write(d.join("lost.toml"), "extends = \"nowhere.toml\"\n").unwrap();
    let e = Recipe::load(&d.join("lost.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lost.toml: extends: cannot read") && e.contains("nowhere.toml"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// Issue 22: the dense level's recipe keys — frame pairs only on clip data and within a clip,
/// the dense level only with frame pairs, a base that gives cell maps and a third view, and
/// instance-only keys refused there (and the dense-only ones at instance level).
#[test]
fn the_dense_level_and_frame_pairs_are_checked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let load = |file: &str, sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::load(&root.join(file), &sets)
    };
    let ok = load("mocov2-irc-dense-ap_resnet-mini_scenes.toml", &[]).unwrap();
    let irc = ok.irc.as_ref().unwrap();
    assert_eq!(irc.level, crate::irc::IrcLevel::Dense);
    assert_eq!(irc.memory_kind(), crate::irc::MemoryKind::Ema);
    assert_eq!((irc.pair_tau(), irc.pair_queue_rows()), (0.2, 4096));
    assert_eq!(ok.data.pair_gap, Some(2));
    let e = |file: &str, sets: &[&str]| load(file, sets).unwrap_err().to_string();
    let dense = "mocov2-irc-dense_resnet-mini_scenes.toml";
    for (sets, want) in [
        (&["data.pair_gap=8"][..], "data.pair_gap: must be in 1..=7 for 8-frame clips, got 8"),
        (&["data.pair_gap=0"][..], "data.pair_gap: must be in 1..=7"),
        (&["method.views=[\"strong\", \"strong\"]"][..], "method.views: mocov2 needs 3 views (two views of each image, then a′ of the frame for irc.level = \"dense\"), got 2"),
        (&["irc.memory=256"][..], "irc.memory: the dense level walks through the partner frame's cells"),
        (&["irc.memory_size=256"][..], "irc.memory_size: only the instance level"),
        (&["irc.top_n=2"][..], "irc.top_n: the dense level pairs each cell with its top-1"),
        (&["irc.pair_queue=100"][..], "irc.pair_queue: must be a positive multiple of the batch size (64)"),
        (&["irc.pair_temperature=0"][..], "irc.pair_temperature: must be a positive number"),
        (&["irc.hops=4"][..], "irc.hops: must be 2 or 3, got 4"),
        (&["irc.hops=3"][..], "method.views: mocov2 needs 4 views (two views of each image, then a′ of the frame and the second partner for a three-hop dense walk), got 3"),
        (&["irc.hops=3", "data.pair_gap=4", "method.views=[\"strong\", \"strong\", \"strong\", \"strong\"]"][..], "data.pair_gap: must be in 1..=3 for 8-frame clips with two partners, got 4"),
    ] {
        let got = e(dense, sets);
        assert!(got.contains(want), "{sets:?}: {got}");
    }
    // The dense level without frame pairs: the scenes recipe without pair_gap.
    let got = e(
        "mocov2_resnet-mini_scenes.toml",
        &[
            "irc.level=\"dense\"",
            "method.views=[\"strong\", \"strong\", \"strong\"]",
        ],
    );
    assert!(
        got.contains("data.pair_gap: irc.level = \"dense\" needs image-level pairs"),
        "{got}"
    );
    let got = e(
        "simclr_resnet-mini_fmnist.toml",
        &[
            "irc.level=\"dense\"",
            "method.views=[\"strong\", \"strong\", \"strong\"]",
        ],
    );
    assert!(got.contains("irc.level: \"dense\" walks through the momentum teacher's map of the partner frame; simclr has none (use one of mocov2, densecl)"), "{got}");
    assert!(e("mocov2_resnet-mini_fmnist.toml", &["data.pair_gap=2"])
        .contains("data.pair_gap: only clip data"));
    assert!(e("crw_resnet-mini_scenes.toml", &["data.pair_gap=2"])
        .contains("data.pair_gap: crw trains on whole clips, not frame pairs"));
    let three = load(
        dense,
        &[
            "irc.hops=3",
            "method.views=[\"strong\", \"strong\", \"strong\", \"strong\"]",
        ],
    )
    .unwrap();
    assert_eq!(three.irc.unwrap().partner_links(), 2);
    assert!(e("mocov2-irc_resnet-mini_fmnist.toml", &["irc.hops=3"])
        .contains("irc.hops: only level = \"dense\" reads it"));
    assert!(e(
        "mocov2-irc_resnet-mini_fmnist.toml",
        &["irc.pair_queue=4096"]
    )
    .contains("irc.pair_queue: only level = \"dense\" reads it"));
}

/// Issue 24: multi-crop views — any number of local crops after the two global ones, none
/// larger than the images or the global crops; fewer than two views refused.
#[test]
fn multi_crop_views_are_checked() {
    let dino =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/dino_resnet-mini_fmnist.toml");
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::load(&dino, &sets)
    };
    let r = load(&[]).unwrap();
    assert_eq!(r.method.views.len(), 6);
    // Two global crops alone are fine; so are more local crops.
    load(&["method.views=[\"global\", \"global\"]"]).unwrap();
    load(&["method.views=[\"global\", \"global\", \"local\", \"local\", \"local\", \"local\", \"local\", \"local\"]"]).unwrap();
    let e = load(&["method.views=[\"global\"]"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("method.views: dino needs at least 2 views"),
        "{e}"
    );
    let e = load(&["augment.local.size=40"]).unwrap_err().to_string();
    assert!(
        e.contains("method.views: local crop `local` is 40 px ([augment.local] size), larger than the 28-pixel images"),
        "{e}"
    );
    let e = load(&["augment.local.size=24", "augment.global.size=20"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the 20-pixel global crops"), "{e}");
}

/// Issue 24: a ViT backbone is a recipe value; its image size is required, ResNet settings are
/// refused on it and ViT settings on a ResNet.
#[test]
fn vit_encoders_are_checked() {
    let e = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::default_recipe(&sets)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    e(&["encoder.arch=vit-micro-4", "encoder.image_size=28"]).unwrap();
    let err = e(&["encoder.arch=vit-micro-4"]).unwrap_err();
    assert!(err.contains("encoder.image_size: invalid encoder configuration: a ViT lays its position embeddings out"), "{err}");
    let err = e(&["encoder.arch=vit-micro-4", "encoder.image_size=30"]).unwrap_err();
    assert!(err.contains("encoder.image_size: invalid encoder configuration: patch size 4 does not divide the 30-pixel images"), "{err}");
    let err = e(&[
        "encoder.arch=vit-micro-4",
        "encoder.image_size=28",
        "encoder.stem=\"cifar\"",
    ])
    .unwrap_err();
    assert!(
        err.contains("encoder.stem: a ResNet setting; vit-micro-4 is a ViT"),
        "{err}"
    );
    let err = e(&["encoder.image_size=28"]).unwrap_err();
    assert!(
        err.contains("encoder.image_size: a ViT setting; resnet-mini is a ResNet"),
        "{err}"
    );
    let err = e(&["encoder.arch=vit-giant-4", "encoder.image_size=28"]).unwrap_err();
    assert!(err.contains("encoder.arch:"), "{err}");
}

/// DINO's weight-decay schedule: a cosine from `weight_decay` to `weight_decay_final`.
#[test]
fn the_weight_decay_follows_its_cosine() {
    let r = Recipe::default_recipe(&[
        "optim.name=\"adamw\"".into(),
        "optim.weight_decay=0.04".into(),
        "optim.weight_decay_final=0.4".into(),
    ])
    .unwrap();
    let o = &r.optim;
    assert!((o.weight_decay_at(0, 100) - 0.04).abs() < 1e-12);
    assert!((o.weight_decay_at(50, 100) - 0.22).abs() < 1e-12);
    assert!((o.weight_decay_at(100, 100) - 0.4).abs() < 1e-12);
    let e = Recipe::default_recipe(&["optim.weight_decay_final=-1".into()]).unwrap_err();
    assert!(
        e.to_string()
            .contains("optim.weight_decay_final: must be ≥ 0, got -1"),
        "{e}"
    );
}
