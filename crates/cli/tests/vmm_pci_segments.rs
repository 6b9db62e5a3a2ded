//! Cloud Hypervisor's `--numa pci_segments` keeps the low 16 bits of each number, so a
//! number past 65535 is not the segment it names: it is refused as such (as a distance past
//! 255 is), not as a segment that does not exist.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome};

fn plan(options: &str) -> Outcome {
    Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        options,
    ])
}

fn node(segments: &str) -> String {
    format!(
        "--memory size=0 --memory-zone id=a,size=1G \
         --numa guest_numa_id=0,memory_zones=a,pci_segments={segments}"
    )
}

#[test]
fn pci_segment_past_65535_is_refused_as_cut() {
    for segments in ["[65536]", "65536", "[0,65537]", "[0-65536]"] {
        let (code, out, err) = plan(&node(segments));
        assert_eq!(code, 2, "{segments}: {out}{err}");
        assert!(err.contains("pci_segments: "), "{segments}: {err}");
        assert!(err.contains("more than 65535"), "{segments}: {err}");
        assert!(err.contains("low 16 bits"), "{segments}: {err}");
    }
}

#[test]
fn pci_segments_up_to_65535_keep_their_messages() {
    let (code, _, err) = plan(&node("[0]"));
    assert_eq!(code, 0, "{err}");
    for segments in ["[1]", "[65535]", "[0-65535]"] {
        let (code, out, err) = plan(&node(segments));
        assert_eq!(code, 2, "{segments}: {out}{err}");
        assert!(err.contains("there is no PCI segment"), "{segments}: {err}");
    }
}
