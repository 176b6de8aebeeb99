//! A safe matrix product over slices: the `gemm` crate's kernels (candle's own on the CPU,
//! AVX-512 or AVX2/FMA picked at run time), behind views whose every element is checked to lie
//! in its slice before the one `unsafe` call.
//!
//! A view is a slice with a row count, a column count and two strides: element (i, j) is
//! `data[i·rs + j·cs]`. The destination must be row- or column-major without overlap, so no
//! two of its elements are the same memory; the borrow checker keeps it apart from the
//! operands.

#![allow(unsafe_code)]

use ::gemm::Parallelism;

use crate::fused::Real;

/// A read-only matrix view over a slice.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// The offset one past the last element of a rows × cols view with strides (rs, cs), or
/// `None` on overflow; 0 for an empty view.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

impl<'a, T> Mat<'a, T> {
    /// The view of `data` with element (i, j) at `i·rs + j·cs`. Panics if any element lies
    /// outside `data` (a bug in the caller, never the user's input).
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            extent(rows, cols, rs, cs).is_some_and(|e| e <= data.len()),
            "a {rows} × {cols} view with strides ({rs}, {cs}) overruns a slice of {}",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The row-major view of `data` as rows × cols.
    pub(crate) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable row-major matrix view over a slice, rows × cols with row stride `rs` ≥ cols.
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// The view of `data` with element (i, j) at `i·rs + j`, rs ≥ cols (rows do not overlap).
    /// Panics if an element lies outside `data` (a bug in the caller).
    pub(crate) fn new(data: &'a mut [T], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            (rs >= cols || rows <= 1) && extent(rows, cols, rs, 1).is_some_and(|e| e <= data.len()),
            "a {rows} × {cols} destination with row stride {rs} overruns a slice of {}",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
        }
    }

    /// The row-major view of `data` as rows × cols.
    pub(crate) fn rows(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }
}

/// dst ← lhs · rhs, or dst ← dst + lhs · rhs with `accumulate`, on `threads` threads of
/// rayon's pool (1: the calling thread alone). The shapes must agree (a caller's bug
/// otherwise, and a panic); an empty inner dimension gives zeros (or leaves dst).
pub(crate) fn matmul<T: Real>(
    dst: MatMut<'_, T>,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        dst.rows == lhs.rows && dst.cols == rhs.cols && lhs.cols == rhs.rows,
        "matmul of {} × {} by {} × {} into {} × {}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for row in dst.data.chunks_mut(dst.rs.max(1)).take(dst.rows) {
                row[..dst.cols].fill(T::ZERO);
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let (zero, one) = (T::ZERO, T::ONE);
    // SAFETY: `Mat::new` and `MatMut::new` checked that every element (i, j) of each view,
    // i < rows, j < cols, at i·rs + j·cs, lies inside its slice, and the shapes agree, so
    // gemm reads lhs and rhs and writes dst only in bounds. dst's rows do not overlap
    // (rs ≥ cols), and it is borrowed mutably while lhs and rhs are shared borrows, so no
    // element is both read as an operand and written. `T` is f32 or f64 here: gemm panics
    // on other types rather than misreading them.
    unsafe {
        ::gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { one } else { zero },
            one,
            false,
            false,
            false,
            parallelism,
        );
    }
}
