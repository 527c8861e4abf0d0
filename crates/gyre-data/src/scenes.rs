//! Moving-object scenes made of real images: clips of T frames in which Fashion-MNIST garments and
//! CIFAR-10 objects move and change scale over a panning background textured by other real
//! images, each clip with its per-pixel class and instance masks and the true flow between any
//! two of its frames. The masks and the flow are for evaluation only: training sees the frames
//! and, at most, which frames share a clip (the image-level pair).
//!
//! A clip is a [`Motion`] (drawn from the clip's own keyed stream: seed, split, clip index) and
//! its rendering; both are pure functions of their inputs, so the same seed gives the same clips
//! bit for bit at any thread count, and a test can render a hand-made motion.
//!
//! Geometry, in continuous frame coordinates (pixel `(x, y)` covers `[x, x+1) × [y, y+1)`, its
//! centre at `(x + ½, y + ½)`): object `o` at frame `t` has centre `c + v·t` and scale
//! `s·(1 + r·t)` frame pixels per source pixel; the source point `u` (source pixel coordinates)
//! shows at `centre + scale·(u − side/2)`. The background shows texture point
//! `(p + pan + w·t) / zoom` at frame point `p`, the texture being the background image mirrored
//! without end. Objects are drawn in order, the last on top. A pixel belongs to the topmost object
//! whose mask (nearest source pixel) covers its centre; colours are sampled bilinearly.

use crate::dataset::ImageSet;
use crate::error::DataError;
use rand::Rng;
use rayon::prelude::*;

/// The stream tag of scene generation.
const SCENE_TAG: u64 = gyre_rng::tag(b"gyrescen");

/// How clips are drawn. Defaults: 64-pixel frames, 8 per clip, 2–4 objects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SceneConfig {
    /// Frame side in pixels (square frames).
    pub size: usize,
    /// Frames per clip (T ≥ 2).
    pub frames: usize,
    /// Objects per clip, drawn uniformly in `[min_objects, max_objects]` (at most 254).
    pub min_objects: usize,
    pub max_objects: usize,
    /// An object's first scale (frame pixels per source pixel), uniform in this range.
    pub scale: [f32; 2],
    /// Relative scale change per frame, uniform in `[−scale_rate, scale_rate]`.
    pub scale_rate: f32,
    /// Largest speed of an object along each axis, frame pixels per frame.
    pub max_speed: f32,
    /// Background magnification (frame pixels per background-image pixel).
    pub zoom: f32,
    /// Largest background pan along each axis, frame pixels per frame.
    pub max_pan: f32,
    /// A garment pixel is foreground when its grey value is at least this.
    pub garment_threshold: u8,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            size: 64,
            frames: 8,
            min_objects: 2,
            max_objects: 4,
            scale: [0.6, 1.0],
            scale_rate: 0.03,
            max_speed: 2.5,
            zoom: 3.0,
            max_pan: 1.5,
            garment_threshold: 24,
        }
    }
}

impl SceneConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field: &'static str, problem: String| Err(DataError::Scene { field, problem });
        if !(8..=1024).contains(&self.size) {
            return bad("size", format!("{} must be in 8..=1024", self.size));
        }
        if !(2..=256).contains(&self.frames) {
            return bad("frames", format!("{} must be in 2..=256", self.frames));
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > 254 {
            return bad(
                "min_objects",
                format!(
                    "[{}, {}] must satisfy 1 ≤ min_objects ≤ max_objects ≤ 254",
                    self.min_objects, self.max_objects
                ),
            );
        }
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad("scale", format!("{:?} must be 0 < lo ≤ hi", self.scale));
        }
        let extent = self.scale_rate * (self.frames - 1) as f32;
        if !(self.scale_rate.is_finite() && self.scale_rate >= 0.0 && extent < 0.9) {
            return bad(
                "scale_rate",
                format!(
                    "{} must be ≥ 0 and small enough that an object keeps > 10% of its size \
                     over the clip (scale_rate · (frames − 1) < 0.9)",
                    self.scale_rate
                ),
            );
        }
        for (field, v) in [("max_speed", self.max_speed), ("max_pan", self.max_pan)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v} must be finite and ≥ 0"));
            }
        }
        if !(self.zoom.is_finite() && self.zoom > 0.0) {
            return bad("zoom", format!("{} must be finite and > 0", self.zoom));
        }
        Ok(())
    }
}

