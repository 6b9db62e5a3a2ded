//! [`Id`]: the integer types an [`IdAllocator`](crate::IdAllocator) can hand out.

use core::fmt::{Debug, Display};
use core::hash::Hash;

mod sealed {
    /// Conversions the allocator needs; implemented only in this crate.
    #[cfg(feature = "serde")]
    pub trait Sealed: Sized + serde::Serialize + serde::de::DeserializeOwned {
        const MAX: Self;
        fn to_u64(self) -> u64;
        fn from_u64(v: u64) -> Option<Self>;
    }

    /// Conversions the allocator needs; implemented only in this crate.
    #[cfg(not(feature = "serde"))]
    pub trait Sealed: Sized {
        const MAX: Self;
        fn to_u64(self) -> u64;
        fn from_u64(v: u64) -> Option<Self>;
    }
}

pub(crate) use sealed::Sealed;

/// An ID type of [`IdAllocator`](crate::IdAllocator): `u16`, `u32` or `u64`. Sealed: no other
/// type can implement it.
pub trait Id: Sealed + Copy + Ord + Hash + Debug + Display + Send + Sync + 'static {}

macro_rules! id_width {
    ($($t:ty),*) => {$(
        impl Sealed for $t {
            const MAX: Self = <$t>::MAX;

            fn to_u64(self) -> u64 {
                u64::from(self)
            }

            fn from_u64(v: u64) -> Option<Self> {
                Self::try_from(v).ok()
            }
        }

        impl Id for $t {}
    )*};
}

id_width!(u16, u32, u64);
