//! Size classes of the small-block front: sizes up to [`SMALL_MAX`] are served from slabs of
//! one class each, cut from buddy blocks. Classes are 16 bytes apart up to 128 bytes, then four
//! per doubling, so a request is rounded up by at most 25% (12.5% on average over a doubling).

/// Number of classes.
pub(crate) const NCLASSES: usize = 24;

/// The class sizes in bytes, all multiples of 16.
pub(crate) const CLASSES: [u16; NCLASSES] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
    1280, 1536, 1792, 2048,
];

/// The largest size served by a class.
pub(crate) const SMALL_MAX: usize = 2048;

/// Length of the per-class arrays of the hot paths: [`NCLASSES`] rounded up to a power of two,
/// so that a class masked with `CLASS_SLOTS - 1` (see [`class_size`]) indexes them without a
/// bounds check.
pub(crate) const CLASS_SLOTS: usize = NCLASSES.next_power_of_two();

/// [`CLASSES`] padded with zeros to [`CLASS_SLOTS`].
const CLASS_BYTES: [u16; CLASS_SLOTS] = {
    let mut bytes = [0u16; CLASS_SLOTS];
    let mut class = 0;
    while class < NCLASSES {
        bytes[class] = CLASSES[class];
        class += 1;
    }
    bytes
};

/// The size in bytes of class `class`, if below [`NCLASSES`]; some number otherwise (so that
/// it can be computed before knowing whether a block is small).
#[inline]
pub(crate) fn class_size(class: usize) -> usize {
    usize::from(CLASS_BYTES[class & (CLASS_SLOTS - 1)])
}

/// The class of each 16 bytes of size: entry `(size - 1) / 16` holds [`class_of`]`(size)`
/// (classes are multiples of 16 bytes, so sizes in one such step share a class).
const CLASS_OF: [u8; SMALL_MAX / 16] = {
    let mut table = [0u8; SMALL_MAX / 16];
    let mut step = 0;
    while step < SMALL_MAX / 16 {
        #[allow(clippy::cast_possible_truncation, reason = "classes are below 256")]
        {
            table[step] = class_by_formula(step * 16 + 16) as u8;
        }
        step += 1;
    }
    table
};

/// `ceil(2^32 / size)` for each class size (0 past [`NCLASSES`]): for a multiple `k * size`
/// of a class size below 2^32 / size, `k * size * reciprocal >> 32` is `k`, so a block's index in
/// its slab (at most [`MAX_SLAB`] bytes) is a multiplication, not a division.
const CLASS_RECIPROCAL: [u32; CLASS_SLOTS] = {
    let mut table = [0u32; CLASS_SLOTS];
    let mut class = 0;
    while class < NCLASSES {
        #[allow(clippy::cast_possible_truncation, reason = "2^32 / 16 fits a `u32`")]
        {
            table[class] = (1u64 << 32).div_ceil(CLASSES[class] as u64) as u32;
        }
        class += 1;
    }
    table
};

/// [`CLASS_RECIPROCAL`] of `class` (masked, as [`class_size`]).
#[inline]
pub(crate) fn class_reciprocal(class: usize) -> u32 {
    CLASS_RECIPROCAL[class & (CLASS_SLOTS - 1)]
}

/// The smallest slab: 8 KiB, so that a slab of the smallest classes is worth a slab-table
/// record (16 bytes, 0.2% of it).
pub(crate) const MIN_SLAB: usize = 8 << 10;

/// The largest slab: the offsets in a slab's record are `u16`s.
pub(crate) const MAX_SLAB: usize = 16 << 10;

/// The index of the smallest class holding `size` bytes, for `1 <= size <= SMALL_MAX`.
#[inline]
pub(crate) fn class_of(size: usize) -> usize {
    debug_assert!((1..=SMALL_MAX).contains(&size));
    usize::from(CLASS_OF[((size - 1) >> 4) % (SMALL_MAX / 16)])
}

/// [`class_of`], computed: 16-byte steps up to 128 bytes, then four classes per doubling.
const fn class_by_formula(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) - 1;
    }
    let s = size - 1;
    let high = usize::BITS - 1 - s.leading_zeros(); // 7..=10
    let quarter = (s >> (high - 2)) & 3;
    8 + (high as usize - 7) * 4 + quarter
}

/// The slab size in bytes for class `class`: at least 8 KiB and at least eight blocks.
pub(crate) fn slab_bytes(class: usize) -> usize {
    (usize::from(CLASSES[class]) * 8)
        .next_power_of_two()
        .max(MIN_SLAB)
}

/// How many blocks a slab of `bytes` bytes of class `class` holds.
pub(crate) fn slab_capacity(class: usize, bytes: usize) -> usize {
    bytes / usize::from(CLASSES[class])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_of_table_matches_formula() {
        for size in 1..=SMALL_MAX {
            assert_eq!(class_of(size), class_by_formula(size), "size {size}");
            assert_eq!(
                class_size(class_of(size)),
                usize::from(CLASSES[class_of(size)])
            );
        }
    }

    #[test]
    fn class_of_every_size_is_smallest_fit() {
        for size in 1..=SMALL_MAX {
            let class = class_of(size);
            assert!(usize::from(CLASSES[class]) >= size, "size {size}");
            if class > 0 {
                assert!(usize::from(CLASSES[class - 1]) < size, "size {size}");
            }
        }
    }

    #[test]
    fn slab_capacity_fits_eight_blocks() {
        for (class, &size) in CLASSES.iter().enumerate() {
            assert!(slab_bytes(class) <= MAX_SLAB, "class {class}");
            for bytes in [slab_bytes(class), MAX_SLAB] {
                let bytes = bytes.max(slab_bytes(class));
                let cap = slab_capacity(class, bytes);
                assert!(cap >= 8, "class {class}");
                assert!(cap * usize::from(size) <= bytes);
                assert!(cap <= 1024);
            }
        }
    }

    #[test]
    fn reciprocal_gives_every_block_index_in_the_largest_slab() {
        for class in 0..NCLASSES {
            let size = class_size(class);
            for index in 0..MAX_SLAB / size {
                let off = (index * size) as u64;
                assert_eq!(
                    (off * u64::from(class_reciprocal(class))) >> 32,
                    index as u64,
                    "class {class} block {index}"
                );
            }
        }
    }

    #[test]
    fn classes_are_sixteen_byte_multiples_and_rising() {
        assert!(CLASSES.iter().all(|c| c % 16 == 0));
        assert!(CLASSES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(usize::from(CLASSES[NCLASSES - 1]), SMALL_MAX);
    }
}
