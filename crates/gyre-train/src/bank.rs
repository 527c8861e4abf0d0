//! A FIFO memory of past embeddings (MoCo's queue, InstDisc-style banks): fixed capacity, rows
//! overwritten oldest first, always detached from the graph. Each row holds one or more named
//! fields (say, a cycle embedding and a base embedding) and an optional class label, which is
//! used for diagnostics only (never for training).

use gyre_kernels::{candle::bail, Device, Result, Tensor};

/// Label of a row whose class is unknown.
pub const NO_LABEL: u32 = u32::MAX;

/// The memory.
#[derive(Debug, Clone)]
pub struct FifoBank {
    capacity: usize,
    dims: Vec<usize>,
    data: Vec<Vec<f32>>,
    labels: Vec<u32>,
    len: usize,
    ptr: usize,
}

impl FifoBank {
    /// A bank of `capacity` rows with one field per entry of `dims` (its width).
    pub fn new(capacity: usize, dims: &[usize]) -> Self {
        Self {
            capacity,
            dims: dims.to_vec(),
            data: dims.iter().map(|&d| vec![0f32; capacity * d]).collect(),
            labels: vec![NO_LABEL; capacity],
            len: 0,
            ptr: 0,
        }
    }

    /// A full bank whose every field row is an L2-normalised Gaussian draw (MoCo's queue starts
    /// as `normalize(randn)`), keyed on `seed`: the same seed, the same queue.
    pub fn with_noise(capacity: usize, dims: &[usize], seed: u64) -> Self {
        use rand_distr::{Distribution, StandardNormal};
        let mut bank = Self::new(capacity, dims);
        for (f, &d) in dims.iter().enumerate() {
            let mut rng = gyre_rng::stream([seed, f as u64, gyre_rng::tag(b"gyrequeu"), 0]);
            for row in bank.data[f].chunks_mut(d.max(1)) {
                for x in row.iter_mut() {
                    *x = StandardNormal.sample(&mut rng);
                }
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        bank.len = capacity;
        bank
    }

    /// Rows filled so far (at most the capacity).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The next row to be written.
    pub fn pointer(&self) -> usize {
        self.ptr
    }

    /// Writes one batch: `fields[f]` is `[B, dims[f]]`; `labels` (if known) has B entries. A batch
    /// larger than the capacity keeps its last `capacity` rows.
    pub fn push(&mut self, fields: &[&Tensor], labels: Option<&[u32]>) -> Result<()> {
        if fields.len() != self.dims.len() {
            bail!(
                "bank: {} fields given, the bank has {}",
                fields.len(),
                self.dims.len()
            );
        }
        let b = fields[0].dim(0)?;
        let mut rows = Vec::with_capacity(fields.len());
        for (f, t) in fields.iter().enumerate() {
            let (n, d) = t.dims2()?;
            if n != b || d != self.dims[f] {
                bail!(
                    "bank: field {f} is [{n}, {d}], expected [{b}, {}]",
                    self.dims[f]
                );
            }
            rows.push(
                t.detach()
                    .to_dtype(gyre_kernels::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        if labels.is_some_and(|l| l.len() != b) {
            bail!(
                "bank: {} labels for {b} rows",
                labels.map_or(0, |l| l.len())
            );
        }
        for r in b.saturating_sub(self.capacity)..b {
            for (f, v) in rows.iter().enumerate() {
                let d = self.dims[f];
                self.data[f][self.ptr * d..(self.ptr + 1) * d]
                    .copy_from_slice(&v[r * d..(r + 1) * d]);
            }
            self.labels[self.ptr] = labels.map_or(NO_LABEL, |l| l[r]);
            self.ptr = (self.ptr + 1) % self.capacity;
            self.len = (self.len + 1).min(self.capacity);
        }
        Ok(())
    }

    /// Field `f` of the filled rows as a `[len, d]` tensor (slot order; no gradient).
    pub fn field(&self, f: usize, device: &Device) -> Result<Tensor> {
        let d = self.dims[f];
        Tensor::from_slice(&self.data[f][..self.len * d], (self.len, d), device)
    }

    /// The whole bank as named tensors under `prefix` (for checkpoints).
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let dev = Device::Cpu;
        let mut out = Vec::new();
        for (f, d) in self.dims.iter().enumerate() {
            out.push((
                format!("{prefix}.field{f}"),
                Tensor::from_slice(&self.data[f], (self.capacity, *d), &dev)?,
            ));
        }
        out.push((
            format!("{prefix}.labels"),
            Tensor::from_slice(&self.labels, self.capacity, &dev)?,
        ));
        out.push((
            format!("{prefix}.len_ptr"),
            Tensor::from_slice(&[self.len as u32, self.ptr as u32], 2, &dev)?,
        ));
        Ok(out)
    }

    /// Restores what [`Self::state`] wrote; the shapes must match this bank's.
    pub fn load_state(
        &mut self,
        prefix: &str,
        t: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        let get = |k: String| {
            t.get(&k)
                .ok_or_else(|| gyre_kernels::candle::Error::Msg(format!("checkpoint lacks {k}")))
        };
        for (f, d) in self.dims.iter().enumerate() {
            let v = get(format!("{prefix}.field{f}"))?;
            if v.dims() != [self.capacity, *d] {
                bail!(
                    "{prefix}.field{f}: {:?}, expected [{}, {d}]",
                    v.dims(),
                    self.capacity
                );
            }
            self.data[f] = v.flatten_all()?.to_vec1::<f32>()?;
        }
        let l = get(format!("{prefix}.labels"))?.to_vec1::<u32>()?;
        if l.len() != self.capacity {
            bail!(
                "{prefix}.labels: {} rows, expected {}",
                l.len(),
                self.capacity
            );
        }
        self.labels = l;
        let lp = get(format!("{prefix}.len_ptr"))?.to_vec1::<u32>()?;
        (self.len, self.ptr) = (lp[0] as usize, lp[1] as usize);
        Ok(())
    }

    /// Labels of the filled rows, in slot order.
    pub fn labels(&self) -> &[u32] {
        &self.labels[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(start: usize, b: usize) -> Tensor {
        let v: Vec<f32> = (start..start + b).map(|x| x as f32).collect();
        Tensor::from_vec(v, (b, 1), &Device::Cpu).unwrap()
    }

    #[test]
    fn tv15_pointer_and_writes() -> Result<()> {
        // docs/spec/test-vectors.md TV15: K = 8, B = 4: the pointer goes 0 → 4 → 0; writes go to
        // [0,4) then [4,8).
        let mut q = FifoBank::new(8, &[1]);
        assert_eq!(q.pointer(), 0);
        q.push(&[&rows(0, 4)], None)?;
        assert_eq!((q.pointer(), q.len()), (4, 4));
        q.push(&[&rows(4, 4)], Some(&[1, 2, 3, 4]))?;
        assert_eq!((q.pointer(), q.len()), (0, 8));
        assert_eq!(
            q.field(0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?,
            vec![0., 1., 2., 3., 4., 5., 6., 7.]
        );
        // The next batch overwrites the oldest rows.
        q.push(&[&rows(100, 4)], None)?;
        let v = q.field(0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v, vec![100., 101., 102., 103., 4., 5., 6., 7.]);
        assert_eq!(
            q.labels(),
            &[NO_LABEL, NO_LABEL, NO_LABEL, NO_LABEL, 1, 2, 3, 4]
        );
        Ok(())
    }

    #[test]
    fn state_round_trips() -> Result<()> {
        let mut a = FifoBank::new(5, &[2, 1]);
        let r2 = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu)?;
        a.push(&[&r2, &rows(0, 3)], Some(&[7, 8, 9]))?;
        let t: std::collections::HashMap<_, _> = a.state("q")?.into_iter().collect();
        let mut b = FifoBank::new(5, &[2, 1]);
        b.load_state("q", &t)?;
        assert_eq!(
            (b.len(), b.pointer(), b.labels()),
            (3, 3, &[7u32, 8, 9][..])
        );
        assert_eq!(
            b.field(0, &Device::Cpu)?.to_vec2::<f32>()?,
            r2.to_vec2::<f32>()?
        );
        let mut c = FifoBank::new(4, &[2, 1]);
        assert!(c.load_state("q", &t).is_err());
        Ok(())
    }

    #[test]
    fn noise_queue_is_full_unit_rows_and_seeded() -> Result<()> {
        let q = FifoBank::with_noise(6, &[4], 3);
        assert_eq!((q.len(), q.pointer()), (6, 0));
        let v = q.field(0, &Device::Cpu)?.to_vec2::<f32>()?;
        for r in &v {
            let n: f32 = r.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5, "{r:?}");
        }
        assert_ne!(v[0], v[1]);
        let again = FifoBank::with_noise(6, &[4], 3)
            .field(0, &Device::Cpu)?
            .to_vec2::<f32>()?;
        assert_eq!(v, again);
        let other = FifoBank::with_noise(6, &[4], 4)
            .field(0, &Device::Cpu)?
            .to_vec2::<f32>()?;
        assert_ne!(v, other);
        Ok(())
    }

    #[test]
    fn wraps_mid_batch_and_keeps_the_last_rows_of_a_huge_batch() -> Result<()> {
        let mut q = FifoBank::new(5, &[1]);
        q.push(&[&rows(0, 3)], None)?;
        q.push(&[&rows(3, 3)], None)?; // rows 3, 4 then wraps: 5 lands in slot 0
        let v = q.field(0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v, vec![5., 1., 2., 3., 4.]);
        q.push(&[&rows(10, 7)], None)?; // keeps 12..=16
        let mut v = q.field(0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        v.sort_by(f32::total_cmp);
        assert_eq!(v, vec![12., 13., 14., 15., 16.]);
        assert!(q.push(&[&rows(0, 2), &rows(0, 2)], None).is_err());
        Ok(())
    }
}
