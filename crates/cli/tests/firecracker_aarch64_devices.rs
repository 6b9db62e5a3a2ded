//! Firecracker on aarch64 hands its 96 legacy interrupts (SPIs 32 to 127) out in attach order:
//! the virtio devices, then the serial port when the command line has `console=`, its RTC, and
//! its VMGenID and VMClock devices. So it boots at most 93 virtio devices, 92 with a serial
//! console; more are refused at the section of the first device past that, as on x86_64.

mod common;

use common::{binary, scratch};

fn plan(name: &str, drives: usize, boot_args: Option<&str>) -> std::process::Output {
    let drives: Vec<String> = (0..drives)
        .map(|i| format!(r#"{{"drive_id": "d{i}", "is_root_device": false, "path_on_host": "d"}}"#))
        .collect();
    let boot = match boot_args {
        Some(args) => format!(r#"{{"kernel_image_path": "vmlinux", "boot_args": "{args}"}}"#),
        None => r#"{"kernel_image_path": "vmlinux"}"#.to_owned(),
    };
    let path = scratch(name);
    std::fs::write(
        &path,
        format!(
            r#"{{"boot-source": {boot}, "drives": [{}]}}"#,
            drives.join(", ")
        ),
    )
    .unwrap();
    binary(&[
        "plan",
        "--from",
        "firecracker",
        "--arch",
        "aarch64",
        path.to_str().unwrap(),
    ])
}

#[test]
fn firecracker_aarch64_virtio_devices_past_its_interrupts_are_refused() {
    for (boot_args, most) in [
        (None, 93),
        (Some("reboot=k"), 93),
        (Some("console=ttyS0 reboot=k"), 92),
        (Some("reboot=k -- console=x"), 92),
    ] {
        let out = plan("fc-aarch64-most.json", most, boot_args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{boot_args:?} {most}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = plan("fc-aarch64-past.json", most + 1, boot_args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{boot_args:?} {}: {err}",
            most + 1
        );
        assert!(out.stdout.is_empty());
        assert!(err.contains(": drives: "), "{err}");
        assert!(err.contains(&format!("at most {most} on aarch64")), "{err}");
    }
}

/// Firecracker looks for `console=` in the whole command line when it adds the serial port,
/// after it has put the root drive's `root=PARTUUID=` on it: a `partuuid` with `console=` in
/// it takes an interrupt for the serial port as `boot_args` with it does, so 93 virtio devices
/// are refused then; a `partuuid` without it, or on a drive that is not the root drive, leaves
/// 93.
#[test]
fn firecracker_aarch64_root_partuuid_with_console_takes_the_serial_ports_interrupt() {
    let file = |root: bool, partuuid: &str| {
        let mut drives = vec![format!(
            r#"{{"drive_id": "r", "is_root_device": {root}, "path_on_host": "d", "partuuid": "{partuuid}"}}"#
        )];
        drives.extend((1..93).map(|i| {
            format!(r#"{{"drive_id": "d{i}", "is_root_device": false, "path_on_host": "d"}}"#)
        }));
        let path = scratch("fc-aarch64-partuuid.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "vmlinux"}}, "drives": [{}]}}"#,
                drives.join(", ")
            ),
        )
        .unwrap();
        binary(&[
            "plan",
            "--from",
            "firecracker",
            "--arch",
            "aarch64",
            path.to_str().unwrap(),
        ])
    };
    let out = file(true, "console=1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 92 on aarch64"), "{err}");
    for (root, partuuid) in [(true, "0eaa91a0-01"), (false, "console=1")] {
        let out = file(root, partuuid);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{root} {partuuid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
