//! Row-wise L2 normalisation, `x / max(‖x‖₂, eps)` as PyTorch's `F.normalize`, with a finite
//! gradient at an all-zero row.

use gyre_kernels::{Result, Tensor, D};

/// PyTorch's default `eps` for `F.normalize`.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// Normalises each row of `x` (`[N, D]`, or any rank: the last dimension) to unit L2 norm.
///
/// Computed as `x · rsqrt(max(Σx², eps²))`: the square root never sees a zero, so an all-zero row
/// maps to zero with a finite gradient (`1/eps` on the diagonal), where `x / (sqrt(Σx²) + eps)`
/// gives NaN.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    l2_normalize_dim(x, D::Minus1)
}

/// [`l2_normalize`] along `dim` (the channels of a `[B, C, S]` feature map: dim 1).
pub fn l2_normalize_dim<Dim: gyre_kernels::candle::shape::Dim>(
    x: &Tensor,
    dim: Dim,
) -> Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(dim)?;
    let denom = sq.maximum(NORMALIZE_EPS * NORMALIZE_EPS)?.sqrt()?;
    x.broadcast_div(&denom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_kernels::{Device, Var};

    #[test]
    fn unit_rows_and_zero_row() -> Result<()> {
        let x = Tensor::from_vec(vec![3f32, 4.0, 0.0, 0.0], (2, 2), &Device::Cpu)?;
        let y = l2_normalize(&x)?.to_vec2::<f32>()?;
        assert_eq!(y, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
        Ok(())
    }

    #[test]
    fn gradient_is_finite_at_zero_row() -> Result<()> {
        let v = Var::from_vec(vec![0f32, 0.0, 1.0, 2.0], (2, 2), &Device::Cpu)?;
        let w = Tensor::from_vec(vec![1f32, -2.0, 0.5, 0.25], (2, 2), &Device::Cpu)?;
        let loss = l2_normalize(v.as_tensor())?.mul(&w)?.sum_all()?;
        let g = loss
            .backward()?
            .get(v.as_tensor())
            .unwrap()
            .to_vec2::<f32>()?;
        for row in &g {
            for x in row {
                assert!(x.is_finite(), "{g:?}");
            }
        }
        // Non-zero row: d/dx (x/‖x‖)·w = (w − (x̂·w) x̂)/‖x‖, x = (1,2), w = (0.5, 0.25).
        let n = 5f32.sqrt();
        let xh = [1.0 / n, 2.0 / n];
        let dot = xh[0] * 0.5 + xh[1] * 0.25;
        let exp = [(0.5 - dot * xh[0]) / n, (0.25 - dot * xh[1]) / n];
        assert!((g[1][0] - exp[0]).abs() < 1e-6 && (g[1][1] - exp[1]).abs() < 1e-6);
        Ok(())
    }
}
