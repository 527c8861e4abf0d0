//! DINO's self-distillation: the student's softmax over the head's outputs, on every crop,
//! matches the teacher's centred and sharpened softmax on the other global crops.
//!
//! Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
//! Self-Supervised Vision Transformers", ICCV 2021 (arXiv 2104.14294); reference
//! `facebookresearch/dino` `main_dino.py` (`DINOLoss`).
//!
//! Teacher targets ([`teacher_targets`]): `softmax((t − c) / τ_t)` per global crop, detached, with
//! `c` the centre and `τ_t` the teacher temperature ([`teacher_temperature`]: a linear warm-up
//! from 0.04 to 0.07 over the first 30 epochs, per epoch as the reference's `np.linspace`
//! schedule). Loss ([`dino_loss`]): for each teacher crop `i` and each student crop `v ≠ i`,
//! `mean_b Σ_k −p_t log softmax(s_v / τ_s)`, τ_s = 0.1, averaged over all such pairs (the
//! reference's `n_loss_terms`). The centre ([`update_center`]) is then moved towards the batch
//! mean of the teacher's raw outputs over all global crops, with momentum 0.9 — after the loss,
//! as the reference: this step's targets use the previous centre.

use gyre_kernels::{candle::bail, Result, Tensor, D};

/// The student's temperature τ_s.
pub const DINO_STUDENT_TEMPERATURE: f64 = 0.1;
/// The centre's EMA momentum.
pub const DINO_CENTER_MOMENTUM: f64 = 0.9;

/// The teacher temperature at `epoch`: `warmup + (final − warmup)·epoch/(warmup_epochs − 1)`
/// during the warm-up (numpy's `linspace(warmup, final, warmup_epochs)`, so a one-epoch warm-up
/// is `warmup` for epoch 0), `final` after.
pub fn teacher_temperature(epoch: usize, warmup: f64, last: f64, warmup_epochs: usize) -> f64 {
    if epoch >= warmup_epochs {
        return last;
    }
    if warmup_epochs == 1 {
        return warmup;
    }
    warmup + (last - warmup) * epoch as f64 / (warmup_epochs - 1) as f64
}

/// The teacher's targets for one global crop: `softmax((t − c) / τ_t)` (`[B, K]`), detached;
/// `center` is `[1, K]` or `[K]`.
pub fn teacher_targets(teacher: &Tensor, center: &Tensor, temperature: f64) -> Result<Tensor> {
    let k = teacher.dim(D::Minus1)?;
    if center.elem_count() != k {
        bail!(
            "dino: the centre has {} entries for outputs of width {k}",
            center.elem_count()
        );
    }
    let c = center.reshape((1, k))?;
    let z = (teacher.detach().broadcast_sub(&c.detach())? / temperature)?;
    crate::softmax::softmax_rows(&z)
}

/// DINO's loss over `student[v]` (`[B, K]` raw head outputs of every crop, global crops first)
/// and `targets[i]` (the teacher's targets of the global crops, [`teacher_targets`]).
pub fn dino_loss(
    student: &[Tensor],
    targets: &[Tensor],
    student_temperature: f64,
) -> Result<Tensor> {
    if targets.is_empty() || student.len() < targets.len() || student.len() < 2 {
        bail!(
            "dino: need at least 2 student crops and 1..=crops teacher crops, got {} and {}",
            student.len(),
            targets.len()
        );
    }
    let dims = student[0].dims().to_vec();
    if dims.len() != 2 || dims[1] == 0 {
        bail!("dino: outputs must be [B, K] with K ≥ 1, got {dims:?}");
    }
    for t in student.iter().chain(targets) {
        if t.dims() != dims.as_slice() {
            bail!(
                "dino: every crop's outputs must be [B, K] = {dims:?}, got {:?}",
                t.dims()
            );
        }
    }
    crate::softmax::cross_view_soft_cross_entropy(targets, student, student_temperature)
}

