//! [`GuestBytes`]: vm-memory's `Bytes` over a snapshot's guest memory, which reads read-only
//! regions too.
//!
//! vm-memory's `GuestMemoryBackend` asks regions for slices without saying whether they will be
//! read or written, and its slices allow both; so through the snapshot itself a region whose
//! mapping is not read-write gives no slice at all. This view knows the access of each call: it
//! reads every readable region and writes only writable ones, and no slice of memory that is
//! not read-write leaves it (a `WriteVolatile` sink is handed a copy of such memory, never the
//! memory). Its reads from a stream into guest memory stop at the first short read rather than
//! leave a gap.

use std::sync::atomic::Ordering;

use vm_memory::bitmap::{AtomicBitmap, BS};
use vm_memory::{
    AtomicAccess, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, ReadVolatile,
    VolatileSlice, WriteVolatile,
};

use crate::snapshot::Snapshot;

type Slice<'a> = VolatileSlice<'a, BS<'a, Option<AtomicBitmap>>>;
type GuestResult<T> = std::result::Result<T, GuestMemoryError>;

/// vm-memory's `Bytes<GuestAddress>` over a [`Snapshot`]'s regions with host memory, reading
/// read-only regions (firmware, ROM images) as well; made by [`Snapshot::bytes`]. Writes go to
/// read-write regions only, exactly as through the snapshot itself (a write to a read-only
/// region is an error, never a fault). No slice of memory that is not read-write leaves it:
/// `write_volatile_to` and `write_all_volatile_to` hand the sink such memory through a copy (at
/// most 64 KiB at a time), since the `VolatileSlice` a `WriteVolatile` sink gets allows writes,
/// and a sink writing to it would fault on the read-only mapping.
///
/// Reads from a stream into guest memory keep the bytes together: `read_volatile_from` stops
/// at the first read that comes back short, so the count it returns is what
/// `addr..addr + count` now holds, and `read_exact_volatile_from` reads as many times as it
/// takes to fill the range. (vm-memory 0.18's own `Bytes`, which the snapshot has, reads once
/// per region the range crosses and adds the counts: a short read from a pipe or a socket
/// leaves a gap before the bytes read into the next region, and `read_exact_volatile_from`
/// fails where a second read would have filled the range.)
///
/// ```
/// use memvisor_space::{Protection, Region, RegionSpec, RegionType};
/// use memvisor_space::vm_memory::{Bytes, GuestAddress};
///
/// # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
/// use memvisor_space::{AddressSpace, Layout};
/// let layout = Layout::x86_64().build()?;
/// let rom = RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), 0x1000)
///     .with_protection(Protection::Read);
/// let (space, _) = AddressSpace::back(layout, [rom])?;
/// let snap = space.snapshot();
/// assert_eq!(snap.bytes().read_obj::<u32>(GuestAddress(0xffc0_0000)).unwrap(), 0);
/// assert!(snap.bytes().write_obj(1u32, GuestAddress(0xffc0_0000)).is_err());
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GuestBytes<'a> {
    snapshot: &'a Snapshot,
}

impl Snapshot {
    /// vm-memory's `Bytes` over this snapshot's guest memory that reads read-only regions too
    /// (see [`GuestBytes`]).
    #[must_use]
    pub fn bytes(&self) -> GuestBytes<'_> {
        GuestBytes { snapshot: self }
    }
}

