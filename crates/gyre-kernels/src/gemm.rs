//! A safe single-precision matrix multiply over slices, on the `gemm` crate (the one candle uses;
//! its AVX-512 kernels are picked at run time where the CPU has them).

/// A row-major or transposed view of a matrix in a slice: element (i, j) is at `i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn max_index(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * self.rs + (c - 1) * self.cs
        }
    }
}

/// `c[m×n] (row-major, leading dimension ldc) = a[m×k] · b[k×n]`, or `+=` when `accumulate`.
/// Single-threaded: callers parallelise over independent products.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.max_index(m, k) < a.data.len().max(1) || k == 0,
        "lhs out of bounds"
    );
    assert!(
        b.max_index(k, n) < b.data.len().max(1) || k == 0,
        "rhs out of bounds"
    );
    assert!(
        (m - 1) * ldc + n <= c.len() && ldc >= n,
        "dst out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every index the kernel touches inside the three slices, and
    // `c` is borrowed mutably so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_transposes() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![1f32; m * n];
        sgemm(m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c, n, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
        // aᵀ (k×m stored as m×k) times itself: (aᵀ a)[i][j] = Σ_t a[t][i] a[t][j].
        let mut d = vec![0f32; k * k];
        sgemm(k, k, m, Mat::t(&a, k), Mat::rows(&a, k), &mut d, k, false);
        let want: f32 = (0..m).map(|t| a[t * k] * a[t * k + 2]).sum();
        assert!((d[2] - want).abs() < 1e-5);
    }
}
