//! Tests that iterate the registry: every method — a new one included, with no list to edit —
//! builds from its defaults, steps, exposes its IRC pair, repeats itself, resumes from its state,
//! writes its queues only after the step and updates its teacher (when it has one) by the EMA
//! rule before the teacher's forward pass.

use super::testing::{batch, ctx, random_views, Fixture};
use super::*;

const B: usize = 16;

/// A method of the registry from its default settings, in the test fixture.
fn build(entry: &MethodEntry, f: &Fixture) -> Box<dyn Method> {
    let settings = entry
        .resolve(&toml::Table::new(), &f.env())
        .unwrap_or_else(|e| panic!("{}: defaults rejected: {e:?}", entry.name));
    let mut cx = f.build_context();
    // InterCLR's defaults (100 clusters of ≥ 20) need 2000 images or more.
    cx.dataset_len = 4096;
    entry
        .build(&settings, &cx)
        .unwrap_or_else(|e| panic!("{}: {e:#}", entry.name))
}

/// The step's views: the method's views of each image, or 4 frames of each clip.
fn views_of(entry: &MethodEntry, seed: u64) -> Vec<Tensor> {
    let n = if entry.clips.is_some() {
        4
    } else {
        entry.views.0
    };
    random_views(n, B, seed).unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

fn state_map(m: &dyn Method) -> HashMap<String, Vec<f32>> {
    m.state()
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.dtype() == gyre_kernels::DType::F32)
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Runs `steps` training steps with plain SGD (lr 0.05), returns the losses.
fn train(m: &mut dyn Method, entry: &MethodEntry, steps: u64) -> Vec<f32> {
    let mut losses = Vec::new();
    for s in 0..steps {
        let views = views_of(entry, s);
        let out = m.step(&views, &batch(B), ctx(s)).unwrap();
        losses.push(scalar(&out.loss));
        let grads = out.loss.backward().unwrap();
        for p in m.params().trainable() {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                p.var
                    .set(&(p.var.as_tensor() - (g * 0.05).unwrap()).unwrap())
                    .unwrap();
            }
        }
        m.after_step(ctx(s)).unwrap();
    }
    losses
}

#[test]
fn every_method_steps_from_its_defaults_and_exposes_its_pair() {
    let f = Fixture::new(B);
    for entry in REGISTRY {
        let mut m = build(entry, &f);
        assert_eq!(m.name(), entry.name);
        // Six steps cross the first epoch (four steps): InterCLR's k-means starts there.
        for s in 0..6 {
            let views = views_of(entry, s);
            let out = m.step(&views, &batch(B), ctx(s)).unwrap();
            let l = scalar(&out.loss);
            assert!(l.is_finite(), "{}: loss {l} at step {s}", entry.name);
            assert_eq!(out.embeddings.dim(0).unwrap(), B, "{}", entry.name);
            if entry.clips.is_some() {
                // A clip has no two views of one image: no pair (IRC refuses such a recipe).
                assert!(out.pair.is_none(), "{}", entry.name);
            } else {
                let pair = out
                    .pair
                    .expect("every image method exposes its Task S pair");
                assert_eq!(pair.view1.dims(), pair.view2.dims(), "{}", entry.name);
                assert_eq!(pair.view1.dims()[0], B);
                assert_eq!(pair.base_v2.dim(0).unwrap(), B);
                assert!(pair.view2_index < entry.views.0);
            }
            out.loss.backward().unwrap();
            m.after_step(ctx(s)).unwrap();
        }
    }
}

#[test]
fn every_method_repeats_itself_and_resumes_from_its_state() {
    let f = Fixture::new(B);
    for entry in REGISTRY {
        let mut a = build(entry, &f);
        let mut b = build(entry, &f);
        assert_eq!(
            train(&mut *a, entry, 3),
            train(&mut *b, entry, 3),
            "{}: repeat",
            entry.name
        );
        // A fresh copy given `a`'s parameters and state continues exactly as `a`.
        let mut c = build(entry, &f);
        for (p, q) in a.params().all().iter().zip(c.params().all()) {
            assert_eq!(p.name, q.name);
            q.var.set(&p.var.as_tensor().copy().unwrap()).unwrap();
        }
        let state: HashMap<String, Tensor> = a.state().unwrap().into_iter().collect();
        c.load_state(&state).unwrap();
        let views = views_of(entry, 3);
        let la = scalar(&a.step(&views, &batch(B), ctx(3)).unwrap().loss);
        let lc = scalar(&c.step(&views, &batch(B), ctx(3)).unwrap().loss);
        assert_eq!(la, lc, "{}: resumed step differs", entry.name);
    }
}

/// Queues and banks are read in the step and written after it: `step` changes no state but the
/// teacher's, and the teacher's parameters move by `m·θ_t + (1 − m)·θ_online` with the online
/// parameters of before the step.
#[test]
fn steps_write_queues_afterwards_and_teachers_follow_the_ema_rule() {
    let f = Fixture::new(B);
    for entry in REGISTRY {
        let mut m = build(entry, &f);
        train(&mut *m, entry, 2);
        let before = state_map(&*m);
        let online: HashMap<String, Vec<f32>> = m
            .params()
            .trainable()
            .map(|p| {
                (
                    p.name.clone(),
                    p.var.flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect();
        let out = m.step(&views_of(entry, 9), &batch(B), ctx(2)).unwrap();
        let after = state_map(&*m);
        let momentum = out.logs.iter().find(|(k, _)| *k == "momentum").map(|x| x.1);
        for (k, v) in &before {
            match k.strip_prefix("teacher.") {
                None => assert_eq!(&after[k], v, "{}: {k} written during the step", entry.name),
                Some(name) => {
                    let (Some(o), Some(m)) = (online.get(name), momentum) else {
                        continue; // a BatchNorm buffer: the teacher's own statistics
                    };
                    for ((t0, t1), o) in v.iter().zip(&after[k]).zip(o) {
                        let want = m as f32 * t0 + (1.0 - m as f32) * o;
                        assert!(
                            (t1 - want).abs() <= 1e-6 * want.abs().max(1.0),
                            "{}: {k}: {t1} vs the EMA rule's {want}",
                            entry.name
                        );
                    }
                }
            }
        }
        if before.keys().any(|k| k.starts_with("teacher.")) {
            assert!(
                momentum.is_some(),
                "{}: a teacher logs its momentum",
                entry.name
            );
        }
    }
}

/// Settings keys come from the structs themselves, and a registry name is unique.
#[test]
fn the_registry_names_each_method_once_with_its_keys() {
    let mut names = names();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    assert_eq!(
        (lookup("mocov2").unwrap().keys)(),
        [
            "temperature",
            "queue",
            "momentum",
            "momentum_final",
            "symmetric"
        ]
    );
    assert!(lookup("mae").is_none());
}
