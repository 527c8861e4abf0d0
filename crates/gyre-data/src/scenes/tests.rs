//! The scene generator: hand-made motions with known frames, masks and flow; real-image scenes
//! whose flow carries every pixel onto its own colour and class; thread-count independence.

use super::*;
use crate::fashion_mnist;

/// A 4×4 all-foreground grey garment (value 200, class "square") and a flat 2×2 background.
fn flat_sources() -> SceneSources {
    let garment = ImageSet::new(
        "square",
        (4, 4, 1),
        vec![200; 16],
        Some(vec![0]),
        vec!["square".into()],
    )
    .unwrap();
    let bg = ImageSet::new("flat", (2, 2, 3), [10, 20, 30].repeat(4), None, vec![]).unwrap();
    SceneSources::from_parts(vec![(ObjectKind::Garment, garment)], bg).unwrap()
}

fn track(centre: [f32; 2], velocity: [f32; 2], scale: f32, scale_rate: f32) -> Track {
    Track {
        source: 0,
        image: 0,
        centre,
        velocity,
        scale,
        scale_rate,
        tint: [1.0, 0.5, 0.25],
    }
}

#[test]
fn a_hand_made_clip_has_the_frames_masks_and_flow_of_its_motion() {
    let cfg = SceneConfig {
        size: 32,
        frames: 3,
        ..SceneConfig::default()
    };
    let sources = flat_sources();
    assert_eq!(sources.classes, ["background", "square"]);
    // Scale 2: the 4×4 square covers 8×8 frame pixels, [16, 24)² at frame 0, then moves by
    // (3, −2) per frame; the background pans by 1 pixel per frame along x.
    let motion = Motion {
        background: 0,
        pan: [0.0, 0.0],
        pan_velocity: [1.0, 0.0],
        tracks: vec![track([20.0, 20.0], [3.0, -2.0], 2.0, 0.0)],
    };
    let clip = render(&cfg, &sources, &motion).unwrap();
    for t in 0..3 {
        let (x0, y0) = (16 + 3 * t, 16 - 2 * t);
        for y in 0..32 {
            for x in 0..32 {
                let on = (x0..x0 + 8).contains(&x) && (y0..y0 + 8).contains(&y);
                let i = y * 32 + x;
                let rgb = &clip.frame(t)[i * 3..i * 3 + 3];
                if on {
                    assert_eq!(rgb, [200, 100, 50], "t {t} ({x}, {y})");
                    assert_eq!((clip.class_mask(t)[i], clip.instance_mask(t)[i]), (1, 1));
                } else {
                    assert_eq!(rgb, [10, 20, 30], "t {t} ({x}, {y})");
                    assert_eq!((clip.class_mask(t)[i], clip.instance_mask(t)[i]), (0, 0));
                }
            }
        }
    }
    // Frame 0 → 2: the square moves (6, −4); the background's texture moves −2 along x.
    let f = clip.flow(0, 2);
    let mut n_valid = [0usize; 2];
    for y in 0..32usize {
        for x in 0..32usize {
            let i = y * 32 + x;
            let on = (16..24).contains(&x) && (16..24).contains(&y);
            if on {
                assert_eq!(f.displacement[i], [6.0, -4.0]);
                assert!(f.valid[i], "the square is never hidden");
                n_valid[1] += 1;
            } else {
                assert_eq!(f.displacement[i], [-2.0, 0.0]);
                // Valid unless it leaves the frame (x < 2) or lands under the square at frame 2,
                // [22, 30) × [12, 20).
                let (tx, ty) = (x as i64 - 2, y as i64);
                let hidden = (22..30).contains(&tx) && (12..20).contains(&ty);
                assert_eq!(f.valid[i], tx >= 0 && !hidden, "({x}, {y})");
                n_valid[0] += f.valid[i] as usize;
            }
        }
    }
    assert_eq!(n_valid, [32 * 30 - 64 - 64, 64]);
    // The reverse flow undoes it.
    let back = clip.flow(2, 0);
    let i = 14 * 32 + 25; // inside the square at frame 2
    assert_eq!(back.displacement[i], [-6.0, 4.0]);
    assert!(back.valid[i]);
}