impl<'a> GuestBytes<'a> {
    /// Calls `f` on consecutive readable slices covering `addr..addr + count` (with whether
    /// their memory is writable too), as vm-memory does: an error for the first part is
    /// returned, a later gap ends the access early.
    fn each_readable(
        &self,
        addr: GuestAddress,
        count: usize,
        mut f: impl FnMut(usize, Slice<'a>, bool) -> GuestResult<usize>,
    ) -> GuestResult<usize> {
        let mut done = 0;
        while done < count {
            let step = || -> GuestResult<(Slice<'a>, bool)> {
                let at = u64::try_from(done)
                    .ok()
                    .and_then(|d| addr.0.checked_add(d))
                    .map(GuestAddress)
                    .ok_or(GuestMemoryError::InvalidGuestAddress(addr))?;
                let region = self
                    .snapshot
                    .find_region(at)
                    .filter(|r| r.is_backed())
                    .ok_or(GuestMemoryError::InvalidGuestAddress(at))?;
                if !region.protection().readable() {
                    return Err(GuestMemoryError::HostAddressNotAvailable);
                }
                // `at` is inside the region (found by lookup), whose size fits a `usize`.
                let offset = usize::try_from(at.0 - region.base().0)
                    .map_err(|_| GuestMemoryError::InvalidBackendAddress)?;
                let left = usize::try_from(region.size())
                    .map_err(|_| GuestMemoryError::InvalidBackendAddress)?
                    - offset;
                let slice = region.volatile_slice(offset, left.min(count - done))?;
                Ok((slice, region.protection().writable()))
            };
            match step() {
                Ok((slice, writable)) => {
                    let len = slice.len();
                    let n = f(done, slice, writable)?;
                    done += n;
                    if n < len {
                        break;
                    }
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    fn exactly(done: usize, expected: usize) -> GuestResult<()> {
        if done == expected {
            Ok(())
        } else {
            Err(GuestMemoryError::PartialBuffer {
                expected,
                completed: done,
            })
        }
    }
}

impl Bytes<GuestAddress> for GuestBytes<'_> {
    type E = GuestMemoryError;

    fn write(&self, buf: &[u8], addr: GuestAddress) -> GuestResult<usize> {
        self.snapshot.write(buf, addr)
    }

    fn read(&self, buf: &mut [u8], addr: GuestAddress) -> GuestResult<usize> {
        self.each_readable(addr, buf.len(), |at, slice, _| {
            Ok(slice.read(&mut buf[at..], 0)?)
        })
    }

    fn write_slice(&self, buf: &[u8], addr: GuestAddress) -> GuestResult<()> {
        self.snapshot.write_slice(buf, addr)
    }

    fn read_slice(&self, buf: &mut [u8], addr: GuestAddress) -> GuestResult<()> {
        let done = self.read(buf, addr)?;
        Self::exactly(done, buf.len())
    }

    /// Reads from `src` into consecutive writable slices of `addr..addr + count`, and stops at
    /// the first read that fills less than its slice (as well as at a gap after the first
    /// part), so that the count returned is what `addr..addr + count_returned` now holds.
    fn read_volatile_from<F>(
        &self,
        addr: GuestAddress,
        src: &mut F,
        count: usize,
    ) -> GuestResult<usize>
    where
        F: ReadVolatile,
    {
        let mut done = 0;
        for slice in self.snapshot.get_slices(addr, count).stop_on_error()? {
            // Retries reads interrupted by a signal.
            let n = slice.read_volatile_from(0, src, slice.len())?;
            done += n;
            if n < slice.len() {
                break;
            }
        }
        Ok(done)
    }

    /// Reads from `src` until `addr..addr + count` is filled, as many times as it takes; a
    /// source that ends first, or a gap in writable memory after the first part, gives
    /// [`GuestMemoryError::PartialBuffer`] with the bytes filled.
    fn read_exact_volatile_from<F>(
        &self,
        addr: GuestAddress,
        src: &mut F,
        count: usize,
    ) -> GuestResult<()>
    where
        F: ReadVolatile,
    {
        let mut done = 0;
        for slice in self.snapshot.get_slices(addr, count).stop_on_error()? {
            let mut left = slice;
            while !left.is_empty() {
                // Retries reads interrupted by a signal.
                let n = left.read_volatile_from(0, src, left.len())?;
                if n == 0 {
                    return Self::exactly(done, count);
                }
                done += n;
                left = left.offset(n)?;
            }
        }
        Self::exactly(done, count)
    }

    fn write_volatile_to<F>(
        &self,
        addr: GuestAddress,
        dst: &mut F,
        count: usize,
    ) -> GuestResult<usize>
    where
        F: WriteVolatile,
    {
        self.each_readable(addr, count, |_, slice, writable| {
            if writable {
                slice.write_all_volatile_to(0, dst, slice.len())?;
            } else {
                copy_out(&slice, dst)?;
            }
            Ok(slice.len())
        })
    }

    fn write_all_volatile_to<F>(
        &self,
        addr: GuestAddress,
        dst: &mut F,
        count: usize,
    ) -> GuestResult<()>
    where
        F: WriteVolatile,
    {
        let done = self.write_volatile_to(addr, dst, count)?;
        Self::exactly(done, count)
    }

    fn store<T: AtomicAccess>(
        &self,
        val: T,
        addr: GuestAddress,
        order: Ordering,
    ) -> GuestResult<()> {
        self.snapshot.store(val, addr, order)
    }

    fn load<T: AtomicAccess>(&self, addr: GuestAddress, order: Ordering) -> GuestResult<T> {
        let mut value = None;
        self.each_readable(addr, size_of::<T>(), |_, slice, _| {
            value = Some(slice.load(0, order)?);
            Ok(slice.len())
        })?;
        value.ok_or(GuestMemoryError::InvalidGuestAddress(addr))
    }
}

/// The most bytes of memory that is not read-write [`copy_out`] copies at a time.
const COPY_OUT_MAX: usize = 64 << 10;

/// Writes all of `slice` (memory that must not be written) to `dst` through a copy, at most
/// [`COPY_OUT_MAX`] bytes at a time: the `VolatileSlice` a `WriteVolatile` sink is handed
/// allows writes, so the sink never gets one of such memory.
fn copy_out<F: WriteVolatile>(slice: &Slice<'_>, dst: &mut F) -> GuestResult<()> {
    let mut buf = vec![0u8; slice.len().min(COPY_OUT_MAX)];
    let mut done = 0;
    while done < slice.len() {
        let n = (slice.len() - done).min(buf.len());
        let part = &mut buf[..n];
        slice.subslice(done, n)?.copy_to(&mut *part);
        dst.write_all_volatile(&VolatileSlice::from(part))?;
        done += n;
    }
    Ok(())
}