/// How an object's mask is made from its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A grey garment: the pixels at or above the threshold, tinted with the object's colour.
    Garment,
    /// A colour tile: the ellipse inscribed in the image.
    Tile,
}

/// One kind of object source: labelled images and the number of the first of their classes in
/// the scene's class list (0 is the background).
#[derive(Debug, Clone)]
pub struct ObjectSource {
    pub kind: ObjectKind,
    pub images: ImageSet,
    pub first_class: u16,
}

/// The real images a split's clips are made of. Train and held-out clips take theirs from
/// disjoint sets (e.g. the datasets' train and test splits).
#[derive(Debug, Clone)]
pub struct SceneSources {
    pub objects: Vec<ObjectSource>,
    pub backgrounds: ImageSet,
    /// `classes[0] = "background"`, then each object source's classes in order.
    pub classes: Vec<String>,
}

impl SceneSources {
    /// Garments (grey, labelled) and CIFAR-style colour images, of which the even-numbered ones
    /// become object tiles and the odd-numbered ones backgrounds, so that no image is both.
    pub fn new(garments: ImageSet, colour: ImageSet) -> Result<Self, DataError> {
        let even: Vec<usize> = (0..colour.len()).step_by(2).collect();
        let odd: Vec<usize> = (1..colour.len()).step_by(2).collect();
        let tiles = colour.select(format!("{}[even]", colour.name), &even);
        let backgrounds = colour.select(format!("{}[odd]", colour.name), &odd);
        Self::from_parts(
            vec![(ObjectKind::Garment, garments), (ObjectKind::Tile, tiles)],
            backgrounds,
        )
    }

    /// Object sets in drawing order of their classes, and the background images.
    pub fn from_parts(
        objects: Vec<(ObjectKind, ImageSet)>,
        backgrounds: ImageSet,
    ) -> Result<Self, DataError> {
        if backgrounds.is_empty() {
            return Err(DataError::Loader(format!(
                "{}: no background images",
                backgrounds.name
            )));
        }
        let mut classes = vec!["background".to_string()];
        let mut out = Vec::new();
        for (kind, images) in objects {
            if images.is_empty() {
                return Err(DataError::Loader(format!(
                    "{}: no object images",
                    images.name
                )));
            }
            let Some(labels) = images.labels() else {
                return Err(DataError::Loader(format!(
                    "{}: object images need class labels (the class masks come from them)",
                    images.name
                )));
            };
            let n_classes = images
                .classes
                .len()
                .max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
            if kind == ObjectKind::Garment && images.channels != 1 {
                return Err(DataError::Loader(format!(
                    "{}: garments must be grey (1 channel), not {}",
                    images.name, images.channels
                )));
            }
            let first_class = classes.len();
            if first_class + n_classes > u8::MAX as usize + 1 {
                return Err(DataError::Loader(format!(
                    "{}: more than 255 object classes in all",
                    images.name
                )));
            }
            for c in 0..n_classes {
                classes.push(images.classes.get(c).cloned().unwrap_or(c.to_string()));
            }
            out.push(ObjectSource {
                kind,
                images,
                first_class: first_class as u16,
            });
        }
        if out.is_empty() {
            return Err(DataError::Loader("scene sources: no object sets".into()));
        }
        Ok(Self {
            objects: out,
            backgrounds,
            classes,
        })
    }
}

