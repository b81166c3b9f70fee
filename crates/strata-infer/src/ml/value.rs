//! Tensors of the interpreter: f32, i64 (labels, indices, shapes) and bool
//! (comparison results), with numpy-style broadcasting.

/// Element data of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// A tensor: shape plus row-major data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Value {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Self {
        Value {
            shape,
            data: Data::F32(v),
        }
    }

    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Self {
        Value {
            shape,
            data: Data::I64(v),
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.data {
            Data::F32(_) => "float",
            Data::I64(_) => "int64",
            Data::Bool(_) => "bool",
        }
    }

    /// The data as f32, converting integers and booleans.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

    /// Copies the values into `out` as f32.
    pub fn write_f32(&self, out: &mut [f32]) {
        match &self.data {
            Data::F32(v) => out.copy_from_slice(v),
            Data::I64(v) => out.iter_mut().zip(v).for_each(|(o, &x)| *o = x as f32),
            Data::Bool(v) => out
                .iter_mut()
                .zip(v)
                .for_each(|(o, &x)| *o = x as u8 as f32),
        }
    }

    /// Same data, another shape (the element count must match).
    pub fn reshaped(&self, shape: Vec<usize>) -> Value {
        Value {
            shape,
            data: self.data.clone(),
        }
    }
}

/// The broadcast shape of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// For each element of the broadcast `out` shape, the index into a tensor of
/// shape `shape` (right-aligned, size-1 dimensions repeated).
pub(crate) fn broadcast_indices(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    let len: usize = shape.iter().product();
    if shape == out {
        return (0..total).collect();
    }
    if len == 1 {
        return vec![0; total];
    }
    let rank = out.len();
    let offset = rank - shape.len();
    // Strides of `shape` seen in `out`'s rank, zero where broadcast.
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i + offset] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    let mut idx = vec![0usize; rank];
    let mut result = Vec::with_capacity(total);
    for _ in 0..total {
        result.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    result
}