/// The centre after one step: `m·c + (1 − m)·mean over the batch of every global crop's raw
/// teacher outputs` (`[1, K]`).
pub fn update_center(center: &Tensor, teacher: &[Tensor], momentum: f64) -> Result<Tensor> {
    if teacher.is_empty() {
        bail!("dino: the centre needs at least one teacher crop");
    }
    let all = Tensor::cat(&teacher.iter().map(|t| t.detach()).collect::<Vec<_>>(), 0)?;
    let k = all.dim(1)?;
    let mean = all.mean_keepdim(0)?;
    (center.detach().reshape((1, k))? * momentum)? + (mean * (1.0 - momentum))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, rows};
    use gyre_kernels::{DType, Device};

    #[test]
    fn a_uniform_teacher_gives_the_mean_cross_entropy_to_uniform() -> Result<()> {
        // Equal teacher outputs: targets 1/K; the loss per term is ln Σ exp(s/τ) − mean(s)/τ.
        let k = 3usize;
        let t = Tensor::zeros((2, k), DType::F32, &Device::Cpu)?;
        let c = Tensor::zeros(k, DType::F32, &Device::Cpu)?;
        let q = teacher_targets(&t, &c, 0.04)?;
        for p in q.flatten_all()?.to_vec1::<f32>()? {
            assert_close(p as f64, 1.0 / 3.0, 1e-6);
        }
        let s = [
            rows(&[[0.1, 0.2, 0.3], [0.0, -0.1, 0.4]])?,
            rows(&[[0.5, 0.0, 0.0], [0.2, 0.2, 0.2]])?,
            rows(&[[-0.3, 0.1, 0.0], [0.3, 0.0, -0.2]])?,
        ];
        let tau = 0.1;
        let term = |r: &[f64; 3]| -> f64 {
            let lse = r.iter().map(|x| (x / tau).exp()).sum::<f64>().ln();
            lse - r.iter().sum::<f64>() / 3.0 / tau
        };
        let rows_of = |i: usize| -> [[f64; 3]; 2] {
            let v = s[i].to_vec2::<f32>().unwrap();
            [0, 1].map(|b| [0, 1, 2].map(|j| v[b][j] as f64))
        };
        let mean_term = |i: usize| -> f64 {
            let r = rows_of(i);
            (term(&r[0]) + term(&r[1])) / 2.0
        };
        // Teacher crops 0 and 1; pairs (0,1) (0,2) (1,0) (1,2).
        let want = (mean_term(1) + mean_term(2) + mean_term(0) + mean_term(2)) / 4.0;
        let l = dino_loss(&s, &[q.clone(), q], tau)?.to_scalar::<f32>()? as f64;
        assert_close(l, want, 1e-5);
        Ok(())
    }

    #[test]
    fn centring_and_sharpening() -> Result<()> {
        // A centre equal to the outputs makes them uniform; a low temperature sharpens.
        let t = rows(&[[1.0, 2.0, 4.0]])?;
        let flat = teacher_targets(&t, &t.reshape(3)?, 0.04)?.to_vec2::<f32>()?;
        for p in &flat[0] {
            assert_close(*p as f64, 1.0 / 3.0, 1e-6);
        }
        let sharp = teacher_targets(&t, &Tensor::zeros(3, DType::F32, &Device::Cpu)?, 0.5)?
            .to_vec2::<f32>()?;
        let z: f64 = [2.0f64, 4.0, 8.0].iter().map(|x| x.exp()).sum();
        assert_close(sharp[0][2] as f64, 8f64.exp() / z, 1e-5);
        Ok(())
    }

    #[test]
    fn the_centre_moves_to_the_batch_mean_of_every_global_crop() -> Result<()> {
        let c = rows(&[[1.0, 0.0]])?;
        let t = [
            rows(&[[2.0, 2.0], [4.0, 0.0]])?,
            rows(&[[0.0, 2.0], [2.0, 4.0]])?,
        ];
        // Mean of the four rows: (2, 2); 0.9·(1, 0) + 0.1·(2, 2) = (1.1, 0.2).
        let got = update_center(&c, &t, 0.9)?.to_vec2::<f32>()?;
        assert_close(got[0][0] as f64, 1.1, 1e-6);
        assert_close(got[0][1] as f64, 0.2, 1e-6);
        Ok(())
    }

    #[test]
    fn temperature_schedule_is_numpys_linspace_per_epoch() {
        assert_close(teacher_temperature(0, 0.04, 0.07, 30), 0.04, 1e-12);
        assert_close(teacher_temperature(29, 0.04, 0.07, 30), 0.07, 1e-12);
        assert_close(teacher_temperature(10, 0.04, 0.07, 31), 0.05, 1e-12);
        assert_close(teacher_temperature(100, 0.04, 0.07, 30), 0.07, 1e-12);
        assert_close(teacher_temperature(0, 0.04, 0.07, 1), 0.04, 1e-12);
        assert_close(teacher_temperature(0, 0.04, 0.07, 0), 0.07, 1e-12);
    }

    fn reference_inputs() -> Result<(Vec<Tensor>, Vec<Tensor>, Tensor)> {
        let student = vec![
            rows(&[
                [0.3, -0.2, 0.5, 0.1],
                [0.1, 0.4, -0.6, 0.0],
                [0.0, 0.2, 0.2, -0.3],
            ])?,
            rows(&[
                [0.2, -0.1, 0.6, 0.2],
                [0.0, 0.5, -0.4, 0.1],
                [0.1, 0.1, 0.3, -0.2],
            ])?,
            rows(&[
                [-0.3, 0.2, 0.1, 0.4],
                [0.4, 0.4, -0.2, 0.0],
                [0.2, -0.5, 0.3, 0.1],
            ])?,
        ];
        let teacher = vec![
            rows(&[
                [0.5, -0.1, 0.2, 0.0],
                [0.3, 0.3, -0.5, 0.1],
                [0.1, 0.0, 0.4, -0.1],
            ])?,
            rows(&[
                [0.4, 0.0, 0.3, 0.1],
                [0.2, 0.4, -0.3, 0.0],
                [0.0, 0.1, 0.5, -0.2],
            ])?,
        ];
        let center = rows(&[[0.1, 0.0, -0.05, 0.02]])?;
        Ok((student, teacher, center))
    }

    #[test]
    fn matches_the_reference_loss_and_centre() -> Result<()> {
        // DINOLoss(out_dim 4, ncrops 3, warmup_teacher_temp 0.04, teacher_temp 0.07, warm-up 30
        // epochs) at epoch 10 with this centre buffer, torch 2.15 float64: the loss, then its
        // centre after update_center.
        let (student, teacher, center) = reference_inputs()?;
        let tau_t = teacher_temperature(10, 0.04, 0.07, 30);
        let targets: Vec<Tensor> = teacher
            .iter()
            .map(|t| teacher_targets(t, &center, tau_t))
            .collect::<Result<_>>()?;
        let l = dino_loss(&student, &targets, DINO_STUDENT_TEMPERATURE)?.to_scalar::<f32>()? as f64;
        assert_close(l, REFERENCE_LOSS, 1e-5);
        let c = update_center(&center, &teacher, DINO_CENTER_MOMENTUM)?.to_vec2::<f32>()?;
        for (g, w) in c[0].iter().zip(REFERENCE_CENTER) {
            assert_close(*g as f64, w, 1e-5);
        }
        Ok(())
    }
    const REFERENCE_LOSS: f64 = 1.6477662599815244;
    const REFERENCE_CENTER: [f64; 4] = [0.115, 0.011666666964689888, -0.035, 0.016333332906166714];

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let (student, teacher, center) = reference_inputs()?;
        let targets: Vec<Tensor> = teacher
            .iter()
            .map(|t| {
                teacher_targets(
                    &t.to_dtype(DType::F64)?,
                    &center.to_dtype(DType::F64)?,
                    0.05,
                )
            })
            .collect::<Result<_>>()?;
        let s1 = student[1].to_dtype(DType::F64)?;
        let s2 = student[2].to_dtype(DType::F64)?;
        check_gradient(
            &student[0],
            |s| dino_loss(&[s.clone(), s1.clone(), s2.clone()], &targets, 0.1),
            1e-5,
        )?;
        check_gradient(
            &student[2],
            |s| {
                dino_loss(
                    &[student[0].to_dtype(DType::F64)?, s1.clone(), s.clone()],
                    &targets,
                    0.1,
                )
            },
            1e-5,
        )
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let a = rows(&[[0.1, 0.2], [0.3, 0.4]])?;
        let b = rows(&[[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]])?;
        assert!(dino_loss(std::slice::from_ref(&a), std::slice::from_ref(&a), 0.1).is_err());
        assert!(dino_loss(&[a.clone(), b.clone()], std::slice::from_ref(&a), 0.1).is_err());
        assert!(teacher_targets(&a, &b, 0.1).is_err());
        assert!(update_center(&a, &[], 0.9).is_err());
        Ok(())
    }
}
