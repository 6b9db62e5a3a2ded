//! `BackingReport::total_bytes` answers for every report a caller can hold, including one whose
//! public fields it changed.

use memvisor_space::{AddressSpace, Layout, RegionSpec};
use vm_memory::GuestAddress;

#[test]
#[cfg_attr(miri, ignore = "Miri cannot map memory")]
fn total_bytes_of_sizes_past_u64_saturates() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (_space, mut report) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)]).unwrap();
    assert_eq!(report.total_bytes(), 0x1000);
    let mut big = report.regions[0].clone();
    big.size = u64::MAX;
    report.regions.push(big.clone());
    report.regions.push(big);
    assert_eq!(report.total_bytes(), u64::MAX);
}