/// One object's path through a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Which object source, and which of its images.
    pub source: usize,
    pub image: usize,
    /// Centre at frame 0 and velocity (frame pixels per frame), `[x, y]`.
    pub centre: [f32; 2],
    pub velocity: [f32; 2],
    /// Scale at frame 0 and its relative change per frame: scale(t) = scale·(1 + scale_rate·t).
    pub scale: f32,
    pub scale_rate: f32,
    /// Garments are tinted with this RGB colour (factors in [0, 1]); tiles ignore it.
    pub tint: [f32; 3],
}

impl Track {
    fn centre_at(&self, t: f32) -> [f32; 2] {
        [
            self.centre[0] + self.velocity[0] * t,
            self.centre[1] + self.velocity[1] * t,
        ]
    }

    fn scale_at(&self, t: f32) -> f32 {
        self.scale * (1.0 + self.scale_rate * t)
    }
}

/// Everything random about a clip: its background, pan and object tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    pub background: usize,
    /// Texture offset at frame 0 and pan per frame, frame pixels, `[x, y]`.
    pub pan: [f32; 2],
    pub pan_velocity: [f32; 2],
    /// Bottom to top.
    pub tracks: Vec<Track>,
}

impl Motion {
    /// The motion of clip `index` of `split` for `seed` (its own stream).
    pub fn draw(
        cfg: &SceneConfig,
        sources: &SceneSources,
        seed: u64,
        split: u64,
        index: u64,
    ) -> Self {
        let mut rng = gyre_rng::stream([seed, split, index, SCENE_TAG]);
        let size = cfg.size as f32;
        let span = (cfg.frames - 1) as f32;
        let sym = |rng: &mut gyre_rng::ChaCha8Rng, m: f32| {
            if m > 0.0 {
                rng.gen_range(-m..=m)
            } else {
                0.0
            }
        };
        let background = rng.gen_range(0..sources.backgrounds.len());
        let period =
            2.0 * cfg.zoom * sources.backgrounds.width.max(sources.backgrounds.height) as f32;
        let pan = [rng.gen_range(0.0..period), rng.gen_range(0.0..period)];
        let pan_velocity = [sym(&mut rng, cfg.max_pan), sym(&mut rng, cfg.max_pan)];
        let n = rng.gen_range(cfg.min_objects..=cfg.max_objects);
        let mut tracks = Vec::with_capacity(n);
        for _ in 0..n {
            let source = rng.gen_range(0..sources.objects.len());
            let image = rng.gen_range(0..sources.objects[source].images.len());
            let [lo, hi] = cfg.scale;
            let scale = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
            let scale_rate = sym(&mut rng, cfg.scale_rate);
            let mut centre = [0.0; 2];
            let mut velocity = [0.0; 2];
            for a in 0..2 {
                // The centre stays in the middle 60% of the frame over the whole clip.
                let (lo, hi) = (0.2 * size, 0.8 * size);
                let v = sym(&mut rng, cfg.max_speed.min((hi - lo) / span.max(1.0)));
                let (first, last) = (lo - (v * span).min(0.0), hi - (v * span).max(0.0));
                centre[a] = if last > first {
                    rng.gen_range(first..=last)
                } else {
                    first
                };
                velocity[a] = v;
            }
            let tint = [
                rng.gen_range(0.35..=1.0),
                rng.gen_range(0.35..=1.0),
                rng.gen_range(0.35..=1.0),
            ];
            tracks.push(Track {
                source,
                image,
                centre,
                velocity,
                scale,
                scale_rate,
                tint,
            });
        }
        Self {
            background,
            pan,
            pan_velocity,
            tracks,
        }
    }
}

/// A rendered clip: `frames` RGB frames of `size × size`, their class and instance masks
/// (instance 0 = background, `k` = the motion's track `k − 1`), and the motion they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub size: usize,
    pub frames: usize,
    /// `[frames, size, size, 3]`.
    pub pixels: Vec<u8>,
    /// `[frames, size, size]`: the scene class (0 = background).
    pub classes: Vec<u8>,
    /// `[frames, size, size]`.
    pub instances: Vec<u8>,
    pub motion: Motion,
}

