//! Every ioctl of the VM's descriptor refused in turn, for real, on the host's KVM: the
//! first, then the second, ... call `attach` makes on it (the capability checks, then one
//! `KVM_SET_USER_MEMORY_REGION` per region, and the deletions that undo them) fails with
//! `ENOMEM`, alone or with every call after it (a seccomp filter whose supervisor counts the
//! calls; memvisor-testkit's `refused_calls`). Each refusal must give a typed error (or
//! an attach that copes, for a refused capability check), no panic, and leave KVM as it was
//! (no slot of the space's numbers, no memory at its regions) wherever the undoing was not
//! refused too; the same attach must succeed once the refusal is lifted. Run in a child
//! process, as the filter cannot be removed. (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::os::fd::AsRawFd;

use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::RegionSpec;
use memvisor_testkit::refused_calls::{EACH_REFUSAL, Refusal, Refuser, in_child, under_sanitizer};
use support::{MIB, backed_space, kvm_or_skip, kvm_refuses_probe};
use vm_memory::GuestAddress;

const CHILD: &str = "MEMVISOR_KVM_REFUSED_EACH_IOCTL_CHILD";
/// The regions' bases: three slots.
const BASES: [u64; 3] = [0, 4 * MIB, 8 * MIB];
/// Far from every region: where a probe of a slot number goes.
const FAR: u64 = 512 * MIB;
const PROBE_SLOT: u32 = 500;

fn scenario(refuser: &Refuser) -> usize {
    let kvm = kvm_or_skip("each_refused_ioctl_of_attach_leaves_kvm_as_it_was").unwrap();
    let mut failures = Vec::new();
    let turns = refuser.each_call_in_turn(&EACH_REFUSAL, 16, libc::ENOMEM, |turn| {
        let vm = support::vm(&kvm);
        let space = backed_space(
            &vm,
            BASES.map(|base| RegionSpec::ram(GuestAddress(base), MIB)),
        );
        let fd = usize::try_from(vm.as_raw_fd()).unwrap();
        let (result, refused) = turn.refuse(fd..fd + 1, || {
            MemorySlots::attach(std::sync::Arc::clone(&vm), &space)
        });
        let what = format!("attach: ioctl {turn}");
        if refused.is_none() {
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
            return;
        }
        let slots = match result {
            // A refused capability check: the attach copes (no read-only slots, or KVM's
            // default slot count).
            Ok(slots) => Some(slots),
            Err(Error::SetMemoryRegion { source, .. }) if source.errno() == libc::ENOMEM => None,
            Err(e) => {
                failures.push(format!("{what}: got {e:?}"));
                None
            }
        };
        if slots.is_none() {
            // Nothing of the attach is left in KVM: no memory at the regions, no slot under
            // their numbers. (Where the undoing was refused too, the slots stay, as
            // documented: their regions are kept mapped.)
            let left: Vec<_> = BASES
                .iter()
                .enumerate()
                .filter(|&(i, &base)| {
                    kvm_refuses_probe(&vm, PROBE_SLOT, base)
                        || kvm_refuses_probe(&vm, u32::try_from(i).unwrap(), FAR)
                })
                .map(|(i, _)| i)
                .collect();
            if !left.is_empty() && turn.refusal == Refusal::Nth {
                failures.push(format!("{what}: slots {left:?} left in KVM"));
            }
            // Once lifted, the same attach succeeds where nothing was left.
            if left.is_empty()
                && let Err(e) = MemorySlots::attach(std::sync::Arc::clone(&vm), &space)
            {
                failures.push(format!("{what}: retry gave {e}"));
            }
        }
        drop(slots);
    });
    // Each call alone and each with every call after it, up to a run with none refused: an
    // attach that made no ioctl on the VM's descriptor, or more than the loop tried, is not
    // checked and must fail here.
    assert!(turns.calls > 0, "attach: no ioctl was refused");
    assert!(
        turns.reached_end,
        "attach: every run had a refusal, later ioctls untried"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    turns.refused
}

#[test]
fn each_refused_ioctl_of_attach_leaves_kvm_as_it_was() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        if kvm_or_skip("each_refused_ioctl_of_attach_leaves_kvm_as_it_was").is_none() {
            return;
        }
        in_child(
            "each_refused_ioctl_of_attach_leaves_kvm_as_it_was",
            CHILD,
            "refusals checked",
        );
        return;
    }
    let Some(refuser) = Refuser::install(&[libc::SYS_ioctl]) else {
        return;
    };
    let checked = scenario(&refuser);
    println!("{checked} refusals checked");
}