#[test]
fn scaling_maps_pixel_centres_through_the_object_centre() {
    let cfg = SceneConfig {
        size: 32,
        frames: 2,
        ..SceneConfig::default()
    };
    // Scale 1 → 1.5 about a fixed centre (16, 16): the 4×4 square grows to 6×6.
    let motion = Motion {
        background: 0,
        pan: [0.0; 2],
        pan_velocity: [0.0; 2],
        tracks: vec![track([16.0, 16.0], [0.0, 0.0], 1.0, 0.5)],
    };
    let clip = render(&cfg, &flat_sources(), &motion).unwrap();
    let count = |t: usize| clip.instance_mask(t).iter().filter(|&&v| v == 1).count();
    assert_eq!((count(0), count(1)), (16, 36));
    let f = clip.flow(0, 1);
    // Pixel (14, 14), centre (14.5, 14.5): 1.5 from the centre along each axis → 2.25 away.
    assert_eq!(f.displacement[14 * 32 + 14], [-0.75, -0.75]);
    assert!(f.valid[14 * 32 + 14]);
}

/// Real garments over a real textured background, with integer motion and zoom 1, so that the
/// true flow carries every visible pixel onto exactly its own colour, class and instance.
#[test]
fn on_real_images_the_flow_carries_each_pixel_onto_its_colour_and_class() {
    let fm = fashion_mnist::embedded().unwrap();
    let garments = fm.head(50);
    // Backgrounds: other garments, so no image is both.
    let bgs = fm.select("bg", &[100, 101]);
    let sources =
        SceneSources::from_parts(vec![(ObjectKind::Garment, garments.clone())], bgs).unwrap();
    let cfg = SceneConfig {
        size: 48,
        frames: 4,
        zoom: 1.0,
        ..SceneConfig::default()
    };
    let tr = |image, centre, velocity| Track {
        image,
        tint: [0.9, 0.6, 0.4],
        ..track(centre, velocity, 1.0, 0.0)
    };
    let motion = Motion {
        background: 1,
        pan: [5.0, 7.0],
        pan_velocity: [2.0, -1.0],
        tracks: vec![
            tr(3, [14.0, 16.0], [2.0, 1.0]),
            tr(7, [34.0, 32.0], [-1.0, 0.0]),
        ],
    };
    let clip = render(&cfg, &sources, &motion).unwrap();
    // Both garments and the background are visible, each with its class.
    for (inst, class) in [
        (1u8, 1 + fm.label(3).unwrap()),
        (2, 1 + fm.label(7).unwrap()),
    ] {
        let px: Vec<usize> = (0..48 * 48)
            .filter(|&i| clip.instance_mask(0)[i] == inst)
            .collect();
        assert!(px.len() > 100, "instance {inst}: {} pixels", px.len());
        assert!(px.iter().all(|&i| clip.class_mask(0)[i] as u32 == class));
    }
    for (a, b) in [(0, 1), (0, 3), (3, 1)] {
        let f = clip.flow(a, b);
        let mut checked = 0;
        for i in 0..48 * 48 {
            if !f.valid[i] {
                continue;
            }
            let (x, y) = (i % 48, i / 48);
            let d = f.displacement[i];
            let (tx, ty) = (x as f32 + 0.5 + d[0], y as f32 + 0.5 + d[1]);
            let j = ty.floor() as usize * 48 + tx.floor() as usize;
            assert_eq!(
                &clip.frame(a)[i * 3..i * 3 + 3],
                &clip.frame(b)[j * 3..j * 3 + 3],
                "{a}→{b} ({x}, {y})"
            );
            assert_eq!(clip.class_mask(a)[i], clip.class_mask(b)[j]);
            assert_eq!(clip.instance_mask(a)[i], clip.instance_mask(b)[j]);
            checked += 1;
        }
        assert!(checked > 48 * 48 / 2, "{a}→{b}: {checked} valid pixels");
    }
    // The truth kept for diagnostics says the same, for this clip laid after another one.
    let other = render(
        &cfg,
        &sources,
        &Motion {
            tracks: vec![],
            ..motion.clone()
        },
    )
    .unwrap();
    let truth = SceneTruth::from_clips(&[other, clip.clone()]);
    assert_eq!(truth.len(), 8);
    for (a, b) in [(0, 1), (0, 3), (3, 1)] {
        let f = clip.flow(a, b);
        for i in (0..48 * 48).step_by(7) {
            let p = [(i % 48) as f32 + 0.5, (i / 48) as f32 + 0.5];
            let d = f.displacement[i];
            let want = f.valid[i].then_some([p[0] + d[0], p[1] + d[1]]);
            assert_eq!(truth.track(4 + a, 4 + b, p), want, "{a}→{b} at {p:?}");
            assert_eq!(truth.class_at(4 + a, p), Some(clip.class_mask(a)[i]));
        }
    }
    assert_eq!(truth.track(0, 4, [10.5, 10.5]), None, "frames of two clips");
    assert_eq!(truth.track(4, 5, [48.5, 10.5]), None, "outside the frame");
    assert_eq!(truth.class_at(4, [-0.5, 3.0]), None);
    assert_eq!(truth.class_at(8, [3.0, 3.0]), None);
}

