//! Reading an n-dimensional strided array as its logical C-order byte stream.
//!
//! A hash must not depend on memory layout: a Fortran-ordered copy, a reversed view and a
//! contiguous array with the same values hash alike. [`StridedLayout`] describes where each
//! element sits (numpy's shape, strides in bytes, item size) and copies any byte range of the
//! C-order stream out of the memory region, so big arrays are hashed chunk by chunk, in
//! parallel, without materialising a contiguous copy.

use std::ops::Range;

use super::HashError;

/// Geometry of a strided array relative to the memory region that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedLayout {
    itemsize: usize,
    shape: Vec<usize>,
    strides: Vec<isize>,
    /// Offset of element `[0, 0, ...]` from the start of the region.
    first: usize,
    /// Bytes of region the elements span.
    span: usize,
    /// Bytes of the logical C-order stream.
    logical_len: usize,
}

fn overflow() -> HashError {
    HashError::InvalidLayout("array extent overflows the address space".into())
}

impl StridedLayout {
    /// Describes an array. `strides` are in bytes and may be negative or zero.
    pub fn new(itemsize: usize, shape: &[usize], strides: &[isize]) -> Result<Self, HashError> {
        if shape.len() != strides.len() {
            return Err(HashError::InvalidLayout(format!(
                "{} dimensions but {} strides",
                shape.len(),
                strides.len()
            )));
        }
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .ok_or_else(overflow)?;
        let logical_len = count.checked_mul(itemsize).ok_or_else(overflow)?;
        let (mut lo, mut hi) = (0isize, 0isize);
        if count > 0 {
            for (&n, &s) in shape.iter().zip(strides) {
                let last = isize::try_from(n - 1).map_err(|_| overflow())?;
                let reach = last.checked_mul(s).ok_or_else(overflow)?;
                if reach < 0 {
                    lo = lo.checked_add(reach).ok_or_else(overflow)?;
                } else {
                    hi = hi.checked_add(reach).ok_or_else(overflow)?;
                }
            }
        }
        let first = lo.unsigned_abs();
        let span = if count == 0 {
            0
        } else {
            let top = usize::try_from(hi).map_err(|_| overflow())?;
            first
                .checked_add(top)
                .and_then(|v| v.checked_add(itemsize))
                .ok_or_else(overflow)?
        };
        Ok(Self {
            itemsize,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            first,
            span,
            logical_len,
        })
    }

    /// Bytes of the logical C-order stream (`nelements * itemsize`).
    pub fn logical_len(&self) -> usize {
        self.logical_len
    }

    /// How many bytes before element 0 the memory region must start.
    pub fn first(&self) -> usize {
        self.first
    }

    /// How many bytes the memory region must hold.
    pub fn span(&self) -> usize {
        self.span
    }

