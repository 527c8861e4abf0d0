//! The named dense protocols: held-out moving-object scene clips (PCK against the true flow at
//! several frame gaps, label propagation J) and the real ground truth (Middlebury disparity,
//! Graffiti homography: PCK at a working width), for any [`FeatureSource`].

use super::correspondence::{
    homography_queries, match_errors, pck, scene_queries, stereo_queries, Queries,
};
use super::propagation::{hard_labels, j_per_object, propagate, soft_labels, PropagationConfig};
use super::{encoder_features, raw_patch_features, FeatureMap};
use gyre_data::dense_gt::{HomographyPair, Rgb, StereoPair};
use gyre_data::scenes::{generate, SceneConfig, SceneSources, HELD_OUT_SPLIT};
use gyre_encoders::Backbone;
use gyre_kernels::Device;
use serde::Serialize;

/// What gives an image its dense features.
pub enum FeatureSource<'a> {
    /// A backbone's last-stage map, the images normalised with `mean`/`std`.
    Encoder {
        backbone: &'a Backbone,
        mean: Vec<f32>,
        std: Vec<f32>,
        device: Device,
    },
    /// RGB patches at a grid ([`raw_patch_features`]).
    RawPixels { stride: usize, patch: usize },
}

impl FeatureSource<'_> {
    /// The maps of `n` RGB images `[n, height, width, 3]`.
    pub fn features(
        &self,
        images: &[u8],
        (height, width): (usize, usize),
    ) -> anyhow::Result<Vec<FeatureMap>> {
        match self {
            FeatureSource::Encoder {
                backbone,
                mean,
                std,
                device,
            } => {
                let c = backbone.in_channels();
                if c != 3 {
                    anyhow::bail!(
                        "the encoder takes {c}-channel images; the dense protocols are RGB"
                    );
                }
                Ok(encoder_features(
                    backbone,
                    images,
                    (height, width, 3),
                    mean,
                    std,
                    32,
                    device,
                )?)
            }
            FeatureSource::RawPixels { stride, patch } => Ok(images
                .chunks(height * width * 3)
                .map(|img| raw_patch_features(img, (height, width), *stride, *patch))
                .collect()),
        }
    }
}

/// The scene protocol's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SceneProtocol {
    pub scene: SceneConfig,
    /// Held-out clips scored.
    pub clips: usize,
    pub seed: u64,
    /// Frame gaps of the correspondence pairs `(t, t + gap)`.
    pub gaps: Vec<usize>,
    /// Query pixels every `query_step` pixels (where the flow is valid).
    pub query_step: usize,
    pub thresholds: Vec<f32>,
    #[serde(skip)]
    pub propagation: PropagationConfig,
}

impl Default for SceneProtocol {
    /// "Scenes-64/8": 64-pixel frames, 8 per clip, 100 held-out clips, gaps 1 and 4, queries
    /// every 4 pixels, PCK@{1, 2, 4, 8}, videowalk's propagation settings.
    fn default() -> Self {
        Self {
            scene: SceneConfig::default(),
            clips: 100,
            seed: 0,
            gaps: vec![1, 4],
            query_step: 4,
            thresholds: vec![1.0, 2.0, 4.0, 8.0],
            propagation: PropagationConfig::default(),
        }
    }
}

/// PCK at each threshold over `points` queries.
#[derive(Debug, Clone, Serialize)]
pub struct PckRow {
    pub name: String,
    pub thresholds: Vec<f32>,
    pub pck: Vec<f64>,
    pub points: usize,
}

/// The scene protocol's results.
#[derive(Debug, Clone, Serialize)]
pub struct SceneReport {
    pub protocol: SceneProtocol,
    /// One row per frame gap.
    pub correspondence: Vec<PckRow>,
    /// Mean J over every object of every clip, and the number of objects.
    pub j_mean: f64,
    pub objects: usize,
    /// References on the same clips: frame 0's mask kept for every frame (no propagation), and
    /// every frame's true mask through the feature grid's round trip (the ceiling at this
    /// stride).
    pub j_static: f64,
    pub j_ceiling: f64,
}