/// Where each pixel of one frame is in another: `[size, size, 2]` displacements (x, y) of the
/// pixel centre, and whether the point is inside the other frame and visible there (the same
/// instance at the pixel it lands in).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub size: usize,
    pub displacement: Vec<[f32; 2]>,
    pub valid: Vec<bool>,
}

impl Clip {
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.size * self.size * 3;
        &self.pixels[t * n..(t + 1) * n]
    }

    pub fn class_mask(&self, t: usize) -> &[u8] {
        let n = self.size * self.size;
        &self.classes[t * n..(t + 1) * n]
    }

    pub fn instance_mask(&self, t: usize) -> &[u8] {
        let n = self.size * self.size;
        &self.instances[t * n..(t + 1) * n]
    }

    /// The true flow from frame `a` to frame `b` (any two frames, either order).
    pub fn flow(&self, a: usize, b: usize) -> Flow {
        let s = self.size;
        let (inst_a, inst_b) = (self.instance_mask(a), self.instance_mask(b));
        let mut displacement = vec![[0.0f32; 2]; s * s];
        let mut valid = vec![false; s * s];
        for y in 0..s {
            for x in 0..s {
                let i = y * s + x;
                let p = [x as f32 + 0.5, y as f32 + 0.5];
                let (q, ok) = carry(s, inst_a, inst_b, &self.motion, a, b, p);
                displacement[i] = [q[0] - p[0], q[1] - p[1]];
                valid[i] = ok;
            }
        }
        Flow {
            size: s,
            displacement,
            valid,
        }
    }
}

/// Where point `p` of frame `a` is in frame `b`, and whether it is visible there (inside the
/// frame, on the same instance): the background pans, an object's points move and scale with
/// its track. The instance at `p` is the one of the pixel that contains it.
fn carry(
    s: usize,
    inst_a: &[u8],
    inst_b: &[u8],
    motion: &Motion,
    a: usize,
    b: usize,
    p: [f32; 2],
) -> ([f32; 2], bool) {
    let (ta, tb) = (a as f32, b as f32);
    let pixel = |q: [f32; 2]| pixel_of(s, q);
    let Some(pi) = pixel(p) else {
        return (p, false);
    };
    let inst = inst_a[pi];
    let q = if inst == 0 {
        [
            p[0] + motion.pan_velocity[0] * (ta - tb),
            p[1] + motion.pan_velocity[1] * (ta - tb),
        ]
    } else {
        let tr = &motion.tracks[inst as usize - 1];
        let (ca, cb) = (tr.centre_at(ta), tr.centre_at(tb));
        let k = tr.scale_at(tb) / tr.scale_at(ta);
        [cb[0] + k * (p[0] - ca[0]), cb[1] + k * (p[1] - ca[1])]
    };
    let visible = pixel(q).is_some_and(|qi| inst_b[qi] == inst);
    (q, visible)
}

/// The index of the pixel of an `s × s` frame that contains point `q`; `None` outside it.
fn pixel_of(s: usize, q: [f32; 2]) -> Option<usize> {
    let (qx, qy) = (q[0].floor(), q[1].floor());
    (qx >= 0.0 && qy >= 0.0 && qx < s as f32 && qy < s as f32)
        .then(|| qy as usize * s + qx as usize)
}

/// What a set of clips hides from training, kept for diagnostics only (never a training
/// signal): every frame's class and instance masks and every clip's motion. Frames are named by
/// their index in the clips' frames laid end to end (`clip · frames + t`), as the training set
/// lays them out.
#[derive(Debug, Clone)]
pub struct SceneTruth {
    size: usize,
    frames: usize,
    classes: Vec<u8>,
    instances: Vec<u8>,
    motions: Vec<Motion>,
}