    /// True when the C-order stream is one plain run of the region.
    pub fn is_c_contiguous(&self) -> bool {
        let mut expected = self.itemsize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && usize::try_from(s).ok() != Some(expected) {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }

    /// Appends bytes `range` of the C-order stream to `out`.
    pub fn gather(
        &self,
        region: &[u8],
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), HashError> {
        if region.len() < self.span {
            return Err(HashError::InvalidLayout(format!(
                "region of {} bytes is smaller than the {} bytes the array spans",
                region.len(),
                self.span
            )));
        }
        if range.start > range.end || range.end > self.logical_len {
            return Err(HashError::InvalidLayout(format!(
                "byte range {range:?} outside a stream of {} bytes",
                self.logical_len
            )));
        }
        if range.is_empty() {
            return Ok(());
        }
        if self.is_c_contiguous() {
            out.extend_from_slice(&region[self.first + range.start..self.first + range.end]);
            return Ok(());
        }
        let item = self.itemsize;
        let first_elem = range.start / item;
        let end_elem = range.end.div_ceil(item);
        let skip = range.start - first_elem * item;
        let base = out.len();
        out.reserve((end_elem - first_elem) * item);

        // Odometer over the multi-index of `first_elem`.
        let ndim = self.shape.len();
        let mut idx = vec![0usize; ndim];
        let mut rest = first_elem;
        for d in (0..ndim).rev() {
            idx[d] = rest % self.shape[d];
            rest /= self.shape[d];
        }
        let offset_of = |idx: &[usize]| -> usize {
            let rel: isize = idx
                .iter()
                .zip(&self.strides)
                .map(|(&i, &s)| i as isize * s)
                .sum();
            self.first.wrapping_add_signed(rel)
        };
        let mut remaining = end_elem - first_elem;
        if ndim == 0 {
            out.extend_from_slice(&region[self.first..self.first + item]);
            remaining = 0;
        }
        while remaining > 0 {
            let d = ndim - 1;
            let run = (self.shape[d] - idx[d]).min(remaining);
            let start = offset_of(&idx);
            let stride = self.strides[d];
            if usize::try_from(stride).ok() == Some(item) {
                out.extend_from_slice(&region[start..start + run * item]);
            } else {
                for k in 0..run {
                    let at = start.wrapping_add_signed(k as isize * stride);
                    out.extend_from_slice(&region[at..at + item]);
                }
            }
            remaining -= run;
            idx[d] += run;
            // Carry into outer dimensions.
            let mut dim = d;
            while idx[dim] == self.shape[dim] && dim > 0 {
                idx[dim] = 0;
                dim -= 1;
                idx[dim] += 1;
            }
        }
        // Drop the partial element bytes outside `range`.
        out.drain(base..base + skip);
        out.truncate(base + (range.end - range.start));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element-by-element reference implementation.
    fn naive(layout: &StridedLayout, region: &[u8]) -> Vec<u8> {
        let count: usize = layout.shape.iter().product();
        let mut out = Vec::new();
        for e in 0..count {
            let mut rest = e;
            let mut off = layout.first as isize;
            for d in (0..layout.shape.len()).rev() {
                off += (rest % layout.shape[d]) as isize * layout.strides[d];
                rest /= layout.shape[d];
            }
            let off = off as usize;
            out.extend_from_slice(&region[off..off + layout.itemsize]);
        }
        out
    }

    fn region(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn c_contiguous_is_detected() {
        let l = StridedLayout::new(8, &[3, 4], &[32, 8]).unwrap();
        assert!(l.is_c_contiguous());
        assert_eq!((l.first(), l.span(), l.logical_len()), (0, 96, 96));
        let f = StridedLayout::new(8, &[3, 4], &[8, 24]).unwrap();
        assert!(!f.is_c_contiguous());
        // Dimensions of length one do not matter.
        assert!(
            StridedLayout::new(4, &[1, 5], &[999, 4])
                .unwrap()
                .is_c_contiguous()
        );
    }

    #[test]
    fn fortran_order_matches_reference() {
        let reg = region(96);
        let l = StridedLayout::new(8, &[3, 4], &[8, 24]).unwrap();
        let mut out = Vec::new();
        l.gather(&reg, 0..96, &mut out).unwrap();
        assert_eq!(out, naive(&l, &reg));
    }

    #[test]
    fn negative_and_zero_strides() {
        // Reversed rows of a 4x3 int16 array, and a broadcast axis.
        let reg = region(24);
        let l = StridedLayout::new(2, &[4, 3], &[-6, 2]).unwrap();
        assert_eq!((l.first(), l.span()), (18, 24));
        let mut out = Vec::new();
        l.gather(&reg, 0..24, &mut out).unwrap();
        assert_eq!(out, naive(&l, &reg));
        let b = StridedLayout::new(2, &[5, 3], &[0, 2]).unwrap();
        let mut out = Vec::new();
        b.gather(&reg, 0..30, &mut out).unwrap();
        assert_eq!(out, naive(&b, &reg));
    }

    #[test]
    fn every_subrange_matches_reference() {
        let reg = region(2 * 5 * 7 * 3);
        // Transposed 3-d layout with item size 3 so ranges split items.
        let l = StridedLayout::new(3, &[7, 5, 2], &[3, 21, 105]).unwrap();
        let full = naive(&l, &reg);
        for start in 0..full.len() {
            for end in [start, start + 1, start + 4, full.len()] {
                let end = end.min(full.len());
                let mut out = vec![0xAA];
                l.gather(&reg, start..end, &mut out).unwrap();
                assert_eq!(&out[1..], &full[start..end], "{start}..{end}");
            }
        }
    }

    #[test]
    fn zero_dimensional_and_empty() {
        let reg = region(8);
        let s = StridedLayout::new(8, &[], &[]).unwrap();
        assert_eq!(s.logical_len(), 8);
        let mut out = Vec::new();
        s.gather(&reg, 0..8, &mut out).unwrap();
        assert_eq!(out, reg);
        let e = StridedLayout::new(8, &[0, 3], &[24, 8]).unwrap();
        assert_eq!((e.logical_len(), e.span()), (0, 0));
        e.gather(&[], 0..0, &mut out).unwrap();
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert!(StridedLayout::new(8, &[2], &[]).is_err());
        assert!(StridedLayout::new(8, &[usize::MAX, 2], &[8, 8]).is_err());
        let l = StridedLayout::new(8, &[4], &[8]).unwrap();
        let mut out = Vec::new();
        assert!(
            l.gather(&[0; 16], 0..8, &mut out).is_err(),
            "region too small"
        );
        assert!(
            l.gather(&[0; 32], 0..33, &mut out).is_err(),
            "range past the end"
        );
    }
}