/// Scores `source` on the protocol's held-out clips of `sources`.
pub fn evaluate_scenes(
    proto: &SceneProtocol,
    sources: &SceneSources,
    source: &FeatureSource,
) -> anyhow::Result<SceneReport> {
    let clips = generate(
        &proto.scene,
        sources,
        proto.seed,
        HELD_OUT_SPLIT,
        0..proto.clips as u64,
    )?;
    let s = proto.scene.size;
    let mut errors: Vec<Vec<f32>> = vec![Vec::new(); proto.gaps.len()];
    let mut js = Vec::new();
    let (mut j_static, mut j_ceiling) = (Vec::new(), Vec::new());
    for clip in &clips {
        let feats = source.features(&clip.pixels, (s, s))?;
        let full: Vec<FeatureMap> = feats.iter().map(|f| f.resized(s, s)).collect();
        for (g, &gap) in proto.gaps.iter().enumerate() {
            for t in 0..clip.frames.saturating_sub(gap) {
                let q = scene_queries(&clip.flow(t, t + gap), proto.query_step);
                errors[g].extend(match_errors(&full[t], &full[t + gap], &q)?);
            }
        }
        let k = clip.motion.tracks.len() + 1;
        let pred = propagate(&feats, clip.instance_mask(0), (s, s), k, &proto.propagation);
        let truth: Vec<&[u8]> = (0..clip.frames).map(|t| clip.instance_mask(t)).collect();
        js.extend(j_per_object(&pred, &truth, k));
        let still: Vec<Vec<u8>> = (0..clip.frames)
            .map(|_| clip.instance_mask(0).to_vec())
            .collect();
        j_static.extend(j_per_object(&still, &truth, k));
        let (h, w) = (feats[0].h, feats[0].w);
        let ceiling: Vec<Vec<u8>> = truth
            .iter()
            .map(|m| hard_labels(&soft_labels(m, (s, s), k, (h, w)), (h, w), k, (s, s)))
            .collect();
        j_ceiling.extend(j_per_object(&ceiling, &truth, k));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let correspondence = proto
        .gaps
        .iter()
        .zip(&errors)
        .map(|(gap, e)| PckRow {
            name: format!("scenes, frames {gap} apart"),
            thresholds: proto.thresholds.clone(),
            pck: pck(e, &proto.thresholds),
            points: e.len(),
        })
        .collect();
    Ok(SceneReport {
        protocol: proto.clone(),
        correspondence,
        j_mean: mean(&js),
        objects: js.len(),
        j_static: mean(&j_static),
        j_ceiling: mean(&j_ceiling),
    })
}

/// PCK of one image pair at `width` working pixels, the queries from `make(scale)`.
fn pair_pck(
    name: &str,
    (a, b): (&Rgb, &Rgb),
    width: usize,
    thresholds: &[f32],
    source: &FeatureSource,
    make: impl Fn(f32) -> Queries,
) -> anyhow::Result<PckRow> {
    let scale = width as f32 / a.width as f32;
    let ra = a.resized(width);
    let rb = b.resized((b.width as f32 * scale).round() as usize);
    let fa = source
        .features(&ra.pixels, (ra.height, ra.width))?
        .remove(0)
        .resized(ra.height, ra.width);
    let fb = source
        .features(&rb.pixels, (rb.height, rb.width))?
        .remove(0)
        .resized(rb.height, rb.width);
    let e = match_errors(&fa, &fb, &make(scale))?;
    Ok(PckRow {
        name: name.to_string(),
        thresholds: thresholds.to_vec(),
        pck: pck(&e, thresholds),
        points: e.len(),
    })
}

/// PCK@{2, 4, 8} working pixels on a stereo pair (left → right) at `width` pixels wide.
pub fn evaluate_stereo(
    pair: &StereoPair,
    width: usize,
    step: usize,
    source: &FeatureSource,
) -> anyhow::Result<PckRow> {
    pair_pck(
        pair.name,
        (&pair.left, &pair.right),
        width,
        &[2.0, 4.0, 8.0],
        source,
        |scale| stereo_queries(pair, scale, step),
    )
}

/// PCK@{2, 4, 8} working pixels on a homography pair (first → second) at `width` pixels wide.
pub fn evaluate_homography(
    pair: &HomographyPair,
    width: usize,
    step: usize,
    source: &FeatureSource,
) -> anyhow::Result<PckRow> {
    pair_pck(
        pair.name,
        (&pair.first, &pair.second),
        width,
        &[2.0, 4.0, 8.0],
        source,
        |scale| homography_queries(pair, scale, step),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_data::scenes::ObjectKind;

    /// On scenes whose clips do not move (zero speed, pan and scale change), every frame is the
    /// first: with objects and background of random texture (no two patches alike), raw pixels
    /// match every query to itself (PCK 1.0) and propagation keeps every label (J 1.0).
    #[test]
    fn still_scenes_score_pck_one_and_j_one() {
        use rand::Rng;
        let mut rng = gyre_rng::stream([9, 0, 0, 0]);
        let objects: Vec<u8> = (0..8 * 12 * 12).map(|_| rng.gen_range(24..=255)).collect();
        let garments = gyre_data::ImageSet::new(
            "noise-objects",
            (12, 12, 1),
            objects,
            Some((0..8).map(|i| i % 4).collect()),
            vec![],
        )
        .unwrap();
        let bg: Vec<u8> = (0..4 * 16 * 16 * 3).map(|_| rng.gen()).collect();
        let bg = gyre_data::ImageSet::new("noise-bg", (16, 16, 3), bg, None, vec![]).unwrap();
        let sources = SceneSources::from_parts(vec![(ObjectKind::Garment, garments)], bg).unwrap();
        let proto = SceneProtocol {
            scene: SceneConfig {
                size: 32,
                frames: 3,
                max_speed: 0.0,
                max_pan: 0.0,
                scale_rate: 0.0,
                zoom: 1.0,
                scale: [1.0, 1.5],
                ..SceneConfig::default()
            },
            clips: 3,
            gaps: vec![1, 2],
            query_step: 2,
            ..SceneProtocol::default()
        };
        let raw = FeatureSource::RawPixels {
            stride: 1,
            patch: 5,
        };
        let r = evaluate_scenes(&proto, &sources, &raw).unwrap();
        assert_eq!(r.correspondence.len(), 2);
        for row in &r.correspondence {
            // Every query pixel (16×16 per pair; all valid when nothing moves).
            assert_eq!(
                row.points,
                3 * (3 - if row.name.contains("2 apart") { 2 } else { 1 }) * 256
            );
            assert_eq!(row.pck, [1.0; 4], "{row:?}");
        }
        assert!(r.objects >= 6);
        assert_eq!(r.j_mean, 1.0);
    }
}
