//! Unsupervised matching for evaluations: spherical k-means of features (keyed restarts) and the
//! Hungarian assignment (maximum total weight, O(n³)). Hand-written: the one crate that has an
//! assignment solver (`pathfinding`) needs integer weights, and k-means is 40 lines.

/// The assignment of rows to columns of the `n × n` matrix `w` (row-major) with the largest
/// total weight: `result[row] = column`.
pub fn hungarian_max(w: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(w.len(), n * n, "an n × n matrix");
    if n == 0 {
        return Vec::new();
    }
    // Minimum cost on −w, the potentials form (rows 1..=n, columns 1..=n, 0 = unassigned).
    let cost = |i: usize, j: usize| -w[(i - 1) * n + (j - 1)];
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![0; n];
    for j in 1..=n {
        out[p[j] - 1] = j - 1;
    }
    out
}

/// Spherical k-means of the unit rows of `x` (`[n, d]` row-major): `restarts` runs of `iters`
/// Lloyd steps from `k` distinct rows drawn by a stream keyed on `seed`; the run with the highest
/// total cosine to its centres wins. Returns (assignment per row, centres `[k, d]`, unit rows).
pub fn kmeans_cosine(
    x: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    restarts: usize,
    seed: u64,
) -> (Vec<usize>, Vec<f32>) {
    let n = x.len() / d.max(1);
    assert!(k >= 1 && k <= n, "k-means: k = {k} for {n} rows");
    let mut best: Option<(f64, Vec<usize>, Vec<f32>)> = None;
    for r in 0..restarts.max(1) {
        let mut rng = gyre_rng::stream([seed, r as u64, gyre_rng::tag(b"kmeans__"), 0]);
        let init = rand::seq::index::sample(&mut rng, n, k);
        let mut centres: Vec<f32> = init
            .iter()
            .flat_map(|i| x[i * d..(i + 1) * d].to_vec())
            .collect();
        let mut assign = vec![0usize; n];
        let mut score = 0.0;
        for _ in 0..iters.max(1) {
            score = 0.0;
            for (i, a) in assign.iter_mut().enumerate() {
                let row = &x[i * d..(i + 1) * d];
                let (mut bj, mut bs) = (0, f32::NEG_INFINITY);
                for j in 0..k {
                    let s: f32 = row
                        .iter()
                        .zip(&centres[j * d..(j + 1) * d])
                        .map(|(a, b)| a * b)
                        .sum();
                    if s > bs {
                        bs = s;
                        bj = j;
                    }
                }
                *a = bj;
                score += bs as f64;
            }
            let mut sums = vec![0f32; k * d];
            for (i, &a) in assign.iter().enumerate() {
                for (s, v) in sums[a * d..(a + 1) * d]
                    .iter_mut()
                    .zip(&x[i * d..(i + 1) * d])
                {
                    *s += v;
                }
            }
            for j in 0..k {
                let c = &mut sums[j * d..(j + 1) * d];
                let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    c.iter_mut().for_each(|v| *v /= norm);
                    centres[j * d..(j + 1) * d].copy_from_slice(c);
                }
                // An empty cluster keeps its centre.
            }
        }
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, assign, centres));
        }
    }
    let (_, a, c) = best.expect("one restart");
    (a, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn brute(w: &[f64], n: usize) -> f64 {
        fn go(w: &[f64], n: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == n {
                return 0.0;
            }
            let mut best = f64::NEG_INFINITY;
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    best = best.max(w[row * n + j] + go(w, n, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(w, n, 0, &mut vec![false; n])
    }

    #[test]
    fn hungarian_finds_the_best_assignment_of_brute_force() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for case in 0..200 {
            let n = 1 + case % 7;
            let w: Vec<f64> = (0..n * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let a = hungarian_max(&w, n);
            let mut seen = a.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "a permutation");
            let got: f64 = a.iter().enumerate().map(|(i, &j)| w[i * n + j]).sum();
            assert!(
                (got - brute(&w, n)).abs() < 1e-9,
                "case {case}: {got} vs {}",
                brute(&w, n)
            );
        }
        // A planted permutation with a clear margin.
        let n = 5;
        let perm = [3, 0, 4, 1, 2];
        let w: Vec<f64> = (0..n * n)
            .map(|k| if perm[k / n] == k % n { 1.0 } else { 0.1 })
            .collect();
        assert_eq!(hungarian_max(&w, n), perm);
    }

    #[test]
    fn kmeans_recovers_separated_directions() {
        // Three tight bundles around the axes of R³.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut x = Vec::new();
        let mut truth = Vec::new();
        for i in 0..90 {
            let axis = i % 3;
            let mut v = [0f32; 3];
            v[axis] = 1.0;
            for c in &mut v {
                *c += rng.gen_range(-0.1..0.1);
            }
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            x.extend(v.iter().map(|a| a / n));
            truth.push(axis);
        }
        let (a, c) = kmeans_cosine(&x, 3, 3, 20, 4, 7);
        // Same partition as the truth, up to naming.
        for i in 0..90 {
            for j in 0..90 {
                assert_eq!(a[i] == a[j], truth[i] == truth[j]);
            }
        }
        assert_eq!(c.len(), 9);
        assert_eq!(
            kmeans_cosine(&x, 3, 3, 20, 4, 7).0,
            a,
            "keyed: the same again"
        );
    }
}
