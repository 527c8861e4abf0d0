//! InterCLR's memory: a dataset-sized bank of momentum keys, online cluster labels from
//! mini-batch k-means, and the semi-hard negative sampler (mmselfsup 0.x `interclr_memory.py`,
//! `interclr_hook.py`; `methods.md` §6, §9.8).
//!
//! - `bank[i]` holds the L2-normalised key of dataset image `i` (momentum 1: replaced on visit);
//!   rows not yet visited hold normalised Gaussian noise.
//! - [`ClusterBank::init_kmeans`]: Lloyd's k-means over the bank (seeded, cosine similarity),
//!   then every label.
//! - [`ClusterBank::update`] after each step: write the batch's keys, relabel them by their
//!   nearest centroid, refresh every centroid every `centroid_every` updates, and dissolve
//!   clusters below `min_cluster` members (members go to the nearest remaining centroid; the empty
//!   cluster is re-seeded by splitting the largest one with 2-means, random halves if 2-means
//!   fails), so that after every update each cluster has at least `min_cluster` members.
//! - [`ClusterBank::sample`]: per query, a positive drawn uniformly from its cluster and negatives
//!   drawn uniformly (without replacement) from the `pool` most similar bank rows, redrawing any
//!   that share the query's label.
//!
//! Everything runs on the CPU over plain slices, with streams keyed on (seed, step).

use gyre_rng::ChaCha8Rng;
use rand::{seq::SliceRandom, Rng};

/// The memory.
#[derive(Debug, Clone)]
pub struct ClusterBank {
    n: usize,
    d: usize,
    k: usize,
    min_cluster: usize,
    centroid_every: usize,
    seed: u64,
    bank: Vec<f32>,
    labels: Vec<u32>,
    centroids: Vec<f32>,
    sizes: Vec<usize>,
    updates: u64,
    /// Set once k-means has run; before that there are no labels.
    pub ready: bool,
    /// Labels that changed in the last update, as a fraction of the batch.
    pub change_ratio: f64,
}