impl SceneTruth {
    pub fn from_clips(clips: &[Clip]) -> Self {
        let (size, frames) = clips.first().map_or((0, 1), |c| (c.size, c.frames));
        Self {
            size,
            frames,
            classes: clips
                .iter()
                .flat_map(|c| c.classes.iter().copied())
                .collect(),
            instances: clips
                .iter()
                .flat_map(|c| c.instances.iter().copied())
                .collect(),
            motions: clips.iter().map(|c| c.motion.clone()).collect(),
        }
    }

    /// Frames in all.
    pub fn len(&self) -> usize {
        self.motions.len() * self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.motions.is_empty()
    }

    fn mask<'a>(&self, m: &'a [u8], frame: usize) -> &'a [u8] {
        let n = self.size * self.size;
        &m[frame * n..(frame + 1) * n]
    }

    /// Where point `p` (pixel units) of frame `a` is in frame `b`: `None` when the frames are of
    /// different clips (or out of range), or the point is outside `a`, or not visible in `b`.
    pub fn track(&self, a: usize, b: usize, p: [f32; 2]) -> Option<[f32; 2]> {
        let (ca, cb) = (a / self.frames, b / self.frames);
        if ca != cb || ca >= self.motions.len() {
            return None;
        }
        let (q, visible) = carry(
            self.size,
            self.mask(&self.instances, a),
            self.mask(&self.instances, b),
            &self.motions[ca],
            a % self.frames,
            b % self.frames,
            p,
        );
        visible.then_some(q)
    }

    /// The class of the pixel of `frame` that contains `p`; `None` outside the frame.
    pub fn class_at(&self, frame: usize, p: [f32; 2]) -> Option<u8> {
        if frame >= self.len() {
            return None;
        }
        pixel_of(self.size, p).map(|i| self.mask(&self.classes, frame)[i])
    }
}

/// Mirror-extends `v` into `[0, n)`: …, 1, 0, 0, 1, …, n−1, n−1, n−2, ….
fn mirror(v: i64, n: usize) -> usize {
    let n = n as i64;
    let m = v.rem_euclid(2 * n);
    (if m < n { m } else { 2 * n - 1 - m }) as usize
}