#[test]
fn the_same_seed_gives_the_same_clips_at_one_and_two_threads() {
    let fm = fashion_mnist::embedded().unwrap();
    let sources = SceneSources::new(
        fm.head(200),
        fm.select("colour", &(200..400).collect::<Vec<_>>()),
    )
    .unwrap();
    assert_eq!(sources.classes.len(), 21);
    let cfg = SceneConfig::default();
    let at = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| generate(&cfg, &sources, 7, TRAIN_SPLIT, 0..6).unwrap())
    };
    let one = at(1);
    assert_eq!(one, at(2));
    // Clip 3 alone is the same clip; another seed or split is another clip.
    let three = generate(&cfg, &sources, 7, TRAIN_SPLIT, 3..4).unwrap();
    assert_eq!(three[0], one[3]);
    let other_seed = generate(&cfg, &sources, 8, TRAIN_SPLIT, 3..4).unwrap();
    let other_split = generate(&cfg, &sources, 7, HELD_OUT_SPLIT, 3..4).unwrap();
    assert_ne!(other_seed[0].motion, one[3].motion);
    assert_ne!(other_split[0].motion, one[3].motion);
    for clip in &one {
        let n = clip.motion.tracks.len();
        assert!((2..=4).contains(&n), "{n} objects");
        // Object centres stay in the middle 60% of the frame, so most of their pixels stay visible
        // and the flow between neighbouring frames is valid almost everywhere.
        let f = clip.flow(0, 1);
        let valid = f.valid.iter().filter(|&&v| v).count() as f64 / f.valid.len() as f64;
        assert!(valid > 0.85, "valid flow fraction {valid}");
        for t in 0..clip.frames {
            let mask = clip.instance_mask(t);
            let top = clip.motion.tracks.len() as u8;
            assert!(mask.contains(&top), "t {t}: the topmost object is visible");
        }
    }
}

#[test]
fn bad_settings_and_sources_name_the_field_or_file() {
    let sources = flat_sources();
    for (cfg, field) in [
        (
            SceneConfig {
                frames: 1,
                ..SceneConfig::default()
            },
            "frames",
        ),
        (
            SceneConfig {
                min_objects: 3,
                max_objects: 2,
                ..SceneConfig::default()
            },
            "min_objects",
        ),
        (
            SceneConfig {
                scale: [0.0, 1.0],
                ..SceneConfig::default()
            },
            "scale",
        ),
        (
            SceneConfig {
                scale_rate: 0.5,
                ..SceneConfig::default()
            },
            "scale_rate",
        ),
        (
            SceneConfig {
                zoom: f32::NAN,
                ..SceneConfig::default()
            },
            "zoom",
        ),
    ] {
        let e = generate(&cfg, &sources, 0, TRAIN_SPLIT, 0..1)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("'{field}'")), "{e}");
    }
    let unlabelled = ImageSet::new("nolabels", (4, 4, 1), vec![200; 16], None, vec![]).unwrap();
    let bg = ImageSet::new("flat", (2, 2, 3), vec![0; 12], None, vec![]).unwrap();
    let e = SceneSources::from_parts(vec![(ObjectKind::Garment, unlabelled)], bg.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid loader setting: nolabels: object images need class labels"),
        "{e}"
    );
    let colour = ImageSet::new("rgb", (4, 4, 3), vec![0; 48], Some(vec![0]), vec![]).unwrap();
    let e = SceneSources::from_parts(vec![(ObjectKind::Garment, colour)], bg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rgb: garments must be grey"), "{e}");
}