fn rng(seed: u64, step: u64, tag: &[u8; 8]) -> ChaCha8Rng {
    gyre_rng::stream([seed, step, gyre_rng::tag(tag), 0])
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

impl ClusterBank {
    /// A bank of `n` rows of width `d`, with `k` clusters.
    pub fn new(
        n: usize,
        d: usize,
        k: usize,
        min_cluster: usize,
        centroid_every: usize,
        seed: u64,
    ) -> Self {
        use rand_distr::{Distribution, StandardNormal};
        let mut r = rng(seed, u64::MAX, b"icbank__");
        let mut bank: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(&mut r)).collect();
        bank.chunks_mut(d).for_each(normalise);
        Self {
            n,
            d,
            k,
            min_cluster,
            centroid_every: centroid_every.max(1),
            seed,
            bank,
            labels: vec![0; n],
            centroids: vec![0.0; k * d],
            sizes: vec![0; k],
            updates: 0,
            ready: false,
            change_ratio: 0.0,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// The bank rows, row-major `[n, d]`.
    pub fn rows(&self) -> &[f32] {
        &self.bank
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The memory as named tensors under `prefix` (for checkpoints).
    pub fn state(&self, prefix: &str) -> gyre_kernels::Result<Vec<(String, gyre_kernels::Tensor)>> {
        use gyre_kernels::{Device, Tensor};
        let dev = Device::Cpu;
        Ok(vec![
            (
                format!("{prefix}.bank"),
                Tensor::from_slice(&self.bank, (self.n, self.d), &dev)?,
            ),
            (
                format!("{prefix}.labels"),
                Tensor::from_slice(&self.labels, self.n, &dev)?,
            ),
            (
                format!("{prefix}.centroids"),
                Tensor::from_slice(&self.centroids, (self.k, self.d), &dev)?,
            ),
            (
                format!("{prefix}.updates_ready"),
                Tensor::from_slice(&[self.updates as u32, u32::from(self.ready)], 2, &dev)?,
            ),
        ])
    }

    /// Restores what [`Self::state`] wrote (same sizes).
    pub fn load_state(
        &mut self,
        prefix: &str,
        t: &std::collections::HashMap<String, gyre_kernels::Tensor>,
    ) -> gyre_kernels::Result<()> {
        let get = |k: &str| {
            let key = format!("{prefix}.{k}");
            t.get(&key)
                .ok_or_else(|| gyre_kernels::candle::Error::Msg(format!("checkpoint lacks {key}")))
        };
        let bank = get("bank")?.flatten_all()?.to_vec1::<f32>()?;
        let labels = get("labels")?.to_vec1::<u32>()?;
        let centroids = get("centroids")?.flatten_all()?.to_vec1::<f32>()?;
        if bank.len() != self.n * self.d
            || labels.len() != self.n
            || centroids.len() != self.k * self.d
        {
            gyre_kernels::candle::bail!("{prefix}: the checkpoint's bank has other sizes");
        }
        let ur = get("updates_ready")?.to_vec1::<u32>()?;
        (self.bank, self.labels, self.centroids) = (bank, labels, centroids);
        (self.updates, self.ready) = (ur[0] as u64, ur[1] != 0);
        self.recount();
        Ok(())
    }

    /// Members per cluster.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.bank[i * self.d..(i + 1) * self.d]
    }

    fn nearest(&self, v: &[f32], allowed: &dyn Fn(usize) -> bool) -> u32 {
        let mut best = (f32::NEG_INFINITY, 0u32);
        for c in 0..self.k {
            if !allowed(c) {
                continue;
            }
            let s = dot(v, &self.centroids[c * self.d..(c + 1) * self.d]);
            if s > best.0 {
                best = (s, c as u32);
            }
        }
        best.1
    }

    fn recount(&mut self) {
        self.sizes = vec![0; self.k];
        for &l in &self.labels {
            self.sizes[l as usize] += 1;
        }
    }

    /// Centroid `c` = normalised mean of its members (unchanged when it has none).
    fn refresh_centroids(&mut self, only: Option<&[usize]>) {
        let d = self.d;
        let all: Vec<usize> = (0..self.k).collect();
        let which = only.unwrap_or(&all);
        let mut sums = vec![0f32; self.k * d];
        let mut counts = vec![0usize; self.k];
        for i in 0..self.n {
            let l = self.labels[i] as usize;
            if which.contains(&l) || only.is_none() {
                counts[l] += 1;
                for (s, x) in sums[l * d..(l + 1) * d].iter_mut().zip(self.row(i)) {
                    *s += x;
                }
            }
        }
        for &c in which {
            if counts[c] > 0 {
                let mut m = sums[c * d..(c + 1) * d].to_vec();
                normalise(&mut m);
                self.centroids[c * d..(c + 1) * d].copy_from_slice(&m);
            }
        }
    }

    /// Lloyd's k-means (cosine) over the whole bank, `iters` rounds, seeded centroids; then the
    /// minimum-size rule. Marks the bank ready.
    pub fn init_kmeans(&mut self, iters: usize) {
        let mut r = rng(self.seed, u64::MAX - 1, b"kmeans__");
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut r);
        for c in 0..self.k {
            let src = order[c % self.n];
            let row = self.row(src).to_vec();
            self.centroids[c * self.d..(c + 1) * self.d].copy_from_slice(&row);
        }
        for _ in 0..iters {
            for i in 0..self.n {
                self.labels[i] = self.nearest(self.row(i), &|_| true);
            }
            self.refresh_centroids(None);
        }
        self.recount();
        self.fix_small_clusters(0);
        self.ready = true;
    }

    /// Writes the batch's keys (`keys` row-major `[B, d]`, normalised here) at `indices`,
    /// relabels them, and runs the periodic maintenance (`step` seeds the re-seeding draws).
    pub fn update(&mut self, indices: &[usize], keys: &[f32], step: u64) {
        let d = self.d;
        let mut changed = 0usize;
        for (b, &i) in indices.iter().enumerate() {
            let mut v = keys[b * d..(b + 1) * d].to_vec();
            normalise(&mut v);
            self.bank[i * d..(i + 1) * d].copy_from_slice(&v);
            if self.ready {
                let l = self.nearest(&v, &|_| true);
                if l != self.labels[i] {
                    changed += 1;
                    self.sizes[self.labels[i] as usize] -= 1;
                    self.sizes[l as usize] += 1;
                    self.labels[i] = l;
                }
            }
        }
        self.change_ratio = changed as f64 / indices.len().max(1) as f64;
        if !self.ready {
            return;
        }
        self.updates += 1;
        if self.updates.is_multiple_of(self.centroid_every as u64) {
            self.refresh_centroids(None);
        }
        self.fix_small_clusters(step);
    }

    /// Dissolves every cluster below `min_cluster` members and re-seeds it by splitting the
    /// largest cluster, until none is small (or the bank is too small to satisfy the rule).
    fn fix_small_clusters(&mut self, step: u64) {
        let min = self.min_cluster;
        if min == 0 || self.n < min * self.k {
            return;
        }
        let mut r = rng(self.seed, step, b"splitcl_");
        for _round in 0..self.k {
            let small: Vec<usize> = (0..self.k).filter(|&c| self.sizes[c] < min).collect();
            if small.is_empty() {
                return;
            }
            // 1. Dissolve: members of small clusters go to the nearest non-small centroid.
            let is_small = |c: usize| self.sizes[c] < min;
            let keep: Vec<bool> = (0..self.k).map(|c| !is_small(c)).collect();
            for i in 0..self.n {
                if !keep[self.labels[i] as usize] {
                    self.labels[i] = self.nearest(self.row(i), &|c| keep[c]);
                }
            }
            self.recount();
            // 2. Re-seed each emptied cluster from the currently largest one.
            for &c in &small {
                let big = (0..self.k).max_by_key(|&j| self.sizes[j]).expect("k ≥ 1");
                if self.sizes[big] < 2 * min {
                    return;
                }
                self.split(big, c, &mut r);
                self.refresh_centroids(Some(&[big, c]));
            }
        }
    }

    /// Splits cluster `big` into `big` and the empty `into` with 2-means (10 rounds); falls back
    /// to random halves when 2-means leaves either side below the minimum size.
    fn split(&mut self, big: usize, into: usize, r: &mut ChaCha8Rng) {
        let d = self.d;
        let members: Vec<usize> = (0..self.n)
            .filter(|&i| self.labels[i] as usize == big)
            .collect();
        let a = members[r.gen_range(0..members.len())];
        let mut b = members[r.gen_range(0..members.len())];
        if a == b {
            b = members[(members.iter().position(|&m| m == a).unwrap() + 1) % members.len()];
        }
        let (mut ca, mut cb) = (self.row(a).to_vec(), self.row(b).to_vec());
        let mut side = vec![false; members.len()];
        for _ in 0..10 {
            for (s, &m) in side.iter_mut().zip(&members) {
                *s = dot(self.row(m), &cb) > dot(self.row(m), &ca);
            }
            let (mut sa, mut sb) = (vec![0f32; d], vec![0f32; d]);
            for (&s, &m) in side.iter().zip(&members) {
                let t = if s { &mut sb } else { &mut sa };
                t.iter_mut().zip(self.row(m)).for_each(|(x, y)| *x += y);
            }
            normalise(&mut sa);
            normalise(&mut sb);
            (ca, cb) = (sa, sb);
        }
        let nb = side.iter().filter(|&&s| s).count();
        let min = self.min_cluster.max(1);
        if nb < min || members.len() - nb < min {
            let mut idx: Vec<usize> = (0..members.len()).collect();
            idx.shuffle(r);
            side = vec![false; members.len()];
            for &j in &idx[..members.len() / 2] {
                side[j] = true;
            }
        }
        for (&s, &m) in side.iter().zip(&members) {
            if s {
                self.labels[m] = into as u32;
            }
        }
        self.recount();
    }

    /// Positives and negatives for the queries of one step: `sims` is `[B, n]` (row-major: the
    /// queries' cosine similarity to every bank row), `query_idx` their dataset indices. Returns
    /// (one positive per query, `negatives` per query row-major).
    pub fn sample(
        &self,
        sims: &[f32],
        query_idx: &[usize],
        pool: usize,
        negatives: usize,
        step: u64,
    ) -> (Vec<u32>, Vec<u32>) {
        let n = self.n;
        let pool = pool.min(n);
        let negatives = negatives.min(pool);
        let mut r = rng(self.seed, step, b"icsample");
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); self.k];
        for (i, &l) in self.labels.iter().enumerate() {
            members[l as usize].push(i as u32);
        }
        let mut pos = Vec::with_capacity(query_idx.len());
        let mut neg = Vec::with_capacity(query_idx.len() * negatives);
        for (b, &qi) in query_idx.iter().enumerate() {
            let y = self.labels[qi];
            let same = &members[y as usize];
            pos.push(same[r.gen_range(0..same.len())]);
            // The `pool` most similar rows (unordered), as the reference's top-k.
            let row = &sims[b * n..(b + 1) * n];
            let mut cand: Vec<u32> = (0..n as u32).collect();
            if pool < n {
                cand.select_nth_unstable_by(pool - 1, |&i, &j| {
                    row[j as usize].total_cmp(&row[i as usize])
                });
                cand.truncate(pool);
            }
            let others: Vec<u32> = cand
                .iter()
                .copied()
                .filter(|&i| self.labels[i as usize] != y)
                .collect();
            // Drawing from the pool and redrawing same-label draws = drawing from the pool's
            // other-label rows; when there are too few, the pool's others are reused.
            let source = if others.is_empty() { &cand } else { &others };
            if source.len() >= negatives {
                neg.extend(source.choose_multiple(&mut r, negatives).copied());
            } else {
                neg.extend((0..negatives).map(|_| source[r.gen_range(0..source.len())]));
            }
        }
        (pos, neg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bank whose rows come in `groups` tight directions of uneven sizes.
    fn clustered(n: usize, d: usize, sizes: &[usize], seed: u64) -> (ClusterBank, Vec<f32>) {
        use rand_distr::{Distribution, StandardNormal};
        let mut r = rng(seed, 0, b"testdata");
        let centres: Vec<Vec<f32>> = sizes
            .iter()
            .map(|_| {
                let mut c: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut r)).collect();
                normalise(&mut c);
                c
            })
            .collect();
        let mut keys = Vec::new();
        for (g, &s) in sizes.iter().enumerate() {
            for _ in 0..s {
                let mut v: Vec<f32> = centres[g]
                    .iter()
                    .map(|x| x + 0.05 * Distribution::<f32>::sample(&StandardNormal, &mut r))
                    .collect();
                normalise(&mut v);
                keys.extend(v);
            }
        }
        assert_eq!(keys.len(), n * d);
        (ClusterBank::new(n, d, sizes.len(), 20, 10, seed), keys)
    }

    #[test]
    fn every_cluster_stays_at_or_above_the_minimum_size() {
        // 10 clusters over 600 rows; the data has one big group and tiny ones, so k-means and the
        // online updates keep producing small clusters that must be dissolved and re-seeded.
        let sizes = [400, 60, 40, 30, 20, 15, 10, 10, 10, 5];
        let (mut bank, keys) = clustered(600, 8, &sizes, 1);
        let idx: Vec<usize> = (0..600).collect();
        bank.update(&idx, &keys, 0);
        assert!(!bank.ready && bank.change_ratio == 0.0);
        bank.init_kmeans(10);
        let check = |b: &ClusterBank, when: &str| {
            assert_eq!(b.sizes().iter().sum::<usize>(), 600, "{when}");
            assert!(
                b.sizes().iter().all(|&s| s >= 20),
                "{when}: {:?}",
                b.sizes()
            );
            let mut counted = vec![0usize; 10];
            b.labels().iter().for_each(|&l| counted[l as usize] += 1);
            assert_eq!(counted, b.sizes(), "{when}");
        };
        check(&bank, "after k-means");
        // Online updates that pull whole batches into one direction (the first group's).
        for step in 1..40u64 {
            let batch: Vec<usize> = (0..32)
                .map(|j| ((step as usize) * 37 + j * 11) % 600)
                .collect();
            let rows: Vec<f32> = batch
                .iter()
                .flat_map(|_| keys[..8].iter().copied())
                .collect();
            bank.update(&batch, &rows, step);
            check(&bank, &format!("step {step}"));
        }
    }

    #[test]
    fn label_change_counts_only_keys_that_moved() {
        // Revisiting images with the keys they already have changes no label, through centroid
        // refreshes and all (a renumbering of clusters would show here as a high ratio); moving a
        // batch's keys onto another group's direction changes exactly the moved ones.
        let sizes = [50, 50, 50, 50];
        let (mut bank, keys) = clustered(200, 8, &sizes, 3);
        let all: Vec<usize> = (0..200).collect();
        bank.update(&all, &keys, 0);
        bank.init_kmeans(10);
        for step in 1..=25u64 {
            let batch: Vec<usize> = (0..40).map(|j| (step as usize * 40 + j) % 200).collect();
            let rows: Vec<f32> = batch
                .iter()
                .flat_map(|&i| keys[i * 8..(i + 1) * 8].iter().copied())
                .collect();
            bank.update(&batch, &rows, step);
            assert_eq!(bank.change_ratio, 0.0, "step {step}");
        }
        // Rows 0..10 (group 0) take the direction of row 199 (group 3); rows 10..40 stay.
        let batch: Vec<usize> = (0..40).collect();
        let mut rows: Vec<f32> = Vec::new();
        for &i in &batch {
            let src = if i < 10 { 199 } else { i };
            rows.extend_from_slice(&keys[src * 8..(src + 1) * 8]);
        }
        let before = bank.labels()[199];
        bank.update(&batch, &rows, 26);
        assert_eq!(bank.change_ratio, 10.0 / 40.0);
        assert!((0..10).all(|i| bank.labels()[i] == before));
    }

    #[test]
    fn samples_same_label_positives_and_other_label_pool_negatives() {
        let sizes = [50, 50, 50, 50];
        let (mut bank, keys) = clustered(200, 8, &sizes, 2);
        bank.update(&(0..200).collect::<Vec<_>>(), &keys, 0);
        bank.init_kmeans(10);
        let q = [3usize, 120];
        let mut sims = Vec::new();
        for &qi in &q {
            for j in 0..200 {
                sims.push(dot(bank.row(qi), bank.row(j)));
            }
        }
        let (pos, neg) = bank.sample(&sims, &q, 100, 30, 5);
        assert_eq!((pos.len(), neg.len()), (2, 60));
        for (b, &qi) in q.iter().enumerate() {
            let y = bank.labels()[qi];
            assert_eq!(bank.labels()[pos[b] as usize], y);
            let mut top: Vec<usize> = (0..200).collect();
            top.sort_by(|&i, &j| sims[b * 200 + j].total_cmp(&sims[b * 200 + i]));
            let pool: Vec<usize> = top[..100].to_vec();
            let mut drawn = neg[b * 30..(b + 1) * 30].to_vec();
            for &j in &drawn {
                assert_ne!(bank.labels()[j as usize], y, "negative shares the label");
                assert!(pool.contains(&(j as usize)), "negative outside the pool");
            }
            drawn.sort();
            drawn.dedup();
            assert_eq!(drawn.len(), 30, "drawn without replacement");
        }
        assert_eq!(bank.sample(&sims, &q, 100, 30, 5), (pos, neg), "seeded");
    }
}
