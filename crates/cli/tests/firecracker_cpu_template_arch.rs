//! Firecracker's static CPU templates are its build's architecture's (`StaticCpuTemplate`):
//! `C3`, `T2`, `T2S`, `T2CL`, `T2A` on x86_64, `V1N1` on aarch64, `None` on both. A template
//! of the other architecture is an unknown variant to Firecracker, which refuses the file: the
//! conversion for that architecture (`--arch`) refuses it too, at `cpu_template`.

mod common;

use common::{binary, scratch};

fn plan(template: &str, arch: &str) -> std::process::Output {
    let path = scratch(&format!("fc-cpu-template-{arch}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "vmlinux"}}, "drives": [],
"machine-config": {{"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": {template}}}}}"#
        ),
    )
    .unwrap();
    binary(&[
        "plan",
        "--from",
        "firecracker",
        "--arch",
        arch,
        path.to_str().unwrap(),
    ])
}

#[test]
fn firecracker_cpu_template_of_the_other_architecture_is_refused() {
    let x86 = ["\"C3\"", "\"T2\"", "\"T2S\"", "\"T2CL\"", "\"T2A\""];
    let arm = ["\"V1N1\""];
    for (arch, taken, refused) in [
        ("x86_64", &x86[..], &arm[..]),
        ("aarch64", &arm[..], &x86[..]),
    ] {
        for t in taken.iter().chain(&["\"None\"", "null"]) {
            let out = plan(t, arch);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{arch} {t}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for t in refused {
            let out = plan(t, arch);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{arch} {t}: {err}");
            assert!(out.stdout.is_empty());
            assert!(
                err.starts_with("error: machine-config.cpu_template: "),
                "{arch} {t}: {err}"
            );
            assert!(err.contains(arch), "{arch} {t}: {err}");
            // Underlined where it is written.
            assert!(err.contains(":2:74\n"), "{arch} {t}: {err}");
        }
    }
}
