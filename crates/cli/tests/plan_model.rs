//! Model-based property test of `plan`: random specs are planned, and every answer is compared
//! with a naive model — first-fit placement over a list of taken ranges for MMIO windows,
//! counting for interrupts, in-order filling for RAM — then the map's invariants are checked
//! (sorted, disjoint, each entry inside a window of its kind).

use memvisor_cli::plan::{Plan, plan};
use memvisor_cli::spec::{Source, parse};
use proptest::prelude::*;

const TYPES: [&str; 8] = [
    "virtio-net",
    "virtio-blk",
    "virtio-console",
    "virtio-rng",
    "virtio-balloon",
    "virtio-vsock",
    "virtio-fs",
    "virtio-pmem",
];

#[derive(Clone, Debug)]
struct Dev {
    ty: usize,
    mmio_shift: u32,
    dax_2m: u64,
}

#[derive(Clone, Debug)]
struct Vm {
    aarch64: bool,
    nodes_mib: Vec<u64>,
    serial: bool,
    devices: Vec<Dev>,
    hotplug: Option<(u32, u64)>,
}

fn vm() -> impl Strategy<Value = Vm> {
    let dev = (0..TYPES.len(), 12u32..=16, 0u64..4).prop_map(|(ty, mmio_shift, dax_2m)| Dev {
        ty,
        mmio_shift,
        dax_2m,
    });
    (
        any::<bool>(),
        prop::collection::vec(1u64..=2048, 1..4),
        any::<bool>(),
        prop::collection::vec(dev, 0..22),
        prop::option::of((1u32..6, 1u64..=1024)),
    )
        .prop_map(|(aarch64, nodes_mib, serial, devices, hotplug)| Vm {
            aarch64,
            nodes_mib,
            serial,
            devices,
            hotplug,
        })
}

fn toml(vm: &Vm) -> String {
    let mut t = format!(
        "arch = \"{}\"\n[memory]\n",
        if vm.aarch64 { "aarch64" } else { "x86_64" }
    );
    for n in &vm.nodes_mib {
        t += &format!("[[numa]]\nsize = \"{n}MiB\"\n");
    }
    if vm.serial {
        t += "[serial]\n";
    }
    if let Some((slots, mib)) = vm.hotplug {
        t += &format!("[hotplug]\nslots = {slots}\nslot_size = \"{mib}MiB\"\n");
    }
    for d in &vm.devices {
        t += &format!(
            "[[device]]\ntype = \"{}\"\nmmio_size = {}\n",
            TYPES[d.ty],
            1u64 << d.mmio_shift
        );
        let dax = match TYPES[d.ty] {
            "virtio-pmem" => d.dax_2m + 1,
            "virtio-fs" => d.dax_2m,
            _ => 0,
        };
        if dax > 0 {
            t += &format!("dax_size = \"{}MiB\"\n", dax * 2);
        }
    }
    t
}

/// First fit of `size` aligned to `align` in `[start, end]`, past every taken range.
fn first_fit(taken: &mut Vec<(u64, u64)>, start: u64, size: u64, align: u64) -> u64 {
    let mut addr = start.next_multiple_of(align);
    while let Some(&(_, e)) = taken.iter().find(|&&(s, e)| s < addr + size && addr <= e) {
        addr = (e + 1).next_multiple_of(align);
    }
    taken.push((addr, addr + size - 1));
    addr
}

fn check(vm: &Vm, p: &Plan) {
    // Windows of each kind from the plan; entries must sit inside one of their kind.
    let window_of = |start: u64, end: u64| {
        p.windows
            .iter()
            .find(|w| w.span.start <= start && end <= w.span.end)
            .map(|w| w.kind.as_str())
    };
    for pair in p.map.windows(2) {
        assert!(
            pair[0].span.end < pair[1].span.start,
            "{:?} / {:?}",
            pair[0],
            pair[1]
        );
    }
    for m in &p.map {
        let kind = window_of(m.span.start, m.span.end);
        if m.ty == "reserved" && kind != Some("reserved") {
            // A platform reservation outside the reserved windows (KVM's TSS on x86-64 in
            // the firmware window): reserved regions may sit anywhere below the limit.
            assert!(m.span.end <= p.address_limit, "{m:?}");
            continue;
        }
        assert_eq!(kind, Some(m.ty), "{m:?}");
    }

    // RAM: each node's entries add up to its size, filled in order from the lowest window.
    for (i, mib) in vm.nodes_mib.iter().enumerate() {
        let sum: u64 = p
            .map
            .iter()
            .filter(|m| m.ty == "RAM" && m.node == Some(u32::try_from(i).unwrap()))
            .map(|m| m.span.size)
            .sum();
        assert_eq!(sum, mib << 20);
    }
    let ram_start = p.map.iter().find(|m| m.ty == "RAM").unwrap().span.start;
    assert_eq!(ram_start, if vm.aarch64 { 1 << 30 } else { 0 });

    // Interrupts and MMIO windows: the model places the serial port, then devices in order.
    let (mut irq, device_window) = if vm.aarch64 {
        (32, 144u64 << 20)
    } else {
        (5, 0xc000_0000)
    };
    let mut taken = Vec::new();
    let mut devices = p.devices.iter();
    if vm.serial {
        let s = devices.next().unwrap();
        assert_eq!(s.ty, "serial");
        if vm.aarch64 {
            assert_eq!(s.irq, 32);
            irq += 1;
            let at = first_fit(&mut taken, device_window, 0x1000, 0x1000);
            assert_eq!(s.mmio.unwrap().start, at);
        } else {
            assert_eq!(s.irq, 4);
            assert_eq!(s.pio.unwrap().start, 0x3f8);
        }
    }
    for (d, model) in devices.zip(&vm.devices) {
        assert_eq!(d.ty, TYPES[model.ty]);
        assert_eq!(d.irq, irq);
        irq += 1;
        let size = 1u64 << model.mmio_shift;
        let at = first_fit(&mut taken, device_window, size, size);
        let mmio = d.mmio.unwrap();
        assert_eq!((mmio.start, mmio.size), (at, size), "{d:?}");
    }

    // Hotplug slots: contiguous from the window's start.
    let slots = vm.hotplug.map_or(0, |(n, _)| n as usize);
    assert_eq!(p.hotplug.len(), slots);
    if let Some((_, mib)) = vm.hotplug {
        let window = p.windows.iter().find(|w| w.kind == "hotplug").unwrap();
        for (i, s) in p.hotplug.iter().enumerate() {
            assert_eq!(s.span.size, mib << 20);
            assert_eq!(s.span.start, window.span.start + i as u64 * (mib << 20));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 200 }))]

    #[test]
    fn plan_matches_model(vm in vm()) {
        let text = toml(&vm);
        let src = Source { origin: "model.toml", text: &text };
        let spec = parse(src).unwrap();
        // x86-64 has 19 GSIs for devices; more must be refused, naming the first device left
        // without one.
        let max = if vm.aarch64 { 96 } else { 19 };
        let wanted = vm.devices.len() + usize::from(vm.serial && vm.aarch64);
        match plan(&spec, src) {
            Ok(p) => {
                prop_assert!(wanted <= max);
                check(&vm, &p);
            }
            Err(e) => {
                prop_assert!(wanted > max, "{e}\n{text}");
                prop_assert!(e.to_string().contains(".irq: no free"), "{e}");
            }
        }
    }
}