/// Bilinear sample of channel `c` of an HWC image at continuous point `(x, y)` (pixel centres at
/// half-integers), outside points taken from the mirrored image.
fn bilinear(img: &[u8], (h, w, ch): (usize, usize, usize), x: f32, y: f32, c: usize) -> f32 {
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (ax, ay) = (fx - x0, fy - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let px = |xx: i64, yy: i64| img[(mirror(yy, h) * w + mirror(xx, w)) * ch + c] as f32;
    let top = px(x0, y0) * (1.0 - ax) + px(x0 + 1, y0) * ax;
    let bottom = px(x0, y0 + 1) * (1.0 - ax) + px(x0 + 1, y0 + 1) * ax;
    top * (1.0 - ay) + bottom * ay
}

/// Renders `motion` with `sources` into a clip.
pub fn render(
    cfg: &SceneConfig,
    sources: &SceneSources,
    motion: &Motion,
) -> Result<Clip, DataError> {
    let (s, t_len) = (cfg.size, cfg.frames);
    let bg_set = &sources.backgrounds;
    let bg = bg_set.image(motion.background)?;
    let bg_shape = (bg_set.height, bg_set.width, bg_set.channels);
    let mut objects = Vec::with_capacity(motion.tracks.len());
    for tr in &motion.tracks {
        let src = sources.objects.get(tr.source).ok_or_else(|| {
            DataError::Loader(format!("scene motion: no object source {}", tr.source))
        })?;
        if tr.image >= src.images.len() {
            return Err(DataError::Loader(format!(
                "{}: no image {} ({} images)",
                src.images.name,
                tr.image,
                src.images.len()
            )));
        }
        let label = src.images.label(tr.image).unwrap_or(0);
        objects.push((
            src,
            src.images.image(tr.image)?,
            src.first_class + label as u16,
        ));
    }
    let mut pixels = vec![0u8; t_len * s * s * 3];
    let mut classes = vec![0u8; t_len * s * s];
    let mut instances = vec![0u8; t_len * s * s];
    for t in 0..t_len {
        let tf = t as f32;
        let pan = [
            motion.pan[0] + motion.pan_velocity[0] * tf,
            motion.pan[1] + motion.pan_velocity[1] * tf,
        ];
        for y in 0..s {
            for x in 0..s {
                let i = t * s * s + y * s + x;
                let p = [x as f32 + 0.5, y as f32 + 0.5];
                let mut rgb = None;
                for (k, (tr, (src, img, class))) in
                    motion.tracks.iter().zip(&objects).enumerate().rev()
                {
                    let (h, w, ch) = (src.images.height, src.images.width, src.images.channels);
                    let (c, sc) = (tr.centre_at(tf), tr.scale_at(tf));
                    let u = [
                        (p[0] - c[0]) / sc + w as f32 / 2.0,
                        (p[1] - c[1]) / sc + h as f32 / 2.0,
                    ];
                    if u[0] < 0.0 || u[1] < 0.0 || u[0] >= w as f32 || u[1] >= h as f32 {
                        continue;
                    }
                    let (ux, uy) = (u[0] as usize, u[1] as usize);
                    let inside = match src.kind {
                        ObjectKind::Garment => img[(uy * w + ux) * ch] >= cfg.garment_threshold,
                        ObjectKind::Tile => {
                            let dx = (ux as f32 + 0.5) / w as f32 * 2.0 - 1.0;
                            let dy = (uy as f32 + 0.5) / h as f32 * 2.0 - 1.0;
                            dx * dx + dy * dy <= 1.0
                        }
                    };
                    if !inside {
                        continue;
                    }
                    let mut v = [0f32; 3];
                    for (cc, vc) in v.iter_mut().enumerate() {
                        *vc = match (src.kind, ch) {
                            (ObjectKind::Garment, _) => {
                                bilinear(img, (h, w, ch), u[0], u[1], 0) * tr.tint[cc]
                            }
                            (_, 1) => bilinear(img, (h, w, ch), u[0], u[1], 0),
                            _ => bilinear(img, (h, w, ch), u[0], u[1], cc.min(ch - 1)),
                        };
                    }
                    rgb = Some(v);
                    classes[i] = *class as u8;
                    instances[i] = (k + 1) as u8;
                    break;
                }
                let v = rgb.unwrap_or_else(|| {
                    let q = [(p[0] + pan[0]) / cfg.zoom, (p[1] + pan[1]) / cfg.zoom];
                    let mut v = [0f32; 3];
                    for (cc, vc) in v.iter_mut().enumerate() {
                        *vc = bilinear(&bg, bg_shape, q[0], q[1], cc.min(bg_shape.2 - 1));
                    }
                    v
                });
                for (cc, vc) in v.iter().enumerate() {
                    pixels[i * 3 + cc] = vc.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    Ok(Clip {
        size: s,
        frames: t_len,
        pixels,
        classes,
        instances,
        motion: motion.clone(),
    })
}

/// Split numbers: train and held-out clips come from different streams (and should come from
/// disjoint [`SceneSources`]).
pub const TRAIN_SPLIT: u64 = 0;
pub const HELD_OUT_SPLIT: u64 = 1;

/// Clips `range` of `split` for `seed`, drawn and rendered in parallel; the same clips at any
/// thread count.
pub fn generate(
    cfg: &SceneConfig,
    sources: &SceneSources,
    seed: u64,
    split: u64,
    range: std::ops::Range<u64>,
) -> Result<Vec<Clip>, DataError> {
    cfg.validate()?;
    range
        .into_par_iter()
        .map(|i| render(cfg, sources, &Motion::draw(cfg, sources, seed, split, i)))
        .collect()
}

#[cfg(test)]
mod tests;
